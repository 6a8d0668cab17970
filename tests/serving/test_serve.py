"""``loraclf serve`` against a real server: uvicorn on an ephemeral loopback port, a real HTTP client (urllib).

Tiny BERT runs of every method that merges, prompt tuning, BitFit and PiSSA-initialised LoRA are served together
from one ``--runs`` folder over one shared backbone; their answers must be ``loraclf predict``'s (fp32: the served
model is the unmerged one, so probabilities agree to 1e-4 as merged and unmerged models do in test_methods.py). A
single served run uses its int8 graph as ``predict`` does, and one request of the texts ``predict`` batches together
gets the same probabilities. Every server is started by the test and stopped by it; all bind 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cli_env, make_rows, run_cli, write_text_csv
from loraclf.modeling.methods import METHODS

KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
MERGING = sorted(name for name, m in METHODS.items() if m.merges)
TINY = ["--quiet", "--epochs", "3", "--rank", "4", "train.batch_size=8", "train.lr=2e-2", "model.head=linear"]
# fp32: AdaLoRA does not train under bf16 autocast on CPUs with fast bf16 (a dtype error in its layer norm path).
TINY += ["train.precision=fp32"]
SERVED = {
    **{m: ["--method", m] for m in MERGING},
    "prompt": ["--method", "prompt"],
    "bitfit": ["--method", "bitfit"],
}
SERVED["pissa"] = ["--method", "lora", "adapter.init=pissa"]  # rewrites the base weights it adapts
SERVED["full"] = ["--method", "full"]  # changed every weight: shares nothing, a separate copy
TEXTS = [f"{r[1]} {r[2]}" for r in make_rows(16, seed=7)]


# --- a server in a subprocess, and an HTTP client ---------------------------------------------------------------


class Server:
    """``python -m loraclf serve ARGS --port 0`` in a subprocess; the log (stderr) is collected line by line."""

    def __init__(self, *args, env: dict | None = None):
        cmd = [sys.executable, "-m", "loraclf", "serve", *map(str, args), "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(**(env or {}))
        )
        self.lines: list[str] = []
        self.base = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    self.base = found.group(1)
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(240) or self.base is None:
            self.kill()
            pytest.fail("the server did not start:\n" + "\n".join(self.lines[-30:]))

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (the log is complete once this returns)."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        """Make sure the server is gone (after a failed test too) and its log pipe closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._reader.join(10)
        self.proc.stderr.close()

    def log(self, fragment: str) -> list[str]:
        return [line for line in self.lines if fragment in line]


