"""The recipe schema: typed dataclasses holding every setting of a run, each documented once.

A recipe is the single source of truth for a run. It is read from YAML (``--config``), patched by CLI flags and
``key.sub=value`` overrides (:mod:`loraclf.config.io`), checked (:mod:`loraclf.config.validate`) and written back
into the run folder as ``recipe.yaml``, so that a run can be repeated or resumed from its folder alone. Each field
is declared with :func:`opt`: its default, its one-line help (shown by ``loraclf train --help``) and, for the few
settings that have one, its command-line flag (:mod:`loraclf.config.flags` derives the CLI from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1


def opt(
    default: Any, help: str, flag: str | None = None, commands: tuple[str, ...] = ("plan", "train")
) -> Any:
    """A recipe field with its one-line documentation (shown by `loraclf train --help`).

    ``flag`` makes the field a command-line shortcut (``--rank`` for ``adapter.r``) on ``commands``; the CLI
    derives the flag's type and help from here (see ``loraclf.cli.args``), so a setting is documented once.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "commands": commands})


def opt_factory(factory: Any, help: str) -> Any:
    return field(default_factory=factory, metadata={"help": help})


@dataclass
class CleanConfig:
    """Text cleaning, applied identically at training, evaluation and prediction time."""

    html: bool = opt(True, 'decode HTML entities, including AG News\' bare forms such as "#39;" and "quot;"')
    escapes: bool = opt(True, 'backslash escapes ("\\n", "\\") become spaces')
    whitespace: bool = opt(True, "tabs, CR and runs of spaces collapse to one space")
    punctuation: bool = opt(
        False,
        'undo tokenised spacing: "word , word ( Reuters )" becomes "word, word (Reuters)" (matters for BPE '
        "tokenizers such as RoBERTa's and GPT-2's; WordPiece splits punctuation anyway)",
    )
    urls: bool = opt(False, "drop URLs")
    emails: bool = opt(False, "drop e-mail addresses")
    source_tags: bool = opt(False, 'drop agency tags such as "(Reuters)" or "AFP -"')
    digits: bool = opt(False, "drop digits")
    lowercase: bool = opt(False, "lower-case (uncased tokenizers do this anyway)")


@dataclass
class FilterConfig:
    """Length / vocabulary-richness filter on the training rows (off when every bound is null)."""

    min_words: int | None = opt(None, "drop training rows with fewer words")
    max_words: int | None = opt(None, "drop training rows with more words")
    min_unique_ratio: float | None = opt(
        None, "drop training rows whose distinct/total word ratio is lower (one report used 0.70)"
    )


@dataclass
class DataConfig:
    """Where texts and labels come from and how they are prepared."""

    text_column: str = opt("text", "used when present; otherwise title_column + join + description_column")
    title_column: str = opt("title", "title column, joined with the description when there is no text column")
    description_column: str = opt("description", "description column")
    join: str = opt(" ", "between title and description, as the Hugging Face AG News does")
    label_column: str = opt("label", "label column (ints or strings)")
    id_column: str = opt("id", "used for prediction IDs when present, else the row index")
    header: bool = opt(
        True,
        "CSV/TSV: the first row names the columns; false reads every row as data (names from data.columns)",
    )
    columns: list[str] | None = opt(
        None, "CSV/TSV without a header row: column names in file order, e.g. label,title,description"
    )
    delimiter: str | None = opt(
        None, "CSV/TSV field separator: , ; tab | (or any one character); null detects it from the first line"
    )
    encoding: str | None = opt(
        None,
        "text encoding of files that are not UTF-8, any Python codec (e.g. cp1252, latin-1); null reads UTF-8, "
        "or UTF-16/32 when the file starts with its byte-order mark",
    )
    val_size: float = opt(
        0.1, "stratified validation split when no eval file: a fraction (<1) or a row count (>=1)"
    )
    max_length: int | None = opt(
        None, "tokens; None chooses the length covering `length_quantile` of training texts"
    )
    length_quantile: float = opt(
        0.995, "share of training texts max_length must cover when chosen automatically"
    )
    truncation_side: str = opt("right", "right | left")
    max_train_samples: int | None = opt(
        None,
        "stratified random sample of the training rows, drawn with the seed",
        "--max-train-samples",
        ("train",),
    )
    label_names: list[str] | None = opt(
        None,
        "display names of numeric labels in label order (e.g. [World, Sports, Business, Sci/Tech] for 0-3); "
        "reports show them instead of the numbers",
    )
    clean: CleanConfig = opt_factory(CleanConfig, "text cleaning")
    filter: FilterConfig = opt_factory(FilterConfig, "length / vocabulary-richness filter on training rows")


