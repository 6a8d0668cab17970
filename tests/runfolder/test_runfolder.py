"""A damaged or missing run-folder file is one line and exit status 2 in every command that reads run folders.

One tiny finished run is trained once; each case copies it, damages one file, and runs evaluate, predict, export,
report, runs and ``train --resume`` on the copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, write_text_csv
from loraclf.runfolder.schema import RunInfo, read_run_info, write_run_info
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runfolder")
    files = {
        "train": write_text_csv(d / "train.csv", 48, seed=3),
        "eval": write_text_csv(d / "eval.csv", 16, seed=4),
    }
    run = d / "run"
    res = run_cli(
        "train", "--model", tiny_bert_dir, "--train", files["train"], "--eval", files["eval"], "--out", run,
        "--epochs", 1, *TINY,
    )  # fmt: skip
    assert res.returncode == 0, res
    return {**files, "run": run}


DAMAGE = {
    "run.json missing": ("run.json", None),
    "run.json not JSON": ("run.json", '{"format_version": 1, "plan": '),
    "run.json without plan": ("run.json", '{"format_version": 1, "status": "complete"}'),
    "labels.json missing": ("labels.json", None),
    "labels.json not JSON": ("labels.json", "[[["),
    "recipe.yaml missing": ("recipe.yaml", None),
    "recipe.yaml not YAML": ("recipe.yaml", "model: [unclosed\n  - : :"),
    "weights missing": ("model.safetensors", None),
    "weights damaged": ("model.safetensors", "not a safetensors file"),
}


def damaged_copy(finished: dict, tmp_path: Path, case: str) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    name, content = DAMAGE[case]
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_text(content)
    return run


def commands(run: Path, finished: dict, tmp_path: Path) -> dict[str, list]:
    return {
        "evaluate": ["evaluate", run, "--data", finished["eval"], "--quiet"],
        "predict": ["predict", run, "--input", finished["eval"], "--output", tmp_path / "p.csv", "--quiet"],
        "export": ["export", run, "--out", tmp_path / "exported"],
        "report": ["report", run],
    }


def assert_one_line_error(res, *names: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert any(n in lines[0] for n in names), lines[0]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_one_line_in_every_reading_command(finished, tmp_path, case):
    run = damaged_copy(finished, tmp_path, case)
    name = DAMAGE[case][0]
    for command, args in commands(run, finished, tmp_path).items():
        if command == "report" and name in ("model.safetensors", "recipe.yaml"):
            continue  # the report reads run.json, labels.json and the metrics only
        res = run_cli(*args)
        assert_one_line_error(res, name, str(run))
        assert (
            not (tmp_path / "p.csv").exists() and not (tmp_path / "exported").exists()
        )  # nothing half-written


@pytest.mark.parametrize("case", ["run.json not JSON", "run.json without plan", "recipe.yaml not YAML"])
def test_resume_of_a_damaged_folder_is_one_line(finished, tmp_path, case):
    run = damaged_copy(finished, tmp_path, case)
    assert_one_line_error(run_cli("train", "--resume", run), DAMAGE[case][0])


def test_runs_table_lists_a_damaged_run_and_names_its_file(finished, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished["run"], root / "good")
    shutil.copytree(finished["run"], root / "bad")
    (root / "bad" / "run.json").write_text("{")
    res = run_cli("runs", root)
    assert res.returncode == 2, res  # the table is printed, and the damage is not hidden from scripts
    assert "good" in res.stdout and "bad" in res.stdout and "unreadable" in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "run.json" in lines[0] and "bad" in lines[0], res.stderr


def test_run_info_round_trips_and_keeps_unknown_keys(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    data = json.loads((run / "run.json").read_text())
    data["from_a_newer_minor_version"] = {"x": 1}
    (run / "run.json").write_text(json.dumps(data))
    info = read_run_info(run)
    assert isinstance(info, RunInfo) and info.complete and info.trainable == data["plan"]["trainable"]
    write_run_info(run, info)
    assert json.loads((run / "run.json").read_text()) == data


def test_a_newer_format_is_refused_with_upgrade_advice(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    data = json.loads((run / "run.json").read_text())
    data["format_version"] = 99
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="newer loraclf"):
        read_run_info(run)


# --- writers that never collide (issue 28) -------------------------------------------------------------------------

# Run in fresh interpreters by the multi-process tests below: loraclf's own code, as two commands would run it.
EVALUATION_WRITER = """
import json, sys, time
from pathlib import Path
from loraclf.runfolder.schema import write_evaluation
run, me, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(150):
    write_evaluation(run, "test.csv", {"writer": me, "i": i, "confusion_matrix": [[1]], "accuracy": 1.0,
                                      "pad": "x" * 20000})
