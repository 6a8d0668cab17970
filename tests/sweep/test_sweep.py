"""``loraclf sweep`` on a tiny BERT: the space and its one-line errors, the budget before training, pruning,
resuming, the leaderboard and the report, a killed worker's trial, and two workers on one PostgreSQL study.

The sweeps run through the command line (``loraclf.cli.main`` in this process). To make the trials of the main
sweep deterministic, the test writes the study first with Optuna itself: one RUNNING trial of a dead process (as a
``kill -9`` leaves it) and two enqueued points, one over the budget and one under it; the CLI then resumes it.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import cli_env, run_cli, write_text_csv

# Tiny BERT (2 layers, hidden 32), LoRA on query and value: 256·r adapter parameters plus a 132-parameter linear
# head, so r ≤ 3 fits the budget of 1,000 (r=2: 644, r=3: 900, r=4: 1,156, r=8: 2,180). fp32 keeps the end-of-
# training evaluation in PyTorch (no int8 graph to export per trial).
RECIPE = """\
model: {{name: {bert}, head: linear}}
adapter: {{method: lora, targets: [query, value], r: 2}}
train: {{epochs: 2, batch_size: 8, lr: 2.0e-2, threads: 1, precision: fp32, progress: false}}
budget: 1000
"""
SPACE = """\
adapter.r: {int: [1, 8]}
train.lr: {float: [1e-3, 3e-2], log: true}
"""
REQUIRED = ["trial", "state", "method", "adapter.r", "train.lr", "trainable", "accuracy", "macro_f1"]
REQUIRED += ["train_seconds", "run_folder"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sweep-data")
    (d / "recipe.yaml").write_text(RECIPE.format(bert=tiny_bert_dir))
    (d / "space.yaml").write_text(SPACE)
    return {
        "dir": d,
        "recipe": d / "recipe.yaml",
        "space": d / "space.yaml",
        "train": write_text_csv(d / "train.csv", 80, seed=0),
        "eval": write_text_csv(d / "eval.csv", 40, seed=5),
    }


def sweep_args(files, out: Path, *extra, space: Path | None = None) -> list:
    return [
        "sweep", "--config", files["recipe"], "--space", space or files["space"], "--train", files["train"],
        "--out", out, "--quiet", *extra,
    ]  # fmt: skip


def one_line_error(res, *needles: str) -> str:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error: "), res
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def read_board(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- the space -----------------------------------------------------------------------------------------------------


def test_space_parses_the_issue_example(tmp_path):
    import optuna

    from loraclf.config import Recipe
    from loraclf.sweep.space import parse_space

    path = tmp_path / "space.yaml"
    path.write_text(
        "adapter.r: {int: [2, 64], log: true}\n"
        "adapter.targets: {choice: [[query, value], [query, key, value, dense]]}\n"
        "train.lr: {float: [1e-4, 3e-3], log: true}\n"
        "train.scheduler: {choice: [linear, cosine]}\n"
        "train.warmup_ratio: {float: [0.0, 0.2], step: 0.05}\n"
        'adapter.layer_ranks: {choice: [null, "8*2**(i//4)"]}\n'
    )
    space = {d.key: d for d in parse_space(path, Recipe())}
    r, targets, lr = space["adapter.r"], space["adapter.targets"], space["train.lr"]
    assert (r.kind, r.low, r.high, r.log) == ("int", 2, 64, True)
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 3e-3, True)  # "1e-4" is a YAML string
    assert space["train.warmup_ratio"].step == 0.05
    assert list(targets.values) == ["[query, value]", "[query, key, value, dense]"]
    assert list(space["adapter.layer_ranks"].values) == ["null", "8*2**(i//4)"]
    # A list choice is stored in Optuna under its label and comes back as the list.
    trial = optuna.trial.FixedTrial(
        {"adapter.targets": "[query, key, value, dense]", "adapter.layer_ranks": None, "adapter.r": 8}
    )
    assert targets.suggest(trial) == ["query", "key", "value", "dense"]
    assert space["adapter.layer_ranks"].suggest(trial) is None
    assert r.suggest(trial) == 8


def test_the_benchmark_space_fits_the_minilm_recipe():
    """benchmarks/sweep-space.yaml parses against the recipe it is run with, and part of it fits the budget."""
    from loraclf.config import apply_overrides, load_recipe
    from loraclf.sweep.space import Planner, check_some_point_fits, parse_space

    repo = Path(__file__).resolve().parents[2]
    base = apply_overrides(load_recipe(repo / "recipes" / "minilm-cpu.yaml"), ["adapter.alpha=null"])
    space = parse_space(repo / "benchmarks" / "sweep-space.yaml", base)
    assert {d.key for d in space} >= {"adapter.targets", "adapter.r", "train.lr"}
    check_some_point_fits(base, space, Planner(4), "sweep-space.yaml")  # raises when nothing fits


SPACE_ERRORS = {
    "unknown key": ("adapter.rank: {int: [1, 8]}", ["adapter.rank", 'did you mean "adapter.r"']),
    "short key": ("lr: {float: [1e-4, 1e-3]}", ['did you mean "train.lr"']),
    "misspelled section": ("trian.scheduler: {choice: [linear]}", ['did you mean "train.scheduler"']),
    "empty": ("", ["the space is empty"]),
    "not a mapping": ("- train.lr\n", ["must map recipe keys to distributions"]),
    "no distribution": ("train.lr: 0.001", ["write a distribution"]),
    "unknown kind": ("adapter.r: {integer: [1, 2]}", ['did you mean "int"']),
    "two kinds": ("adapter.r: {int: [1, 2], choice: [1, 2]}", ["exactly one of int, float or choice"]),
    "one bound": ("adapter.r: {int: [4]}", ["int needs [low, high]"]),
    "text bound": ("train.lr: {float: [small, 1e-3]}", ["float needs [low, high]"]),
    "low above high": ("adapter.r: {int: [8, 2]}", ["low 8 is above high 2"]),
    "log from zero": ("train.lr: {float: [0, 1e-3], log: true}", ["log needs a positive low bound"]),
    "log and step": ("train.lr: {float: [1e-4, 1e-3], log: true, step: 1e-4}", ["log and step"]),
    "unknown option": ("train.lr: {float: [1e-4, 1e-3], logg: true}", ["unknown option 'logg'", '"log"']),
    "int with fraction": ("adapter.r: {int: [1, 2.5]}", ["whole numbers"]),
    "float for int key": ("adapter.r: {float: [1, 8]}", ["adapter.r holds whole numbers"]),
    "empty choice": ("train.scheduler: {choice: []}", ["non-empty list"]),
    "repeated choice": ("train.scheduler: {choice: [linear, linear]}", ["listed twice"]),
    "invalid value": ("train.scheduler: {choice: [linear, cosin]}", ["cosin", 'did you mean "cosine"']),
    "out of range": ("adapter.dropout: {float: [0, 1.5]}", ["adapter.dropout", "1.5"]),
    "reserved key": ("train.metric: {choice: [accuracy, loss]}", ["--metric"]),
}


@pytest.mark.parametrize("name", list(SPACE_ERRORS))
def test_space_mistakes_are_one_line_errors(files, tmp_path, name):
    text, needles = SPACE_ERRORS[name]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    res = run_cli(*sweep_args(files, tmp_path / "sweep", "--trials", 1, space=space))
    line = one_line_error(res, *needles)
    assert str(space) in line  # names the file
    assert not (tmp_path / "sweep").exists()  # nothing written


def test_space_that_can_never_fit_the_budget(files, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("adapter.r: {int: [4, 8]}\ntrain.lr: {float: [1e-3, 1e-2]}\n")
    res = run_cli(*sweep_args(files, tmp_path / "sweep", "--trials", 1, space=space))
    one_line_error(res, "no point of the space fits the budget of 1,000", "adapter.r=4", "1,156")
    assert not (tmp_path / "sweep").exists()
    # A larger budget admits the same space.
    res = run_cli(*sweep_args(files, tmp_path / "sweep", "--trials", 0, "--budget", 2000, space=space))
    assert res.returncode == 0, res


@pytest.mark.parametrize(
    "url, needle",
    [
        ("postgresql://loraclf:s3cret@127.0.0.1:1/nothing", "127.0.0.1"),
        ("sqlite:////nonexistent-folder/sub/study.db", "unable to open database file"),
        ("nosuchdb://host/db", "nosuchdb"),
    ],
)
def test_unreachable_storage_is_a_one_line_error(files, tmp_path, url, needle):
    res = run_cli(*sweep_args(files, tmp_path / "sweep", "--trials", 1, "--storage", url))
    line = one_line_error(res, "--storage: cannot open", needle)
    assert "s3cret" not in line
    assert not (tmp_path / "sweep").exists()


def test_flag_mistakes(files, tmp_path):
    out = tmp_path / "sweep"
    one_line_error(run_cli(*sweep_args(files, out, "--trials", -1)), "--trials")
    one_line_error(run_cli(*sweep_args(files, out, "--trials", 1, "--seeds", "1,2")), "--top K")
    one_line_error(run_cli(*sweep_args(files, out, "--trials", 1, "--metric", "f1")), "--metric")
    one_line_error(run_cli("sweep", "--config", files["recipe"], "--out", out, "--trials", 1), "--space")
    assert not out.exists()


def test_the_sweep_modules_import_neither_optuna_nor_torch():
    """Argument and space errors must come fast: the heavy libraries load only once a sweep runs."""
    modules = (
        "loraclf.sweep.run, loraclf.cli.sweep, loraclf.sweep.space, loraclf.sweep.study, loraclf.sweep.report"
    )
    code = f"import sys, {modules}; print(sorted({{'optuna', 'torch'}} & set(sys.modules)))"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# --- two workers writing one leaderboard (issue 28, finding 15) ----------------------------------------------------

BOARD_COLUMNS = ["trial", "state", "note"]
# Run in fresh interpreters: each is a sweep worker rewriting DIR/leaderboard.csv after its trials.
BOARD_WRITER = """
import sys, time
from pathlib import Path
from loraclf.sweep.run import write_leaderboard
path, me, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(200):
    rows = [{"trial": n, "state": "complete", "note": f"worker {me} " + "x" * 200} for n in range(100)]
    write_leaderboard(rows, path, ["trial", "state", "note"])