@dataclass
class ModelConfig:
    """Backbone and head."""

    name: str = opt(
        "minilm",
        "offline alias (minilm, mpnet-base), Hugging Face hub id, or a local model folder",
        "--model",
    )
    head: str = opt(
        "default", "default (the model's own) | mlp (hidden→hidden, ReLU, dropout→classes) | linear", "--head"
    )
    pooling: str = opt(
        "auto", "for mlp/linear heads: cls | mean | last; auto = last for causal LMs, else mean"
    )
    head_dropout: float = opt(0.1, "dropout inside mlp/linear heads")
    dropout: float | None = opt(
        None, "overrides the backbone's hidden/attention dropout (0 speeds CPU training)"
    )
    attention: str = opt("auto", "auto | eager | sdpa")
    revision: str | None = opt(None, "hub revision for hub ids")


@dataclass
class AdapterConfig:
    """Which parameters train: LoRA adapters, the head only, or everything."""

    method: str = opt(
        "lora",
        "adaptation method registered in loraclf.modeling.methods: lora, dora, …, head (feature extraction), full "
        "(full fine-tuning); `loraclf train --help` lists them all, docs/guides/methods.md describes them",
        "--method",
    )
    targets: list[str] | None = opt(
        None,
        "module names, comma separated (query,value; q,v; c_attn) or attention/mlp/all-linear; null = the "
        "method's default for the architecture (LoRA: query/value)",
        "--targets",
    )
    r: int = opt(
        8,
        "rank of the methods that take one (LoRA's r, AdaLoRA's initial rank; the methods table says which)",
        "--rank",
    )
    alpha: float | None = opt(None, "LoRA alpha; None = 2 * r", "--alpha")
    dropout: float = opt(0.1, "LoRA dropout on the adapter input")
    bias: str = opt("none", "none | all | lora_only", "--bias")
    layer_ranks: list[int] | str | None = opt(
        None, "per-layer ranks: 8,8,16,… or an expression in i such as '8*2**(i//4)'", "--layer-ranks"
    )
    layer_alphas: list[float] | str | None = opt(None, "per-layer alphas, list or expression in i and r")
    layers: list[int] | None = opt(None, "which layers to adapt (default: all)")
    rslora: bool = opt(False, "LoRA/DoRA: scale updates by alpha/sqrt(r) instead of alpha/r (rsLoRA)")
    init: bool | str = opt(
        True, "LoRA/DoRA init_lora_weights: true | gaussian | pissa | pissa_niter_N | olora | orthogonal"
    )
    target_rank: int | None = opt(None, "AdaLoRA's final average rank; null = half of adapter.r (at least 1)")
    virtual_tokens: int = opt(20, "prompt/prefix tuning: number of virtual tokens", "--virtual-tokens")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: float = opt(3.0, "passes over the training rows (fractions allowed)", "--epochs", ("train",))
    max_steps: int | None = opt(None, "overrides epochs when set")
    time_budget: float | str | None = opt(
        None,
        "the whole command's time: seconds or a duration (90s, 8m, 1h30m); a timed warm-up plans the steps, "
        "evaluations and rows that fit (train.epochs and train.max_steps stay ceilings) and run.json's "
        "time_plan records the plan, which train.max_steps and the other keys it lists reproduce without timing",
        "--time-budget",
        ("train",),
    )
    replans: list[int] | None = opt(
        None,
        "written by a time-budgeted run that fell behind its plan: [step, new total, ...]; at each step the run "
        "was cut to the new total and the learning rate decays linearly from there to 0 (reproduces that run)",
    )
    batch_size: int = opt(32, "training rows per batch")
    eval_batch_size: int = opt(
        128, "rows per batch at evaluation and prediction (PyTorch on a CPU: at most 32, measured faster)"
    )
    lr: float = opt(5e-4, "peak AdamW learning rate")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = opt(0.06, "share of steps with linear warmup")
    warmup_steps: int | None = opt(None, "overrides warmup_ratio when set")
    scheduler: str = opt("linear", "linear | cosine | polynomial | constant")
    grad_accum: int = opt(1, "batches accumulated per optimizer step")
    max_grad_norm: float | None = opt(1.0, "gradient clipping norm; null disables")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy")
    class_weights: str = opt("none", "none | balanced (weight classes by inverse frequency in the loss)")
    loraplus_lr_ratio: float | None = opt(
        None,
        "LoRA+: the B matrices learn at lr times this ratio (LoRA/DoRA only; 16 in the paper); null = off",
    )
    rdrop: float = opt(0.0, "R-Drop weight: KL between two dropout passes (0 = off; doubles forward cost)")
    swa_start: float | None = opt(
        None,
        "stochastic weight averaging: from this share of the steps on (0.06 = after a 6% warmup), evaluations score "
        "and keep the running mean of the trainable weights of every step (Izmailov et al. 2018); null = off",
    )
    precision: str = opt("auto", "auto (bf16 where the device supports it) | bf16 | fp16 | fp32")
    seed: int = opt(42, "seed of initialisation, data order, splits and sampling", "--seed", ("train",))
    eval_every: int | None = opt(None, "optimizer steps between evaluations; None = once per epoch")
    metric: str = opt(
        "accuracy", "accuracy | macro_f1 | loss: selects the best checkpoint (ties: lower loss)"
    )
    early_stopping: int | None = opt(None, "evaluations without improvement before stopping")
    save_every: int | None = opt(
        None,
        "optimizer steps between resumable checkpoints; None = at each evaluation",
        "--save-every",
        ("train",),
    )
    save_every_minutes: float | None = opt(
        10.0,
        "also write a resumable checkpoint when this many minutes passed since the last one (a stopped run "
        "loses at most about this much work); null = by steps only",
    )
    keep_checkpoints: int = opt(2, "resumable checkpoints kept (the newest is never pruned)")
    group_by_length: bool = opt(True, "length-grouped batches with dynamic padding")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps")
    threads: int | None = opt(None, "torch intra-op threads on CPU")
    compile: bool = opt(False, "torch.compile the model (dynamic shapes)")
    gradient_checkpointing: bool = opt(
        False, "recompute block activations in backward: less memory for about a third more compute"
    )
    cache_frozen: bool = opt(
        True,
        "adapters from layer k up: run layers below k once and reuse their output each epoch (dropout off there)",
    )
    progress: bool = opt(True, "progress bars (--quiet turns them off)")
    tensorboard: bool = opt(
        False, "also write TensorBoard event files to <run>/tensorboard (needs tensorboard)"
    )


