"""``loraclf serve`` under a bounded load on loopback, against ``loraclf predict``, and the server's memory.

    .venv/bin/python benchmarks/serve_load.py --run runs/agnews --data ../shared/data/ag_news/test.csv

RUN is a finished MiniLM run (the quick start trains one; a cheaper one for this benchmark alone:
``loraclf train --model minilm --train ag_news/train.csv --eval SMALL.csv --max-train-samples 256 --out RUN
train.max_steps=1`` with a few-hundred-row ``--eval`` file, since without one a 2,500-row validation split is carved
and evaluated). Run it alone on the machine; it prints the CPU it ran on and three tables, one part after the other:

1. **predict**: ``loraclf predict RUN`` on the first ``--requests`` texts of ``--data`` (its default engine: the
   int8 graph on a CPU); its own rows/s line (scoring, tokenisation included, start-up excluded).
2. **load**: a server on 127.0.0.1 (port chosen by the system) for one run (``serve RUN``: its int8 graph) and for
   ``--adapters`` adapters over one backbone (``serve --runs DIR``: unmerged PyTorch, one shared MiniLM). For each
   concurrency in ``--concurrency`` (default 1, 8, 64), that many client threads, each with its own keep-alive
   connection, send one text per request until ``--requests`` requests are answered (after ``--warmup`` unmeasured
   ones), then stop: rows/s (= requests/s), p50 and p99 latency, and rows/s as a share of predict's. Requests to
   the adapters go round-robin over them. The clients share the machine with the server (and Python threads share
   one interpreter lock), so at 64 clients the client side costs the server some CPU; the table says what a local
   client gets.
3. **memory**: resident size (VmRSS, and the peak VmHWM, from /proc: Linux only) of a server of 1, 10 and 50
   adapters of one backbone (``--memory``), once it answered one request for each adapter.

The N adapters are copies of RUN whose trained tensors (``model.safetensors``) get 1% Gaussian noise, a different
seed per copy, made once under ``--workdir``: each has RUN's exact shapes and size and is a different adapter to
the server (nothing of it is shared), though not a classifier worth serving. That costs seconds, where training N
runs would cost N trainings. The server's ``--max-inputs``, ``--queue-size`` and batching flags are its defaults
unless given after ``--``: ``serve_load.py … -- --max-wait-ms 2``.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("figures", "report.html", "evaluations", "checkpoints")


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} logical CPUs"


def env() -> dict:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + out.get("PYTHONPATH", "")
    out.setdefault("HF_HUB_OFFLINE", "1")
    return out


def read_texts(path: Path, n: int) -> list[str]:
    """The first ``n`` texts of a CSV with a ``text`` column (or title + description, joined with a space)."""
    texts = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text = row.get("text")
            texts.append(text if text is not None else f"{row.get('title', '')} {row.get('description', '')}")
            if len(texts) == n:
                break
    if not texts:
        sys.exit(f"serve_load: {path} has no rows")
    return texts


def make_adapters(run: Path, folder: Path, n: int) -> Path:
    """``folder`` holding ``n`` copies of ``run`` with perturbed trained tensors (made once, reused after)."""
    import torch
    from safetensors.torch import load_file, save_file

    base = load_file(str(run / "model.safetensors"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = folder / f"adapter-{i:02d}"
        if target.is_dir():
            continue
        part = folder / f".adapter-{i:02d}.partial"
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(run, part, ignore=shutil.ignore_patterns(*SKIP))
        gen = torch.Generator().manual_seed(i)
        noisy = {
            k: v + 0.01 * v.float().std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1 else v
            for k, v in base.items()
        }  # fmt: skip
        save_file(noisy, str(part / "model.safetensors"))
        part.rename(target)  # the server, or a rerun, never sees half a copy
    return folder


def predict_rate(run: Path, texts: list[str], work: Path) -> float:
    """``loraclf predict``'s own rows/s on the texts."""
    source, out = work / "texts.csv", work / "predictions.csv"
    with source.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(texts))
    cmd = [sys.executable, "-m", "loraclf", "predict", str(run), "--input", str(source), "--output", str(out)]
    res = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, env=env())
    found = re.search(r"\(([\d,.]+) rows/s, ([^)]+)\)", res.stderr)
    if res.returncode or not found:
        sys.exit(f"serve_load: predict failed:\n{res.stderr[-2000:]}")
    print(f"predict: {found.group(1)} rows/s ({found.group(2)})", file=sys.stderr)
    return float(found.group(1).replace(",", ""))