"""

LOCK_TAKER = """
import importlib, sys, time
from pathlib import Path
try:
    mod = importlib.import_module("loraclf.runfolder.lock")
except ImportError:  # before issue 28 the lock lived in checkpoint.py
    mod = importlib.import_module("loraclf.runfolder.checkpoint")
from loraclf.utils.errors import UserError
def slow_check(pid):  # a slow liveness check widens the window between reading the pid and acting on it
    time.sleep(0.3)
    return False
mod.process_alive = slow_check
mod.DYING_WRITER_WAIT_S = 0  # every pid reads as dead here: do not wait for a "dying" holder
run, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
lock = mod.RunLock(run)
try:
    lock.acquire()
    print("held", flush=True)
    time.sleep(1.5)
    lock.release()
except UserError:
    print("refused", flush=True)
"""


def same_loraclf_env() -> dict[str, str]:
    """The CLI environment, importing the very loraclf this test imported (a checkout or an installed copy)."""
    import loraclf
    from conftest import cli_env

    return cli_env(PYTHONPATH=str(Path(loraclf.__file__).parents[1]))


def start_together(script: str, argv: list[list[str]], go: Path) -> list[str]:
    """Start one interpreter per argument list, release them at once through the file ``go``; their stdout."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *map(str, a)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=same_loraclf_env(),
        )
        for a in argv
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip())
    return outs


def test_two_evaluations_of_one_run_at_once_never_raise_or_tear_threads(tmp_path):
    """Two ``evaluate`` of one run writing evaluations/test.json at once (finding 15): threads."""
    import threading

    from loraclf.runfolder.schema import read_evaluations, write_evaluation

    errors, barrier = [], threading.Barrier(6)

    def writer(me: int) -> None:
        barrier.wait()
        try:
            for i in range(150):
                write_evaluation(tmp_path, "test.csv", {"writer": me, "i": i, "confusion_matrix": [[1]],
                                                        "accuracy": 1.0, "pad": "x" * 20000})  # fmt: skip
        except Exception as exc:  # any exception is the failure this test looks for
            errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    (recorded,) = read_evaluations(tmp_path).values()
    assert recorded["i"] == 149 and len(recorded["pad"]) == 20000  # one writer's last, whole file
    assert len(list((tmp_path / "evaluations").iterdir())) == 1  # no temporary file left behind


def test_two_evaluations_of_one_run_at_once_never_raise_or_tear_processes(tmp_path):
    go = tmp_path / "go"
    start_together(EVALUATION_WRITER, [[tmp_path, k, go] for k in range(3)], go)
    (path,) = (tmp_path / "evaluations").iterdir()  # one file, no temporary left behind
    data = json.loads(path.read_text())
    assert data["i"] == 149 and len(data["pad"]) == 20000