@dataclass
class DistillConfig:
    """Knowledge distillation from finished runs (teachers) into this run (the student)."""

    teachers: list[str] = opt_factory(list, "run folders of teacher models; empty = no distillation")
    temperature: float = opt(2.0, "softmax temperature T of teacher and student")
    alpha: float = opt(0.5, "weight of the distillation term; 1 - alpha weighs the cross-entropy")


@dataclass
class Recipe:
    """A complete, resolved description of one run."""

    model: ModelConfig = opt_factory(ModelConfig, "backbone and head")
    adapter: AdapterConfig = opt_factory(AdapterConfig, "what trains")
    data: DataConfig = opt_factory(DataConfig, "data preparation")
    train: TrainConfig = opt_factory(TrainConfig, "optimisation")
    distill: DistillConfig = opt_factory(DistillConfig, "distillation from teacher runs")
    budget: int | None = opt(None, "refuse recipes with more trainable parameters than this", "--budget")
    description: str = opt("", "free text shown in run listings")


CHOICES = {
    "model.head": ("default", "mlp", "linear"),
    "model.pooling": ("auto", "cls", "mean", "last"),
    "model.attention": ("auto", "eager", "sdpa"),
    "adapter.bias": ("none", "all", "lora_only"),
    "data.truncation_side": ("right", "left"),
    "train.scheduler": ("linear", "cosine", "polynomial", "constant"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "train.metric": ("accuracy", "macro_f1", "loss"),
    "train.class_weights": ("none", "balanced"),
}