"""


def check_board(path: Path) -> None:
    rows = read_board(path)
    assert [int(r["trial"]) for r in rows] == list(range(100)), "a torn or mixed leaderboard"
    assert len({r["note"] for r in rows}) == 1  # every row from one writer's table
    assert [p.name for p in path.parent.iterdir()] == [path.name], "a temporary file was left behind"


def test_two_workers_writing_one_leaderboard_never_raise_or_tear_threads(tmp_path):
    import threading

    from loraclf.sweep.run import write_leaderboard

    path, errors, barrier = tmp_path / "leaderboard.csv", [], threading.Barrier(4)

    def worker(me: int) -> None:
        barrier.wait()
        rows = [{"trial": n, "state": "complete", "note": f"worker {me} " + "x" * 200} for n in range(100)]
        try:
            for _ in range(200):
                write_leaderboard(rows, path, BOARD_COLUMNS)
        except Exception as exc:  # any exception is the failure this test looks for
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    check_board(path)


def test_two_workers_writing_one_leaderboard_never_raise_or_tear_processes(tmp_path):
    import loraclf

    out = tmp_path / "sweep"
    out.mkdir()
    go = tmp_path / "go"
    env = cli_env(PYTHONPATH=str(Path(loraclf.__file__).parents[1]))  # the loraclf this test imported
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BOARD_WRITER, str(out / "leaderboard.csv"), str(k), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(3)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    check_board(out / "leaderboard.csv")


# --- a sweep, resumed -----------------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, files) -> dict:
    """Trial 0: RUNNING in a dead process; 1: over the budget; 2: fits; 3: TPE's choice; then a resume adds 4 and
    retrains the best trial with two seeds."""
    import optuna

    out = tmp_path_factory.mktemp("sweeps") / "main"
    out.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{out / 'study.db'}", study_name="main", direction="maximize", load_if_exists=False
    )
    lost = study.ask()
    lost.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    study.enqueue_trial({"adapter.r": 8, "train.lr": 0.02})
    study.enqueue_trial({"adapter.r": 2, "train.lr": 0.02})
    first = run_cli(*sweep_args(files, out, "--trials", 3, "--seed", 3))
    second = run_cli(
        *sweep_args(
            files, out, "--trials", 1, "--seed", 3, "--top", 1, "--seeds", "1,2", "--test", files["eval"]
        )
    )
    return {"out": out, "first": first, "second": second, "url": f"sqlite:///{out / 'study.db'}"}


def load_study(sweep):
    import optuna

    return optuna.load_study(study_name="main", storage=sweep["url"])


def test_sweep_runs_and_resume_adds_trials(sweep):
    assert sweep["first"].returncode == 0, sweep["first"]
    assert sweep["second"].returncode == 0, sweep["second"]
    assert "has 3 trials; adding 3" in sweep["first"].stderr  # the lost one and the two enqueued
    assert "has 4 trials; adding 1" in sweep["second"].stderr
    trials = load_study(sweep).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]


def test_trial_of_a_dead_worker_is_marked_failed(sweep):
    from optuna.trial import TrialState

    assert "marked 1 trial(s) of stopped workers" in sweep["first"].stderr
    assert load_study(sweep).trials[0].state == TrialState.FAIL
    row = next(r for r in read_board(sweep["out"] / "leaderboard.csv") if r["trial"] == "0")
    assert row["state"] == "fail" and "worker stopped" in row["note"]


def test_over_budget_point_is_recorded_and_never_trained(sweep):
    from optuna.trial import TrialState

    t = load_study(sweep).trials[1]
    assert t.params == {"adapter.r": 8, "train.lr": 0.02}
    assert t.state == TrialState.PRUNED and t.user_attrs["over_budget"] is True
    assert t.user_attrs["trainable"] == 2180 and not t.intermediate_values
    assert not (sweep["out"] / "trials" / "trial-0001").exists()
    row = next(r for r in read_board(sweep["out"] / "leaderboard.csv") if r["trial"] == "1")
    assert row["state"] == "over_budget" and row["trainable"] == "2180" and row["run_folder"] == ""
    # Every trial that has a run folder fits; none over the budget has one.
    for t in load_study(sweep).trials:
        folder = sweep["out"] / "trials" / f"trial-{t.number:04d}"
        assert folder.exists() == (
            t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get("over_budget")
        )
        if folder.exists():
            assert t.user_attrs["trainable"] <= 1000


def test_a_trial_is_an_ordinary_run_reporting_its_evaluations(sweep):
    from optuna.trial import TrialState

    t = load_study(sweep).trials[2]
    assert t.state == TrialState.COMPLETE and t.params["adapter.r"] == 2
    run = sweep["out"] / "trials" / "trial-0002"
    m = json.loads((run / "metrics.json").read_text())
    assert t.value == m["accuracy"] and t.user_attrs["macro_f1"] == m["macro_f1"]
    assert (run / "report.html").is_file() and (run / "model.safetensors").is_file()
    # 72 training rows, batches of 8, 2 epochs: 18 steps, evaluated every 5 (4 evaluations), reported as steps 1-4.
    assert sorted(t.intermediate_values) == [1, 2, 3, 4]
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["split"] == "eval"] == [5, 10, 15, 18]


def test_leaderboard_columns_and_order(sweep):
    rows = read_board(sweep["out"] / "leaderboard.csv")
    assert set(REQUIRED) <= set(rows[0])
    assert [c for c in rows[0] if c in REQUIRED] == REQUIRED  # in this order
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3, 4]
    scored = [r for r in rows if r["state"] == "complete"]
    assert scored and rows[: len(scored)] == scored  # finished trials first
    accuracies = [float(r["accuracy"]) for r in scored]
    assert accuracies == sorted(accuracies, reverse=True)  # best first
    unscored = [int(r["trial"]) for r in rows if r["state"] in ("fail", "over_budget")]
    assert unscored == sorted(unscored)
    printed = sweep["second"].stdout
    assert "trial" in printed and "adapter.r" in printed and "accuracy" in printed
    assert printed.index(f"\n{int(rows[0]['trial']):>5}  ") < printed.index(
        f"\n{int(rows[-1]['trial']):>5}  "
    )


def test_top_k_retrains_over_seeds(sweep):
    top = sweep["out"] / "top"
    best = read_board(sweep["out"] / "leaderboard.csv")[0]
    name = f"trial-{int(best['trial']):04d}"
    assert (top / f"{name}.yaml").is_file()
    assert (top / name / "seed-1" / "metrics.json").is_file() and (
        top / name / "seed-2" / "metrics.json"
    ).is_file()
    (row,) = read_board(top / "leaderboard.csv")
    assert row["name"] == name and "val_accuracy_std" in row and "test_accuracy_std" in row
    assert "mean ± standard deviation over seeds 1, 2" in sweep["second"].stdout


def test_report_has_its_figures_and_links(sweep):
    page = (sweep["out"] / "report.html").read_text()
    for heading in ("Summary", "Leaderboard", "Optimisation history", "Intermediate values", "Parameter importances",
                    "Slice plot", "Parallel coordinates", "Best trials retrained over seeds"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count('<img src="data:image/png;base64,') == 5
    assert {p.name for p in (sweep["out"] / "figures").iterdir()} == {
        f"{n}.png"
        for n in (
            "optimization_history",
            "intermediate_values",
            "param_importances",
            "slice",
            "parallel_coordinate",
        )
    }
    assert 'href="trials/trial-0002/report.html"' in page
    assert 'href="trials/trial-0001/' not in page  # over budget: no run, no link


def test_another_study_in_the_same_folder_is_refused(sweep, files):
    res = run_cli(*sweep_args(files, sweep["out"], "--trials", 1, "--study", "other"))
    one_line_error(res, "holds study 'main'", "--study main")


# --- a bad point fails its trial, not the sweep (issue 28, finding 13) ----------------------------------------------


def test_a_point_out_of_memory_or_beyond_the_position_limit_fails_only_its_trial(
    files, tmp_path, monkeypatch
):
    """Trial 0 fits; trial 1 runs out of memory at its batch size; trial 2 asks for more tokens than the tiny
    BERT's 128 positions. Both failures are recorded with their reason and the sweep finishes all three."""
    import contextlib

    import optuna
    import torch

    from loraclf.training import steps

    real = steps.memory_hint

    @contextlib.contextmanager
    def tight_memory(
        p, shape, device
    ):  # the allocator fails for batches of 16: the real hint turns it into a line
        with real(p, shape, device):
            if p.recipe.train.batch_size == 16:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
            yield

    monkeypatch.setattr(steps, "memory_hint", tight_memory)
    space = tmp_path / "space.yaml"
    space.write_text("train.batch_size: {choice: [8, 16]}\ndata.max_length: {choice: [32, 4096]}\n")
    out = tmp_path / "bad-points"
    out.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{out / 'study.db'}", study_name="bad-points", direction="maximize"
    )
    for point in ((8, 32), (16, 32), (8, 4096)):
        study.enqueue_trial({"train.batch_size": point[0], "data.max_length": point[1]})
    res = run_cli(*sweep_args(files, out, "--trials", 3, "train.epochs=1", space=space))
    assert res.returncode == 0, res
    board = {int(r["trial"]): r for r in read_board(out / "leaderboard.csv")}
    assert [board[n]["state"] for n in range(3)] == ["complete", "fail", "fail"]
    assert "out of cpu memory on a batch of" in board[1]["note"] and "train.batch_size=16" in board[1]["note"]
    assert "data.max_length=4096 is longer than" in board[2]["note"]
    assert "Traceback" not in res.stderr