def call(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 120):
    """(status, headers, decoded JSON or text) of one request; a body that is not bytes is sent as JSON."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
    text = raw.decode()
    with contextlib.suppress(ValueError):
        return status, head, json.loads(text)
    return status, head, text


def post(server: Server, path: str, body, headers: dict | None = None):
    return call("POST", server.url(path), body, {**AUTH, **(headers or {})})


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir) -> dict:
    """A --runs folder with one tiny run per served method, the texts file, and a run to copy in later."""
    root = tmp_path_factory.mktemp("serve")
    train_csv, eval_csv = (
        write_text_csv(root / "train.csv", 48, seed=0),
        write_text_csv(root / "eval.csv", 16, 5),
    )
    served = root / "served"
    for name, flags in SERVED.items():
        res = run_cli(
            "train", "--model", tiny_bert_dir, "--train", train_csv, "--eval", eval_csv, "--out", served / name,
            *TINY, *flags, "train.threads=1",
        )  # fmt: skip
        assert res.returncode == 0, res
    broken = served / "broken"  # a damaged run folder: its weights file is not safetensors
    shutil.copytree(served / "lora", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    texts_csv = root / "texts.csv"
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_csv(texts_csv, index=False)
    return {"root": root, "served": served, "texts": texts_csv}


@pytest.fixture(scope="module")
def shared(runs):
    """Every run of the folder over one shared backbone, fp32, a key from the environment, small limits."""
    server = Server(
        "--runs", runs["served"], "--precision", "fp32", "--threads", "1", "--max-wait-ms", "50",
        "--max-inputs", "16", "--queue-size", "256", "--max-body-bytes", "8192", "--rescan", "0",
        env={"LORACLF_API_KEY": KEY},
    )  # fmt: skip
    yield server
    assert server.stop() == 0
    server.kill()


def predicted(run: Path, texts_csv: Path, out: Path, *flags) -> pd.DataFrame:
    res = run_cli("predict", run, "--input", texts_csv, "--output", out, "--probabilities", *flags, "--quiet")
    assert res.returncode == 0, res
    return pd.read_csv(out, dtype={"Label": str})


def _table(answers: list, labels: list[str]) -> np.ndarray:
    return np.array([[{d["label"]: d["score"] for d in row}[lab] for lab in labels] for row in answers])


# --- answers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SERVED))
def test_answers_are_loraclf_predicts(shared, runs, tmp_path, name):
    expected = predicted(runs["served"] / name, runs["texts"], tmp_path / "p.csv", "--precision", "fp32")
    status, _, body = post(shared, f"/models/{name}/predict", {"inputs": TEXTS})
    assert status == 200, body
    assert [row[0]["label"] for row in body] == list(expected["Label"])
    labels = [c.removeprefix("prob_") for c in expected.columns if c.startswith("prob_")]
    np.testing.assert_allclose(
        _table(body, labels), expected[[f"prob_{x}" for x in labels]].to_numpy(), atol=1e-4
    )


def test_backbone_is_shared_and_what_training_changed_is_not(shared, runs):
    status, _, info = call("GET", shared.url("/info"), headers=AUTH)
    assert status == 200
    models = {m["name"]: m for m in info["models"]}
    assert set(SERVED) <= set(models) and "broken" not in models, "the damaged run must not be listed"
    backbone = models["lora"]["shared_bytes"]
    for name in ("lora", "dora", "prompt", "bitfit"):
        assert models[name]["shared_bytes"] > 0.9 * backbone, models[name]
    # PiSSA rewrote the query/value matrices (r=4 of their singular vectors moved into the adapter): it keeps those.
    assert models["pissa"]["own_bytes"] > models["lora"]["own_bytes"] + 2 * 2 * 32 * 32 * 4 * 0.9
    assert all("backbone shared" in m["engine"] for m in models.values())
    assert models["full"]["shared_bytes"] == 0 and models["full"]["own_bytes"] >= backbone
    assert (
        len(shared.log("loaded 'full'")) == 1
        and "shares no backbone weights" in shared.log("loaded 'full'")[0]
    )
    for name in ("lora", "dora", "ia3", "prompt", "bitfit"):  # each adds exactly what it trained
        assert models[name]["own_bytes"] == _trained_bytes(runs["served"] / name), name
    # VeRA also holds its frozen random projections (r × the widest matrix, twice), made from a fixed seed.
    assert models["vera"]["own_bytes"] == _trained_bytes(runs["served"] / "vera") + 2 * 4 * 32 * 4


def _trained_bytes(run: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() * t.element_size() for t in load_file(str(run / "model.safetensors")).values())


def test_wire_formats(shared):
    lora = "/models/lora/predict"
    _, _, one = post(shared, lora, {"inputs": TEXTS[0]})
    assert [d["label"] for d in one] and {d["label"] for d in one} == {"business", "sports", "tech", "world"}
    assert [d["score"] for d in one] == sorted((d["score"] for d in one), reverse=True)
    assert abs(sum(d["score"] for d in one) - 1) < 1e-6
    _, _, nested = post(shared, lora, {"inputs": [[TEXTS[0]], [TEXTS[1]]]})
    _, _, flat = post(shared, "/predict", {"inputs": TEXTS[:2], "model": "lora"})
    assert len(flat) == 2 and _same(nested, flat) and _same(flat[0], one)
    _, _, raw = post(shared, lora, {"inputs": TEXTS[0], "raw_scores": True})
    logits = {d["label"]: d["score"] for d in raw}
    assert [d["label"] for d in raw] == [d["label"] for d in one]  # softmax keeps the order of the logits
    z = np.array(list(logits.values()))
    assert abs(z.sum() - 1) > 1e-3, "raw scores must be logits, not probabilities"
    soft = dict(zip(logits, np.exp(z - z.max()) / np.exp(z - z.max()).sum()))
    np.testing.assert_allclose([soft[d["label"]] for d in one], [d["score"] for d in one], atol=1e-6)
    _, _, hf = post(
        shared, lora, {"inputs": TEXTS[0], "parameters": {"top_k": 2, "function_to_apply": "sigmoid"}}
    )
    assert [d["label"] for d in hf] == [d["label"] for d in one[:2]]
    sigmoid = [1 / (1 + np.exp(-logits[d["label"]])) for d in hf]
    np.testing.assert_allclose([d["score"] for d in hf], sigmoid, atol=1e-9)


def test_concurrent_clients_over_several_adapters_get_their_own_answers(shared):
    names = ["lora", "dora", "ia3", "prompt", "bitfit"]
    alone = {n: post(shared, f"/models/{n}/predict", {"inputs": TEXTS})[2] for n in names}
    results, errors = [], []

    def client(k: int):
        for j in range(6):
            name, i = names[(k + j) % len(names)], (3 * k + j) % len(TEXTS)
            status, _, body = post(shared, "/predict", {"inputs": [TEXTS[i]], "model": name})
            (results if status == 200 else errors).append((name, i, body))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 16 * 6
    for name, i, body in results:
        assert [d["label"] for d in body[0]] == [d["label"] for d in alone[name][i]]
        np.testing.assert_allclose(
            [d["score"] for d in body[0]], [d["score"] for d in alone[name][i]], atol=1e-5
        )
    _, _, metrics = call("GET", shared.url("/metrics"), headers=AUTH)
    batches = {m: _histogram(metrics, "loraclf_batch_size", m) for m in names}
    assert any(count > ones for ones, count in batches.values()), f"no batch held two requests: {batches}"
    assert 'loraclf_requests_total{code="200",model="lora"}' in metrics
    assert "loraclf_request_duration_seconds_bucket" in metrics and "loraclf_queue_depth" in metrics


def _same(a: list, b: list) -> bool:
    """Answers equal up to float rounding (a row padded within another batch may differ in the last digits)."""
    if isinstance(a[0], list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    labels = [d["label"] for d in a] == [d["label"] for d in b]
    return labels and np.allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-6, rtol=0)


def _histogram(text: str, name: str, model: str) -> tuple[float, float]:
    """(observations of at most 1, all observations) of a histogram's series for one run."""
    from prometheus_client.parser import text_string_to_metric_families

    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    found = {(s.name, s.labels.get("le")): s.value for s in family.samples if s.labels.get("model") == model}
    return found[(f"{name}_bucket", "1.0")], found[(f"{name}_count", None)]


