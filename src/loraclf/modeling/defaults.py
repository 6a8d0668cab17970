"""Good default recipes when no ``--config`` is given.

Target modules differ by architecture (BERT/RoBERTa ``query``/``value``, MPNet ``q``/``v``, DeBERTa ``query_proj``,
GPT-2 ``c_attn``), so the default adapter is chosen from the model type. The offline CPU models get the settings
measured fastest on a CPU at equal accuracy (see benchmarks/README.md): mean pooling with an MLP head (the
sentence-transformer checkpoints were trained with mean pooling), base and adapter dropout off (LoRA's dropout masks
cost about a quarter of the training speed on a 2-core AVX2 CPU: 17.6 against 24.1 samples/s), eager attention.
"""

from __future__ import annotations

from loraclf.config import Recipe
from loraclf.modeling.methods import get_method


def default_recipe(model_name: str, method: str | None = None) -> Recipe:
    """The recipe used when only ``--model`` (and perhaps ``--method``) is given.

    Targets stay null, so each adaptation method takes its own default modules (LoRA: query/value, see
    :data:`loraclf.modeling.methods.lora.QV_TARGETS`); the offline CPU models adapt every linear layer with the
    LoRA family.
    """
    r = Recipe()
    r.model.name = model_name
    if model_name in ("minilm", "mpnet-base"):
        r.model.head = "mlp"
        r.model.pooling = "mean"
        r.model.dropout = 0.0
        r.model.attention = "eager"
        r.adapter.targets = ["all-linear"] if get_method(method or "lora").family == "lora" else None
        r.adapter.r = 8
        r.adapter.alpha = 16
        r.adapter.dropout = 0.0
        r.train.lr = 1e-3 if model_name == "minilm" else 5e-4
        r.train.epochs = 3
        r.train.batch_size = 32
    return r