# --- pruning ---------------------------------------------------------------------------------------------------------


def test_pruned_trials_stop_early_and_keep_their_metrics(files, tmp_path, capsys):
    """A threshold no accuracy can reach prunes every trial at its first evaluation."""
    import optuna

    from loraclf.cli.main import build_parser
    from loraclf.sweep.run import run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {float: [1e-3, 3e-2], log: true}\n")
    out = tmp_path / "sweep"
    args = build_parser().parse_args([str(a) for a in sweep_args(files, out, "--trials", 2, space=space)])
    assert run_sweep(args, pruner=optuna.pruners.ThresholdPruner(lower=2.0)) == 0
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for t in study.trials:
        assert list(t.intermediate_values) == [1] and not t.user_attrs.get("over_budget")
        m = json.loads((out / "trials" / f"trial-{t.number:04d}" / "metrics.json").read_text())
        assert m["steps"] == 5 < 18  # stopped at the first of four evaluations
        assert t.user_attrs["accuracy"] == m["accuracy"] and t.user_attrs["steps"] == 5
    rows = read_board(out / "leaderboard.csv")
    assert [r["state"] for r in rows] == ["pruned", "pruned"]
    assert all(r["accuracy"] != "" and "pruned at evaluation 1 of 4" in r["note"] for r in rows)
    assert "pruned" in capsys.readouterr().out