class Server:
    """``loraclf serve ARGS --port 0`` in a subprocess, until :meth:`stop`."""

    def __init__(self, args: list[str]):
        cmd = [sys.executable, "-m", "loraclf", "serve", *args, "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env()
        )
        self.port = None
        for line in self.proc.stderr:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        if self.port is None:
            sys.exit(f"serve_load: the server did not start (exit {self.proc.wait()})")
        threading.Thread(
            target=lambda: [None for _ in self.proc.stderr], daemon=True
        ).start()  # keep the pipe open

    def rss(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return tuple(
            int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) * 1024 for key in ("VmRSS", "VmHWM")
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(120) != 0:
            sys.exit(f"serve_load: the server exited with {self.proc.returncode}")


def load(port: int, texts: list[str], models: list[str | None], clients: int, requests: int, warmup: int):
    """Answer ``warmup`` then ``requests`` one-text requests with ``clients`` threads; (rows/s, p50 s, p99 s)."""
    total = warmup + requests
    latencies = np.zeros(total)
    lock, state = threading.Lock(), {"next": 0, "measured_from": None, "error": None}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
                if i == warmup:
                    state["measured_from"] = time.perf_counter()
            if i >= total:
                break
            body = {"inputs": texts[i % len(texts)]}
            if models[i % len(models)] is not None:
                body["model"] = models[i % len(models)]
            start = time.perf_counter()
            conn.request("POST", "/predict", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            latencies[i] = time.perf_counter() - start
            if response.status != 200:
                state["error"] = f"HTTP {response.status}"
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - state["measured_from"]
    if state["error"]:
        sys.exit(f"serve_load: a request failed ({state['error']})")
    measured = latencies[warmup:]
    return requests / wall, float(np.percentile(measured, 50)), float(np.percentile(measured, 99))


def load_table(args, texts: list[str], base: float, adapters: Path, extra: list[str]) -> list[str]:
    rows = [
        "| served | clients | rows/s | p50 ms | p99 ms | share of predict's rows/s |",
        "|---|---|---|---|---|---|",
    ]
    names = [f"adapter-{i:02d}" for i in range(args.adapters)]
    for label, serve_args, models in (
        ("one int8 run", [str(args.run)], [None]),
        (f"{args.adapters} adapters, one backbone", ["--runs", str(adapters)], names),
    ):
        server = Server([*serve_args, "--queue-size", str(max(1024, 4 * max(args.concurrency))), *extra])
        try:
            for clients in args.concurrency:
                rate, p50, p99 = load(server.port, texts, models, clients, args.requests, args.warmup)
                rows.append(
                    f"| {label} | {clients} | {rate:,.1f} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | {rate / base:.0%} |"
                )
                print(rows[-1], file=sys.stderr)
        finally:
            server.stop()
    return rows


def memory_table(args, texts: list[str], work: Path, extra: list[str]) -> list[str]:
    rows = ["| adapters | RSS MiB | peak RSS MiB | RSS per adapter over one, MiB |", "|---|---|---|---|"]
    first = None
    for n in args.memory:
        folder = make_adapters(args.run, work / f"memory-{n}", n)
        server = Server(["--runs", str(folder), "--rescan", "0", *extra])
        try:
            load(server.port, texts, [f"adapter-{i:02d}" for i in range(n)], 1, n, 0)  # every adapter once
            rss, peak = server.rss()
        finally:
            server.stop()
        first = rss if first is None else first
        extra_each = f"{(rss - first) / 2**20 / (n - 1):.1f}" if n > 1 else "-"
        rows.append(f"| {n} | {rss / 2**20:,.0f} | {peak / 2**20:,.0f} | {extra_each} |")
        print(rows[-1], file=sys.stderr)
    return rows


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument(
        "--run", type=Path, required=True, help="a finished run (MiniLM for benchmarks/README's tables)"
    )
    p.add_argument("--data", type=Path, required=True, help="CSV whose texts are sent (ag_news/test.csv)")
    p.add_argument(
        "--requests", type=int, default=2000, help="measured requests per concurrency (one text each)"
    )
    p.add_argument("--warmup", type=int, default=64, help="unmeasured requests first")
    p.add_argument("--concurrency", type=ints, default=[1, 8, 64])
    p.add_argument("--adapters", type=int, default=10, help="adapters over one backbone in the load test")
    p.add_argument("--memory", type=ints, default=[1, 10, 50], help="adapter counts whose RSS is measured")
    p.add_argument("--workdir", type=Path, help="where the adapter copies go (default: a temporary folder)")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="loraclf-serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = read_texts(args.data, args.requests)
    print(f"CPU: {cpu_name()}; {len(texts)} texts of {args.data}; run {args.run}\n")
    base = predict_rate(args.run, texts, work)
    adapters = make_adapters(args.run, work / f"load-{args.adapters}", args.adapters)
    print(f"`loraclf predict`: {base:,.1f} rows/s\n")
    print("\n".join(load_table(args, texts, base, adapters, extra)) + "\n")
    print("\n".join(memory_table(args, texts, work, extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