# --- mistakes, limits, the key ----------------------------------------------------------------------------------

MALFORMED = [
    (b"{not json", 400, "not JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"text": "x"}', 422, "unknown key 'text'"),
    (b'{"model": "lora"}', 422, "no 'inputs'"),
    (b'{"inputs": 3, "model": "lora"}', 422, "'inputs' must be a text"),
    (b'{"inputs": [], "model": "lora"}', 422, "empty list"),
    (b'{"inputs": [["a", "b"]], "model": "lora"}', 422, "pairs are not supported"),
    (b'{"inputs": ["a", 7], "model": "lora"}', 422, "inputs[1] must be a text"),
    (b'{"inputs": "a", "model": "lora", "truncate": "no"}', 422, "'truncate' must be true or false"),
    (b'{"inputs": "a", "model": "lora", "parameters": {"top_k": 0}}', 422, "top_k"),
    (
        b'{"inputs": "a", "model": "lora", "parameters": {"function_to_apply": "relu"}}',
        422,
        "function_to_apply",
    ),
    (
        b'{"inputs": "a", "model": "lora", "raw_scores": true, "parameters": {"function_to_apply": "softmax"}}',
        422,
        "raw_scores",
    ),
    (b'{"inputs": "a", "model": 5}', 422, "'model' must be a run name"),
    (b'{"inputs": "a"}', 422, "name one"),
    (b'{"inputs": "a", "model": "lorra"}', 404, 'did you mean "lora"'),
    (b"[" * 3000 + b"]" * 3000, 400, "not JSON"),  # deeper than the JSON decoder recurses
]


@pytest.mark.parametrize(("body", "status", "fragment"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_requests_are_4xx_json_saying_what_was_wrong(shared, body, status, fragment):
    got, _, answer = post(shared, "/predict", body)
    assert got == status, answer
    assert isinstance(answer, dict) and set(answer) == {"error", "error_type"}, answer
    assert fragment in answer["error"] and "Traceback" not in answer["error"] and "\n" not in answer["error"]


def test_wrong_routes_and_methods_are_json_errors(shared):
    for method, path, status in (
        ("GET", "/predict", 405),
        ("POST", "/nowhere", 404),
        ("GET", "/models/x", 404),
    ):
        got, _, answer = call(method, shared.url(path), headers=AUTH)
        assert got == status and "routes:" in answer["error"], answer


def test_limits_answer_413_naming_the_limit(shared, runs):
    status, _, answer = post(shared, "/models/lora/predict", {"inputs": ["a"] * 17})
    assert status == 413 and "at most 16" in answer["error"]
    status, _, answer = post(shared, "/models/lora/predict", {"inputs": "x" * 9000})
    assert status == 413 and "8,192 bytes" in answer["error"]
    long = " ".join(["stocks"] * 60)  # the runs read 24 tokens (their max length)
    status, _, answer = post(shared, "/models/lora/predict", {"inputs": ["bank", long], "truncate": False})
    assert status == 413 and "inputs[1] has 62 tokens" in answer["error"] and "at most 24" in answer["error"]
    status, _, cut = post(shared, "/models/lora/predict", {"inputs": long})
    assert status == 200 and cut[0]["label"] == "business"


def test_a_streamed_body_is_cut_off_at_the_limit(shared):
    host, port = shared.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b'{"inputs": "' + b"x" * 1000 for _ in range(20))  # 20 kB without a Content-Length
    conn.request(
        "POST", "/predict", body=chunks, headers={**AUTH, "Transfer-Encoding": "chunked"}, encode_chunked=True
    )
    response = conn.getresponse()
    assert response.status == 413 and "8,192 bytes" in json.loads(response.read())["error"]
    conn.close()


def test_the_key_guards_every_route_but_health(shared):
    for path in ("/predict", "/info", "/metrics"):
        status, head, answer = call(
            "POST" if path == "/predict" else "GET", shared.url(path), b'{"inputs": "a"}'
        )
        assert status == 401 and head.get("www-authenticate", head.get("WWW-Authenticate")) == "Bearer", (
            answer
        )
        assert "Authorization: Bearer" in answer["error"]
    status, _, answer = post(
        shared, "/models/lora/predict", {"inputs": "a"}, {"Authorization": "Bearer nope"}
    )
    assert status == 401 and answer["error"] == "the API key is wrong"
    status, _, answer = call("GET", shared.url("/health"))
    assert status == 200 and answer["status"] == "ok"


def test_damaged_run_is_refused_in_one_line_and_the_others_serve(shared):
    status, _, answer = post(shared, "/models/broken/predict", {"inputs": "a"})
    assert status == 404 and "safetensors" in answer["error"], answer
    post(shared, "/models/broken/predict", {"inputs": "a"})  # asked twice: still logged once
    lines = shared.log("'broken'")
    assert len(lines) == 1 and "refused" in lines[0], shared.lines


def test_a_run_added_to_the_folder_is_served_without_a_restart(shared, runs):
    status, _, _ = post(shared, "/models/added/predict", {"inputs": TEXTS[0]})
    assert status == 404
    staging = runs["root"] / "staging"
    shutil.copytree(runs["served"] / "ia3", staging)
    staging.rename(runs["served"] / "added")  # a move is atomic: the server never sees half a folder
    status, _, added = post(shared, "/models/added/predict", {"inputs": TEXTS[0]})
    _, _, original = post(shared, "/models/ia3/predict", {"inputs": TEXTS[0]})
    assert status == 200 and added == original
    assert len(shared.log("loaded 'added'")) == 1


def test_a_scan_refuses_once_retries_after_a_change_and_loads_a_run_once(runs, tmp_path, capsys):
    from loraclf.serving.registry import Registry

    folder = tmp_path / "runs"
    shutil.copytree(runs["served"] / "ia3", folder / "good")
    shutil.copytree(runs["served"] / "broken", folder / "bad")
    (folder / "notes").mkdir()  # not a run folder: passed over in silence
    registry = Registry("cpu", "fp32", share=True)
    registry.watch(folder)
    scans = [threading.Thread(target=registry.scan) for _ in range(2)]  # a miss and the periodic scan at once
    for t in scans:
        t.start()
    for t in scans:
        t.join(120)
    registry.scan()
    assert set(registry.members) == {"good"} and "safetensors" in registry.refusal("bad")
    log = capsys.readouterr().err
    assert log.count("loaded 'good'") == 1 and log.count("refused run 'bad'") == 1, log
    assert "notes" not in log and "two run folders" not in log
    shutil.copy(runs["served"] / "lora" / "model.safetensors", folder / "bad" / "model.safetensors")
    assert registry.scan() == ["bad"] and registry.refusal("bad") is None


def test_serving_never_writes_into_the_shared_backbone(runs, tiny_bert_dir):
    """PiSSA rewrites the weights it adapts while its model is built, BitFit trains biases: loading and scoring
    them must leave every shared tensor equal to the pretrained backbone's."""
    import torch
    from transformers import AutoModel

    from loraclf.serving.registry import Registry

    registry = Registry("cpu", "fp32", share=True)
    for name in ("lora", "pissa", "bitfit", "prompt", "dora"):
        member = registry.add(runs["served"] / name)
        member.logits(member.encode(TEXTS))
    pool = next(iter(registry._weights._pools.values()))
    model = AutoModel.from_pretrained(tiny_bert_dir)
    fresh = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert pool.keys() == fresh.keys()
    for key, tensor in pool.items():
        assert torch.equal(tensor, fresh[key]), key


def test_a_backbone_no_run_shares_is_not_kept(runs):
    from loraclf.serving.registry import Registry

    registry = Registry("cpu", "fp32", share=True)
    member = registry.add(runs["served"] / "full")
    assert member.shared_bytes == 0 and registry._weights._pools == {}
    registry.add(runs["served"] / "lora")
    assert len(registry._weights._pools) == 1 and registry.get("lora").shared_bytes > 0


# --- one run, its int8 graph; a full queue; the drain -----------------------------------------------------------


def test_one_run_serves_its_int8_graph_with_predicts_answers(runs, tmp_path):
    run = runs["served"] / "lora"
    expected = predicted(run, runs["texts"], tmp_path / "p.csv")  # predict's default: int8 on a CPU
    server = Server(run, "--threads", "1")
    try:
        _, _, info = call("GET", server.url("/info"))
        assert info["model_id"] == "lora" and info["models"][0]["engine"] == "int8, ONNX Runtime"
        status, _, body = call("POST", server.url("/predict"), {"inputs": TEXTS})  # one run: no name needed
        assert status == 200
        assert [row[0]["label"] for row in body] == list(expected["Label"])
        labels = info["models"][0]["labels"]
        want = expected[[f"prob_{x}" for x in labels]].to_numpy()
        np.testing.assert_allclose(_table(body, labels), want, atol=2e-6)
    finally:
        assert server.stop() == 0
        server.kill()


def test_full_queue_answers_429_and_sigterm_drains_requests_in_flight(runs):
    server = Server(
        runs["served"] / "lora", "--api-key", KEY, "--max-wait-ms", "2000", "--max-batch-tokens", "100000",
        "--queue-size", "6", "--max-inputs", "4",
    )  # fmt: skip
    try:
        answers = {}  # by request: both finish in one batch, in either order
        first = threading.Thread(
            target=lambda: answers.__setitem__("first", post(server, "/predict", {"inputs": TEXTS[:4]}))
        )
        first.start()
        _wait_for_queue(server, 4)
        status, head, answer = post(server, "/predict", {"inputs": TEXTS[:3]})  # 4 waiting + 3 > 6
        assert status == 429 and int(head.get("retry-after", head.get("Retry-After"))) >= 1, answer
        assert answer["error_type"] == "Overloaded"
        second = threading.Thread(
            target=lambda: answers.__setitem__("second", post(server, "/predict", {"inputs": TEXTS[4:6]}))
        )
        second.start()
        _wait_for_queue(server, 6)
        started = time.monotonic()
        code = server.stop()  # SIGTERM while 6 texts wait in the queue
        first.join(60)
        second.join(60)
        assert code == 0, server.lines
        assert {k: (s, len(body)) for k, (s, _, body) in answers.items()} == {
            "first": (200, 4),
            "second": (200, 2),
        }
        assert time.monotonic() - started < 30
        assert server.log("stopping: finishing") and server.log("stopped")
        with pytest.raises(OSError):
            socket.create_connection(tuple(server.base.removeprefix("http://").split(":")), timeout=5).close()
    finally:
        server.kill()


def _wait_for_queue(server: Server, texts: int) -> None:
    for _ in range(200):
        _, _, metrics = call("GET", server.url("/metrics"), headers=AUTH)
        found = re.search(r'loraclf_queue_depth{model="lora"} (\S+)', metrics)
        if found and float(found.group(1)) >= texts:
            return
        time.sleep(0.02)
    pytest.fail(f"{texts} texts never waited in the queue")


# --- the command line -------------------------------------------------------------------------------------------


def test_command_line_mistakes_are_one_line_and_exit_2(runs, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    cases = [
        ([], "give the runs to serve"),
        ([tmp_path / "missing"], "not found"),
        (["--runs", empty], "holds no run folder"),
        (["--runs", tmp_path / "nope"], "not found"),
        ([runs["served"] / "lora", "--port", port], f"--port {port}"),
        ([runs["served"] / "lora", "--max-inputs", "20", "--queue-size", "10"], "--max-inputs (20)"),
        ([runs["served"] / "lora", runs["root"] / "lora-copy"], "not found"),
        ([runs["served"] / "lora", "--precision", "int4"], "invalid choice"),
    ]
    try:
        for args, fragment in cases:
            started = time.monotonic()
            res = run_cli("serve", *args)
            assert res.returncode == 2 and fragment in res.stderr, (args, res)
            assert len(res.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 5, res
    finally:
        listener.close()
    monkeypatch.setenv("LORACLF_API_KEY", " ")
    res = run_cli("serve", runs["served"] / "lora")
    assert res.returncode == 2 and "LORACLF_API_KEY" in res.stderr


_IMPORTS_AFTER_MISTAKES = r"""
import socket, sys
from loraclf.cli.main import main
busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen()
run, empty = sys.argv[1], sys.argv[2]
for argv in (["serve"], ["serve", "missing"], ["serve", "--runs", empty], ["serve", run, "--port", str(busy.getsockname()[1])],
             ["serve", run, "--max-inputs", "20", "--queue-size", "10"], ["serve", "--help"]):
    try:
        assert main(argv) == 2, argv
    except SystemExit as exc:  # --help
        assert exc.code == 0
heavy = ("torch", "transformers", "peft", "numpy", "fastapi", "starlette", "uvicorn", "prometheus_client")
print("HEAVY:" + ",".join(m for m in heavy if m in sys.modules))
"""


def test_command_line_mistakes_import_no_heavy_library(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    res = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER_MISTAKES, str(runs["served"] / "lora"), str(tmp_path / "empty")],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "HEAVY:", res.stdout[-500:]
    assert res.stderr.count("loraclf: error: ") == 5, res.stderr


def test_a_folder_whose_runs_all_fail_to_load_is_an_error(runs, tmp_path):
    folder = tmp_path / "only-broken"
    shutil.copytree(runs["served"] / "broken", folder / "broken")
    res = run_cli("serve", "--runs", folder, "--port", "0")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "refused run 'broken'" in lines[0], res
    assert lines[-1].startswith("loraclf: error: --runs: no run in") and len(lines) == 2


def test_missing_serving_libraries_name_the_extra(runs, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    res = run_cli("serve", runs["served"] / "lora")
    assert res.returncode == 2 and "pip install 'loraclf[serve]'" in res.stderr and "fastapi" in res.stderr


def test_two_runs_with_one_name_are_refused(runs, tmp_path):
    other = tmp_path / "elsewhere" / "lora"
    shutil.copytree(runs["served"] / "lora", other)
    res = run_cli("serve", runs["served"] / "lora", other)
    assert res.returncode == 2 and "two run folders are named 'lora'" in res.stderr
    assert os.path.isdir(other)


# --- the load benchmark's mechanics -----------------------------------------------------------------------------


@pytest.mark.slow
def test_load_benchmark_runs_on_a_tiny_run(runs, tmp_path):
    """benchmarks/serve_load.py end to end on a tiny run (the numbers come only from real runs, benchmarks/README)."""
    from conftest import REPO

    data = write_text_csv(tmp_path / "texts.csv", 24, seed=9)
    res = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--run", str(runs["served"] / "lora"),
            "--data", str(data), "--requests", "12", "--warmup", "2", "--concurrency", "1,3", "--adapters", "2",
            "--memory", "1,2", "--workdir", str(tmp_path / "work"),
        ],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert re.search(r"`loraclf predict`: [\d,.]+ rows/s", out), out
    for row in ("| one int8 run | 1 |", "| one int8 run | 3 |", "| 2 adapters, one backbone | 3 |", "| 2 | "):
        assert row in out, out
    assert len(list((tmp_path / "work" / "memory-2").iterdir())) == 2


@pytest.mark.parametrize("share", [True, False])
def test_scores_are_calibrated_unless_no_calibration_is_asked(runs, share):
    from loraclf.serving.registry import Registry

    run = runs["served"] / "lora"
    temperature = json.loads((run / "run.json").read_text())["calibration"]["temperature"]
    assert temperature != 1.0  # the tiny run's fitted T: a test that could not fail otherwise
    raw, scaled = (Registry("cpu", "fp32", share=share, calibration=c).add(run) for c in (False, True))
    ids = raw.encode(TEXTS)
    np.testing.assert_allclose(scaled.logits(ids), raw.logits(ids) / temperature, rtol=1e-5, atol=1e-6)
