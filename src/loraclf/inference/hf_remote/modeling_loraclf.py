"""A loraclf classifier with a pooled head, as a transformers model: this file travels with an exported folder.

loraclf's ``mlp`` and ``linear`` heads sit on a bare encoder or decoder (the "backbone"): they pool its last
hidden states into one vector per text and classify that vector. No transformers class does exactly this, so
``loraclf export`` copies this file into the folder and registers it in ``config.json``'s ``auto_map``; then

    from transformers import AutoModelForSequenceClassification, pipeline
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    clf = pipeline("text-classification", model=folder, trust_remote_code=True)

load the classifier with nothing but torch and transformers (offline too: the folder is local). The weights are
those ``loraclf predict`` uses, with the LoRA update already merged into the backbone, so the class probabilities
agree with it to float rounding for the same token ids (loraclf also cleans texts first, ``data.clean`` in the run's
recipe; feed the same cleaned text for identical answers).

The model, for hidden states ``H`` (batch × tokens × hidden) and attention mask ``m``:

* pooling ``mean``: ``sum_t m_t·H_t / sum_t m_t``; ``cls``: ``H_0``; ``last``: ``H`` at the last position whose mask
  is 1 (for causal models, where only the last token has seen the whole text; padding on either side works);
* head ``mlp``: ``Linear(hidden, hidden) → ReLU → Linear(hidden, labels)``; ``linear``: ``Linear(hidden, labels)``
  (the dropout layers loraclf trained with are kept, inactive in eval mode, so parameter names match:
  ``head.1`` and ``head.4`` for mlp, ``head.1`` for linear).

``config.json`` holds the backbone's own config under ``backbone`` (with its ``model_type``), the head spec
(``head``, ``pooling``, ``head_dropout``) and the training file's labels in ``id2label``/``label2id``.
This module must import nothing but torch and transformers: it runs where loraclf is not installed.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class LoraclfConfig(PretrainedConfig):
    """The backbone's config (as a dict, under ``backbone``) plus loraclf's head spec.

    Args:
        backbone: the backbone config's ``to_dict()``, including ``model_type``.
        head: ``mlp`` or ``linear``.
        pooling: ``mean``, ``cls`` or ``last``.
        head_dropout: dropout rate inside the head (inactive at inference).
        **kwargs: the usual ``PretrainedConfig`` arguments (``id2label``, ``label2id``, …).
    """

    model_type = "loraclf"

    def __init__(self, backbone=None, head="mlp", pooling="mean", head_dropout=0.1, **kwargs):
        # Plain JSON under one key: any backbone type round-trips through config.json unchanged.
        self.backbone = dict(backbone or {})
        self.head = head
        self.pooling = pooling
        self.head_dropout = head_dropout
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        """The backbone's own config object, rebuilt from ``backbone``."""
        data = dict(self.backbone)
        model_type = data.pop("model_type")
        for key in ("transformers_version", "architectures", "id2label", "label2id", "auto_map"):
            data.pop(key, None)  # metadata of the saved backbone, not architecture
        return AutoConfig.for_model(model_type, **data)


def pool(states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per row of ``states`` (batch × tokens × hidden): see the module docstring."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last":
        # Last position whose mask is 1, counted from the right: right or left padding alike.
        width = attention_mask.size(1)
        last = width - 1 - attention_mask.flip(1).to(torch.long).argmax(1)
        return states[torch.arange(states.size(0), device=states.device), last]
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class LoraclfForSequenceClassification(PreTrainedModel):
    """Backbone → pooling → head; returns logits (and a cross-entropy loss when ``labels`` are given)."""

    config_class = LoraclfConfig
    base_model_prefix = "backbone"

    def __init__(self, config: LoraclfConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config())
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None  # BERT's pooler is never used by these heads (loraclf dropped it too)
        hidden = self.backbone.config.hidden_size
        p = config.head_dropout
        if config.head == "mlp":
            layers = [nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p)]
            self.head = nn.Sequential(*layers, nn.Linear(hidden, config.num_labels))
        elif config.head == "linear":
            self.head = nn.Sequential(nn.Dropout(p), nn.Linear(hidden, config.num_labels))
        else:
            raise ValueError(f"config.head must be 'mlp' or 'linear', got {config.head!r}")
        if config.pooling not in ("mean", "cls", "last"):
            raise ValueError(f"config.pooling must be 'mean', 'cls' or 'last', got {config.pooling!r}")
        self.post_init()

    def _init_weights(self, module):
        # Only weights missing from a checkpoint are initialised here; an exported folder has them all.
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if module.bias is not None:
                module.bias.data.zero_()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        return_dict=None,
        **kwargs,
    ):
        """Logits over ``config.id2label``; with ``labels``, also the mean cross-entropy.

        ``token_type_ids`` is accepted and ignored: loraclf trains on ids and mask alone (BERT-like models then
        use all-zero segment ids; GPT-2 would add token_type_ids to its token embeddings, which training never did).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        logits = self.head(pool(out.last_hidden_state, attention_mask, self.config.pooling))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