def test_a_stale_lock_is_taken_over_by_exactly_one_of_many_threads(tmp_path, monkeypatch):
    """Finding 16: several resumes of one run see the same dead pid; exactly one may hold the lock."""
    import sys
    import threading
    import time

    from loraclf.runfolder.checkpoint import RunLock

    def slow_check(pid):  # a slow liveness check widens the window between reading the pid and acting on it
        time.sleep(0.05)
        return False

    monkeypatch.setattr(sys.modules[RunLock.__module__], "process_alive", slow_check)
    monkeypatch.setattr(sys.modules[RunLock.__module__], "DYING_WRITER_WAIT_S", 0, raising=False)
    (tmp_path / ".lock").write_text("999999999")  # a writer that no longer exists
    locks = [RunLock(tmp_path) for _ in range(6)]
    results, barrier = [], threading.Barrier(len(locks))

    def take(lock) -> None:
        barrier.wait()
        try:
            lock.acquire()
            results.append("held")
        except UserError as exc:
            assert "being written by another loraclf process" in str(exc)
            results.append("refused")

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(results) == ["held"] + ["refused"] * 5
    finally:
        for lock in locks:
            lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_stale_lock_is_taken_over_by_exactly_one_of_many_processes(tmp_path):
    (tmp_path / ".lock").write_text("999999999")
    go = tmp_path / "go"
    outs = start_together(LOCK_TAKER, [[tmp_path, go] for _ in range(3)], go)
    assert sorted(outs) == ["held", "refused", "refused"]


def test_a_lock_is_free_again_once_its_holder_is_killed(tmp_path):
    """The kernel drops the flock of a killed holder: the next writer takes the folder over with a note."""
    import subprocess
    import sys

    from loraclf.runfolder.checkpoint import RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_TAKER.replace("time.sleep(1.5)", "time.sleep(60)"), tmp_path, tmp_path],
        stdout=subprocess.PIPE,
        text=True,
        env=same_loraclf_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text() == str(os.getpid())


DYING_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"999999999", 0)  # the pid of the writer that was killed; this process plays its slow exit
print("held", flush=True)
time.sleep(1.0)
"""


def test_a_lock_still_held_by_a_killed_writer_that_is_exiting_is_waited_for(tmp_path):
    """kill -9 of a job, then --resume at once: the flock outlives the named pid by a moment (CI, stop 32)."""
    import subprocess
    import sys

    from loraclf.runfolder.checkpoint import RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c", DYING_HOLDER, tmp_path / ".lock"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with RunLock(tmp_path) as lock:
            assert lock.held
            assert (tmp_path / ".lock").read_text() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_evaluations_of_files_sharing_a_stem_are_kept_apart_and_old_records_read(tmp_path):
    """test.csv, test.jsonl and test.v2.csv overwrote each other's evaluations/test.json (code review, 19)."""
    from loraclf.runfolder.schema import read_evaluations, write_evaluation

    def result(acc):
        return {"accuracy": acc, "macro_f1": acc, "confusion_matrix": [[1]]}

    folder = tmp_path / "evaluations"
    folder.mkdir()
    (folder / "old.json").write_text(
        json.dumps({"data": "/x/old.tsv", **result(0.1)})
    )  # written before issue 28
    (folder / "test.json").write_text(
        json.dumps({"data": "/x/test.csv", **result(0.2)})
    )  # likewise, for test.csv
    for name, acc in (("test.csv", 0.5), ("test.jsonl", 0.6), ("test.v2.csv", 0.7)):
        write_evaluation(tmp_path, f"/data/{name}", result(acc))
    found = read_evaluations(tmp_path)
    assert {k: v["accuracy"] for k, v in found.items()} == {
        "old": 0.1, "test.csv": 0.5, "test.jsonl": 0.6, "test.v2.csv": 0.7,
    }  # fmt: skip


def test_resuming_with_fewer_visible_gpus_restores_the_rng_of_those_it_sees(tmp_path, monkeypatch):
    """A one-process checkpoint saved with two GPUs visible, resumed with one: no "invalid device ordinal"."""
    import torch

    from loraclf.runfolder.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    states = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    ckpt = save_checkpoint(tmp_path, 1, model, opt, sched, None, {"step": 1}, keep=1)

    restored = {}

    def set_rng_state(state, device="cuda"):  # as CUDA answers with one device visible
        index = device if isinstance(device, int) else (torch.device(device).index or 0)
        if index >= 1:
            raise RuntimeError("CUDA error: invalid device ordinal")
        restored[index] = state.clone()

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for module in (torch.cuda, torch.cuda.random):  # set_rng_state_all calls the latter's own name
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    assert load_checkpoint(ckpt, model, opt, sched, None) == {"step": 1}
    assert list(restored) == [0] and torch.equal(restored[0], states[0])
