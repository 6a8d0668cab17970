"""Shared fixtures: tiny local models, small labelled files, the real data directory, CLI runners.

Everything here is offline and seeded. The tiny models are built from configs and saved with ``save_pretrained``
so that code paths that load weights (``build_model(..., meta=False)``, training) run exactly as with a real model.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Offline before anything imports huggingface_hub / transformers / datasets.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite tests the CPU paths: on a machine with an NVIDIA GPU, "auto" devices would otherwise pick CUDA (and the
# int8 path would step aside), so the same tests would test something else or fail. GPU decisions are tested with
# a faked CUDA (test_hardware.py); the GPU itself is the device check's job (benchmarks/gpu_check.sh).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# Token caches and assembled models go to a throw-away folder, not the user's ~/.cache.
os.environ["LORACLF_CACHE"] = tempfile.mkdtemp(prefix="loraclf-test-cache-")

import pandas as pd
import pytest
import torch

atexit.register(shutil.rmtree, os.environ["LORACLF_CACHE"], ignore_errors=True)
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# The exact file set of a finished run folder (STYLE.md: a test asserts it).
RUN_FILES = {
    "run.json",
    "recipe.yaml",
    "labels.json",
    "model.safetensors",
    "tokenizer",
    "metrics.jsonl",
    "metrics.json",
    "confusion_matrix.csv",
    "report.html",
    "figures",
}

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Class keywords: few per class (fewer than the hidden size in total), so that a 32-dimensional model separates
# bags of them after a few steps; every text mixes several keywords of its class with neutral filler words.
CLASS_WORDS = {
    "business": ["stocks", "shares", "profit", "bank", "earnings", "merger"],
    "sports": ["football", "tennis", "goal", "coach", "league", "match"],
    "tech": ["software", "internet", "chip", "computer", "browser", "nasa"],
    "world": ["president", "minister", "election", "parliament", "treaty", "troops"],
}
_COMMON = """
the a an of in on at to for with by from and or but is are was were be has have had it its this that
new said says after before over under today yesterday week year monday tuesday wednesday thursday
friday saturday sunday reuters ap afp first second third last big small top high low more most less
many few people report reports officials group plan plans deal talks news time day days month months
city country state world sports business tech science market team government company game games
season players player win wins won lost loss record sales prices price oil dollar euro growth rate
rates quarter percent million billion data users web online service services research space phone
mobile new york london washington china japan iraq europe america american british french german
chief executive officer analyst
"""
COMMON_WORDS = _COMMON.split()  # neutral filler, shared by every class
PUNCT = [".", ",", "'", '"', "-", "(", ")", ":", ";", "!", "?", "$", "%", "&", "#"]
DIGITS = [str(i) for i in range(10)]
VOCAB = SPECIALS + PUNCT + DIGITS + sorted({w for ws in CLASS_WORDS.values() for w in ws} | set(COMMON_WORDS))
LABELS = sorted(CLASS_WORDS)  # the label map loraclf must build: strings sorted alphabetically


def make_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(label, title, description) rows, round-robin over the classes, texts from class words plus filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = CLASS_WORDS[label]
        title = " ".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
        desc = " ".join(
            rng.choice(words) if rng.random() < 0.6 else rng.choice(COMMON_WORDS)
            for _ in range(rng.randint(5, 12))
        )
        rows.append((label, title, desc + "."))
    return rows


def write_text_csv(path: Path, n: int = 80, seed: int = 0, with_id: bool = False) -> Path:
    rows = make_rows(n, seed)
    df = pd.DataFrame({"label": [r[0] for r in rows], "text": [f"{r[1]} {r[2]}" for r in rows]})
    if with_id:
        df.insert(0, "id", [f"row{1000 + i}" for i in range(n)])
    df.to_csv(path, index=False)
    return path


def write_title_desc_csv(path: Path, n: int = 80, seed: int = 0) -> Path:
    rows = make_rows(n, seed)
    df = pd.DataFrame(
        {"label": [r[0] for r in rows], "title": [r[1] for r in rows], "description": [r[2] for r in rows]}
    )
    df.to_csv(path, index=False)
    return path


def _bert_tokenizer(vocab_file: Path):
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(vocab_file=str(vocab_file))
    if len(tok) < len(VOCAB):
        # transformers >= 5 takes the vocabulary itself (``vocab=``) and ignores ``vocab_file``.
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})
    assert len(tok) == len(VOCAB)
    return tok


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def tiny_roberta_config():
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def tiny_gpt2_config():
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=2, eos_token_id=3
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny BERT (2 layers, hidden 32) with a word-level vocabulary covering the fixture texts."""
    from transformers import BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = d / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(d)
    _bert_tokenizer(vocab_file).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """Weights folders of tiny BERT, RoBERTa and GPT-2 backbones (no tokenizer needed for parameter counts)."""
    from transformers import GPT2Model, RobertaModel

    out = {"bert": tiny_bert_dir}
    for name, cls, cfg in (
        ("roberta", RobertaModel, tiny_roberta_config()),
        ("gpt2", GPT2Model, tiny_gpt2_config()),
    ):
        d = tmp_path_factory.mktemp(f"tiny-{name}")
        torch.manual_seed(0)
        cls(cfg).save_pretrained(d)
        out[name] = d
    return out


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    """80 rows, 4 string-labelled classes (business, sports, tech, world), columns label,text."""
    return write_text_csv(tmp_path / "train.csv", 80, seed=0)


