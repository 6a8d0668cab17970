"""Two gloo processes on the CPU (torchrun) train the run one process trains, and survive kill -9.

Dropout is off and the arithmetic fp32, so the only difference between one process and two is the order of
floating-point sums (each rank sums its share, gloo sums the ranks): adapters agree within ``TOL`` (measured
~1e-7 after 8 steps), evaluation metrics to ~1e-8 and predicted labels exactly. The data are chosen to hit the
awkward cases: 75 training rows in batches of 8 (the last batch has 3 rows, split 2/1 between ranks),
``grad_accum=3`` (the epoch's last optimizer step has one batch, not three) and 41 evaluation rows (an odd count:
rank 0 scores 21, rank 1 scores 20). ``predict`` and ``evaluate`` shard their rows the same way (23 rows to
predict). Each launch costs an interpreter start-up per rank, so there are five (two through torchrun, the resume,
predict and evaluate through ``--nproc 2``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from conftest import RUN_FILES, cli_env, make_rows, run_cli, run_cli_subprocess, write_text_csv
from loraclf.cli.launch import strip_nproc
from loraclf.training.distributed import Dist

TOL = 1e-5  # largest absolute difference allowed between adapter weights of the 1- and 2-process runs
SAME = [
    "--quiet", "train.batch_size=8", "train.grad_accum=3", "train.lr=2e-2", "model.head=linear",
    "model.head_dropout=0", "model.dropout=0", "adapter.dropout=0", "train.threads=1", "train.precision=fp32",
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ddp-data")
    rows = make_rows(23, seed=9)
    pd.DataFrame({"text": [f"{r[1]} {r[2]}" for r in rows]}).to_csv(d / "predict.csv", index=False)
    return {
        "bert": tiny_bert_dir,
        "train": write_text_csv(d / "train.csv", 75, seed=0),
        "eval": write_text_csv(d / "eval.csv", 41, seed=5),
        "predict": d / "predict.csv",
    }


def _args(files, out: Path, *extra) -> list[str]:
    return [
        "train", "--model", str(files["bert"]), "--train", str(files["train"]), "--eval", str(files["eval"]),
        "--out", str(out), *SAME, *extra,
    ]  # fmt: skip


def _torchrun(args: list[str]):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return [*cmd, "-m", "loraclf", *args], cli_env(OMP_NUM_THREADS="1")


def _kill_job(pid: int) -> None:
    """SIGKILL a launcher and its workers at once (torchrun starts each worker in a session of its own)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    job, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in job} - job
        job |= more
        grew = bool(more)
    for p in job:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _weights_differ(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


def _evals(run: Path) -> list[tuple]:
    lines = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [(h["step"], h["accuracy"], h["macro_f1"], h["loss"]) for h in lines if h["split"] == "eval"]


def _labels(run: Path, files, tmp_path: Path) -> list[str]:
    out = tmp_path / f"{run.name}.csv"
    res = run_cli(
        "predict", run, "--input", files["predict"], "--output", out, "--precision", "fp32", "--quiet"
    )
    assert res.returncode == 0, res
    return pd.read_csv(out)["Label"].tolist()


def test_two_processes_train_what_one_trains(files, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*_args(files, one, "--epochs", "2")).returncode == 0
    cmd, env = _torchrun(_args(files, two, "--epochs", "2"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert {p.name for p in two.iterdir()} == RUN_FILES  # one run folder, written by rank 0 alone
    assert res.stdout.count("run folder:") == 1  # one report, not one per rank
    header = re.compile(r"^training [\d,]+ of [\d,]+ parameters", re.M)
    assert len(header.findall(res.stderr)) == 1  # one header, rank 0's, not one per rank
    assert _weights_differ(one, two) < TOL
    a, b = _evals(one), _evals(two)
    # Evaluation with 41 rows over 2 ranks: a duplicated or dropped row would change accuracy by 1/41.
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert np.allclose([x[3] for x in a], [x[3] for x in b], atol=1e-6)
    m = json.loads((two / "metrics.json").read_text())
    assert sum(map(sum, m["confusion_matrix"])) == 41
    assert json.loads((two / "run.json").read_text())["environment"]["world_size"] == 2
    assert _labels(one, files, tmp_path) == _labels(two, files, tmp_path)
    # The end-of-training evaluation of the best weights is sharded too (rank 0: 21 rows, rank 1: 20).
    m1 = json.loads((one / "metrics.json").read_text())
    assert (m["accuracy"], m["confusion_matrix"]) == (m1["accuracy"], m1["confusion_matrix"])
    assert abs(m["loss"] - m1["loss"]) < 1e-6


def _scores(cmd: str, run: Path, files, out: Path | None, *extra):
    """(row ids, class probabilities) of `loraclf predict`, or the metrics of `loraclf evaluate --json`."""
    if cmd == "predict":
        res = run_cli(
            "predict", run, "--input", files["predict"], "--output", out, "--probabilities", "--quiet", *extra
        )
        assert res.returncode == 0, res.stderr[-3000:]
        table = pd.read_csv(out)
        return table["ID"].tolist(), table.filter(like="prob_").to_numpy()
    # In a fresh interpreter: --nproc's workers print to the real stdout, which run_cli does not capture.
    res = run_cli_subprocess("evaluate", run, "--data", files["eval"], "--json", "--quiet", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_predict_and_evaluate_shard_rows_over_two_processes(files, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*_args(files, run, "--epochs", "1")).returncode == 0
    # fp32: the two answers differ only in the order of sums, so probabilities agree to ~1e-7, row for row
    # (23 rows to predict: rank 0 scores 12, rank 1 scores 11; a duplicated or dropped row shifts the table).
    ids1, p1 = _scores("predict", run, files, tmp_path / "p1.csv", "--precision", "fp32")
    ids2, p2 = _scores("predict", run, files, tmp_path / "p2.csv", "--precision", "fp32", "--nproc", "2")
    assert ids1 == ids2 and p1.shape == p2.shape and len(p1) == 23
    assert np.abs(p1 - p2).max() < 1e-5
    # int8 (the CPU default): rank 0 exports the ONNX graph before rank 1 opens it; ONNX Runtime quantises each
    # batch's activations with that batch's own scale, so sharded batches move probabilities a little.
    # Two processes first, so that they, not the one-process command, export the graph (rank 0, then rank 1).
    e2 = _scores("evaluate", run, files, None, "--nproc", "2")
    e1 = _scores("evaluate", run, files, None)
    assert sum(map(sum, e2["confusion_matrix"])) == 41
    assert abs(e1["loss"] - e2["loss"]) < 0.02 and abs(e1["accuracy"] - e2["accuracy"]) <= 2 / 41


def test_kill_9_of_a_two_process_job_then_resume(files, tmp_path):
    # adapter.layers=1: layer 0 is frozen, so each rank caches its own rows (and rebuilds them on resume).
    extra = [
        "--epochs",
        "1",
        "train.max_steps=40",
        "train.grad_accum=1",
        "--save-every",
        "2",
        "adapter.layers=1",
    ]
    reference, run = tmp_path / "reference", tmp_path / "interrupted"
    assert run_cli(*_args(files, reference, *extra)).returncode == 0
    cmd, env = _torchrun(_args(files, run, *extra))
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ckpts = list((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
            if any(int(c.name.split("-")[1]) >= 10 for c in ckpts):
                _kill_job(proc.pid)  # the launcher and both ranks at once
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_job(proc.pid)
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (run / "metrics.json").exists()

    # One process cannot continue two ranks' random streams: refused in one line.
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 2, res
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("loraclf: error:")]
    assert len(errors) == 1 and "written by 2 process" in errors[0], res.stderr

    # Resumed through `loraclf train --nproc 2`, which starts the same two-rank job without torchrun's command.
    cmd = [sys.executable, "-m", "loraclf", "train", "--resume", str(run), "--quiet", "--nproc", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(OMP_NUM_THREADS="1"), timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stderr.count("resuming from step ") == 1
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert _weights_differ(reference, run) < TOL
    assert [x[:3] for x in _evals(reference)] == [x[:3] for x in _evals(run)]


@pytest.mark.parametrize("owned", [False, True])
def test_shares_cover_every_row_once(owned):
    batches = [np.array([5, 2, 9]), np.array([4]), np.arange(10, 18)]
    for batch in batches:
        got, counted = [], 0
        for rank in range(2):
            rows, n = Dist(rank, 2, rank, owned_rows=owned).share(batch)
            assert len(rows) >= 1  # every rank runs each batch, so DDP's all-reduce lines up
            if n:
                got.extend(rows.tolist())
            counted += n
        assert sorted(got) == sorted(batch.tolist()) and counted == len(batch)


def test_nproc_is_stripped_from_the_relaunched_command():
    assert strip_nproc(["train", "--nproc", "2", "--out", "x", "--nproc=3"]) == ["train", "--out", "x"]


def test_nproc_below_one_is_a_user_error(tmp_path):
    res = run_cli("train", "--nproc", "0", "--train", "x.csv", "--out", tmp_path / "r")
    assert res.returncode == 2 and "--nproc 0" in res.stderr


def _failing_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks: rank 1 fails inside map_rows, then rank 0 fails inside main_first."""
    from datetime import timedelta

    import torch.distributed as tdist

    from loraclf.utils.errors import UserError

    # A short timeout: if a rank were left waiting for the other, this fails the test instead of hanging it.
    tdist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    dist, said = Dist(rank, 2, rank), []

    def score(rows):
        if rank == 1:
            raise ValueError("rank 1's own failure")
        return np.ones((len(rows), 2))

    for step in ("map_rows", "main_first"):
        try:
            if step == "map_rows":
                dist.map_rows(5, 2, score, torch.device("cpu"))
            else:
                with dist.main_first():
                    if rank == 0:
                        raise ValueError("rank 0's own failure")
        except (UserError, ValueError) as exc:
            said.append(f"{step}: {type(exc).__name__}: {exc}")
    Path(out).write_text("\n".join(said))
    tdist.destroy_process_group()


def test_a_failing_rank_stops_the_other_instead_of_leaving_it_waiting(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_failing_rank, args=(r, str(tmp_path / "store"), str(tmp_path / f"rank{r}.txt")))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    rank0 = (tmp_path / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "rank1.txt").read_text().splitlines()
    assert rank0 == [
        "map_rows: UserError: rank 1 failed while scoring its rows; see its error above",
        "main_first: ValueError: rank 0's own failure",
    ]
    assert rank1 == [
        "map_rows: ValueError: rank 1's own failure",
        "main_first: UserError: rank 0 failed while preparing the model for every rank; see its error above",
    ]


def test_each_rank_draws_its_own_dropout_masks_deterministically():
    from loraclf.training.session import seed_rank

    def masks(rank: int, world: int) -> torch.Tensor:
        torch.manual_seed(42)  # every rank builds its model from the seed
        seed_rank(42, Dist(rank, world, rank))
        return torch.nn.functional.dropout(torch.ones(256), 0.5)

    a, b = masks(0, 2), masks(1, 2)
    assert not torch.equal(a, b)  # rank 1's j-th row no longer shares rank 0's mask
    assert torch.equal(a, masks(0, 2)) and torch.equal(b, masks(1, 2))  # and a rerun draws them again
    assert torch.equal(
        masks(0, 1), (torch.manual_seed(42), torch.nn.functional.dropout(torch.ones(256), 0.5))[1]
    )


# A rank started the way srun or mpirun start one (the launcher's variables, no torchrun to stop its siblings):
# rank 1 fails in the given phase, then lingers in its teardown (as a hung NCCL shutdown can).
_RANK = r"""
import os, sys, time
rank, phase = int(os.environ["RANK"]), os.environ["LORACLF_TEST_PHASE"]
if rank == 1:
    import loraclf.inference.run as inference_run
    from loraclf.training import distributed, frozen, loop, steps
    from loraclf.utils.errors import UserError

    def fail(*args, **kwargs):
        with open(os.environ["LORACLF_TEST_FAILED"], "w") as fh:
            fh.write(str(time.time()))
        raise UserError(f"injected failure ({phase})")

    if phase == "build":
        loop.build_model = fail
    elif phase == "frozen-cache":
        frozen.build = fail
    elif phase == "step":
        real, calls = steps.accumulate, [0]
        def accumulate(*args, **kwargs):
            calls[0] += 1
            return fail() if calls[0] == 3 else real(*args, **kwargs)
        steps.accumulate = accumulate
    elif phase == "finishing":
        inference_run.load = fail
    distributed.shutdown = lambda finished=False: time.sleep(600)
from loraclf.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("phase", ["build", "frozen-cache", "step", "finishing"])
def test_a_rank_failing_in_any_phase_stops_the_others_within_a_minute(files, tmp_path, phase):
    extra = ["adapter.layers=1"] if phase == "frozen-cache" else []
    args = [str(a) for a in _args(files, tmp_path / "run", "--epochs", "1", *extra)]
    port, procs, logs = _free_port(), [], []
    failed = tmp_path / "failed-at"
    try:
        for rank in (0, 1):
            env = cli_env(
                RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LORACLF_TEST_PHASE=phase,
                LORACLF_TEST_FAILED=str(failed),
            )  # fmt: skip
            logs.append((tmp_path / f"rank{rank}.err").open("w"))
            cmd = [sys.executable, "-c", _RANK, *args]
            procs.append(subprocess.Popen(cmd, stderr=logs[-1], stdout=subprocess.DEVNULL, env=env))
        deadline = time.monotonic() + 300  # start-up and training up to the phase, then at most a minute
        while time.monotonic() < deadline and procs[0].poll() is None:
            if failed.exists() and failed.read_text() and time.time() - float(failed.read_text()) > 90:
                break
            time.sleep(0.2)
        stopped = time.time()
        rank0 = (tmp_path / "rank0.err").read_text()
        assert failed.exists(), f"rank 1 never reached the phase:\n{rank0[-2000:]}"
        assert procs[0].poll() is not None, f"rank 0 still waits for rank 1:\n{rank0[-2000:]}"
        assert stopped - float(failed.read_text()) < 60
        assert procs[0].returncode == 2, rank0[-2000:]
        errors = [ln for ln in rank0.splitlines() if ln.startswith("loraclf: error:")]
        assert errors == [errors[0]] and "rank 1 failed (injected failure" in errors[0], rank0[-2000:]
        assert "Traceback" not in rank0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