# --- PostgreSQL: two workers, one study --------------------------------------------------------------------------------


def postgres_url() -> str:
    url = os.environ.get("LORACLF_TEST_POSTGRES")
    if not url:
        msg = 'LORACLF_TEST_POSTGRES is not set (start a server: eval "$(bash scripts/postgres-test-server.sh start)")'
        if os.environ.get("CI"):
            pytest.fail(msg + "; under CI, .ci/run must start it")
        pytest.skip(msg)
    return url


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(files, tmp_path):
    import optuna

    from loraclf.sweep.study import with_driver

    url = postgres_url()
    study = f"test-{uuid.uuid4().hex[:12]}"
    outs = [tmp_path / "worker-a", tmp_path / "worker-b"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "loraclf", *map(str, sweep_args(files, out, "--trials", 2, "--storage", url, "--study", study))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        )
        for out in outs
    ]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    try:
        trials = optuna.load_study(study_name=study, storage=with_driver(url)).trials
        numbers = [t.number for t in trials]
        assert sorted(numbers) == [0, 1, 2, 3]  # the counts add up: 2 + 2, numbered once each
        workers = [t.user_attrs["worker"] for t in trials]
        assert len(set(workers)) == 2 and all(workers.count(w) == 2 for w in workers)
        # No trial number ran twice: every trained trial has exactly one run folder, in its own worker's DIR.
        folders = [f.name for out in outs if (out / "trials").is_dir() for f in (out / "trials").iterdir()]
        assert len(folders) == len(set(folders))
        trained = {f"trial-{t.number:04d}" for t in trials if not t.user_attrs.get("over_budget")}
        assert set(folders) == trained
        # A worker's leaderboard shows the study as it was when it finished; --trials 0 brings it up to date.
        again = run_cli(*sweep_args(files, outs[0], "--trials", 0, "--storage", url, "--study", study))
        assert again.returncode == 0, again
        assert sorted(int(r["trial"]) for r in read_board(outs[0] / "leaderboard.csv")) == [0, 1, 2, 3]
    finally:
        optuna.delete_study(study_name=study, storage=with_driver(url))