@pytest.fixture
def tiny_title_desc_csv(tmp_path) -> Path:
    """The same kind of rows in the title,description layout."""
    return write_title_desc_csv(tmp_path / "title_desc.csv", 40, seed=1)


@pytest.fixture
def data_dir() -> Path:
    """The real data directory (../shared/data or $LORACLF_DATA); absent data fails in CI and skips elsewhere."""
    d = Path(os.environ.get("LORACLF_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        msg = f"real data directory {d} not found (set LORACLF_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


# --- running the CLI ---------------------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def run_cli_subprocess(*args: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """``python -m loraclf ARGS`` in a fresh interpreter, offline; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "loraclf", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
        **popen,
    )


# A "zygote": one interpreter imports the heavy libraries once, then forks a child per command; the child points
# fds 1 and 2 at files and runs ``loraclf/__main__.py`` exactly as ``python -m loraclf`` does. Each command thus
# runs in its own process with real file descriptors, without paying torch/transformers start-up every time.
_ZYGOTE = r"""
import json, os, runpy, sys
import importlib
# Preloaded once and shared by every forked child (transformers and peft import most modules lazily).
for m in ("torch", "pandas", "sklearn.metrics", "transformers", "peft", "peft.tuners.lora", "tokenizers",
          "transformers.models.bert.modeling_bert", "transformers.models.bert.tokenization_bert",
          "transformers.models.roberta.modeling_roberta", "transformers.models.gpt2.modeling_gpt2",
          "loraclf.cli.main", "loraclf.training.loop", "loraclf.modeling.plan", "loraclf.inference.run", "loraclf.inference.predict", "loraclf.modeling.defaults"):
    importlib.import_module(m)
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401
jobs = json.loads(sys.stdin.read())
codes = {}
running = {}
def reap():
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
for name, args, out_file, err_file in jobs:
    while len(running) >= 2:
        reap()
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, out_file), (2, err_file)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = ["loraclf", *args]
        code = 0
        try:
            runpy.run_module("loraclf", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    running[pid] = name
while running:
    reap()
print(json.dumps(codes))
"""


def run_cli_forked(jobs: dict[str, list[str]], workdir: Path, timeout: float = 600) -> dict[str, CliResult]:
    """Run several ``loraclf`` commands, each in its own forked process; returns their exit codes and output."""
    import json

    payload = []
    for name, args in jobs.items():
        payload.append(
            [name, [str(a) for a in args], str(workdir / f"{name}.out"), str(workdir / f"{name}.err")]
        )
    proc = subprocess.run(
        [sys.executable, "-c", _ZYGOTE],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        name: CliResult(
            codes[name],
            (workdir / f"{name}.out").read_text(encoding="utf-8"),
            (workdir / f"{name}.err").read_text(encoding="utf-8"),
        )
        for name in jobs
    }


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.returncode, self.stdout, self.stderr = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.returncode}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


def run_cli(*args) -> CliResult:
    """``loraclf.cli.main.main(ARGS)`` in this process (no interpreter start-up), capturing stdout and stderr."""
    from loraclf.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


# --- interrupting a run in this process, as Ctrl-C or a scheduler's SIGTERM does ---------------------------------


def signal_at(monkeypatch, step: int, signum: int = signal.SIGINT, where: str = "accumulate") -> None:
    """Send ``signum`` to this process (as Ctrl-C or a scheduler's SIGTERM does) during optimizer step ``step + 1``.

    ``where="accumulate"``: once its micro-batches ran forward and backward, drawing their dropout masks (the
    interruption takes effect at once; the checkpoint is the boundary after step ``step``). ``where="update"``: inside the step's update, where
    signals wait for the update to land (the checkpoint is the boundary after step ``step + 1``).
    """
    from loraclf.training import steps

    name = "accumulate" if where == "accumulate" else "optimizer_step"
    real, calls = getattr(steps, name), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] != step + 1:
            return real(*args, **kwargs)
        if where == "accumulate":  # after the micro-batches drew their dropout masks, before the update
            out = real(*args, **kwargs)
            os.kill(os.getpid(), signum)
            return out
        os.kill(os.getpid(), signum)  # inside the update: the signal waits for it to land
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, name, patched)


def signal_in(monkeypatch, target: str, signum: int = signal.SIGINT, nth: int = 1) -> None:
    """Send ``signum`` to this process on call ``nth`` of ``module:function`` (a phase of the run), before it runs."""
    import importlib

    module_name, name = target.split(":")
    owner = importlib.import_module(module_name)
    cls, _, attr = name.partition(".")
    holder = getattr(owner, cls) if attr else owner
    real, calls = getattr(holder, attr or name), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(holder, attr or name, patched)
