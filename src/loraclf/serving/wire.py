"""The wire formats of ``loraclf serve``: request bodies in, label scores out, errors as JSON.

Two request shapes that existing clients already send are accepted on ``POST /predict`` and
``POST /models/{name}/predict``, and may be mixed:

* text-embeddings-inference (TEI): ``{"inputs": "text" | [["t1"], ["t2"]], "raw_scores": bool, "truncate": bool}``.
  A flat list ``["t1", "t2"]`` is also taken as a batch of two texts: TEI reads it as one sentence *pair*, which a
  single-text classifier has no use for, so a pair (an inner list of two texts) is refused instead.
* the Hugging Face text-classification task: ``{"inputs": …, "parameters": {"top_k": int, "function_to_apply":
  "softmax" | "sigmoid" | "none"}}``.

``model`` names the run (its folder's name). The answer for one text is ``[{"label", "score"}, …]`` sorted by score,
highest first; for a list of inputs it is one such list per input, in input order. ``raw_scores`` (or
``function_to_apply: none``) gives the logits instead of probabilities.

Every mistake is an :class:`ApiError`: an HTTP status, a one-line message saying what was wrong and where (which key,
which input), and TEI's ``error_type``, sent as ``{"error": …, "error_type": …}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUNCTIONS = ("softmax", "sigmoid", "none")
KEYS = ("inputs", "model", "raw_scores", "truncate", "parameters")
PARAMETER_KEYS = ("top_k", "function_to_apply")
EXAMPLE = '{"inputs": "some text"}'


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx, or 5xx for the server's own failures), a one-line message,
    TEI's ``error_type`` (Validation, Unauthorized, NotFound, Overloaded, Backend) and extra response headers."""

    def __init__(
        self, status: int, message: str, error_type: str = "Validation", headers: dict | None = None
    ):
        super().__init__(" ".join(str(message).split()))
        self.status = status
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": str(self), "error_type": self.error_type}


@dataclass(frozen=True)
class PredictRequest:
    """A parsed prediction request.

    Attributes:
        texts: The input texts, in order.
        batch: Whether the answer is a list per input (``inputs`` was a list) or one list (``inputs`` was a text).
        model: The run asked for, or None when the request names none.
        function: ``softmax``, ``sigmoid`` or ``none`` (raw logits).
        top_k: How many labels each answer keeps (None: all).
        truncate: Whether over-long texts are cut as the run was trained (else they are refused with 413).
    """

    texts: list[str]
    batch: bool
    model: str | None
    function: str
    top_k: int | None
    truncate: bool


def _kind(value) -> str:
    """A JSON value's kind, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    return "a list" if isinstance(value, list) else "an object"


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"'{key}' must be true or false, got {_kind(value)}")
    return value


def _texts(inputs) -> tuple[list[str], bool]:
    """The texts of ``inputs`` and whether it was a batch."""
    if isinstance(inputs, str):
        return [inputs], False
    if not isinstance(inputs, list):
        raise ApiError(
            422, f"'inputs' must be a text or a list of texts, got {_kind(inputs)}; send e.g. {EXAMPLE}"
        )
    if not inputs:
        raise ApiError(422, "'inputs' is an empty list; send at least one text")
    texts = []
    for i, item in enumerate(inputs):
        if isinstance(item, list) and len(item) == 1:
            item = item[0]  # TEI's batch form: [["t1"], ["t2"]]
        elif isinstance(item, list):
            raise ApiError(
                422,
                f"inputs[{i}] is a list of {len(item)} texts; sentence pairs are not supported, send one text "
                'per input: [["t1"], ["t2"]] or ["t1", "t2"]',
            )
        if not isinstance(item, str):
            raise ApiError(422, f"inputs[{i}] must be a text, got {_kind(item)}")
        texts.append(item)
    return texts, True


def _parameters(body: dict) -> tuple[str | None, int | None]:
    """``function_to_apply`` and ``top_k`` of the Hugging Face shape's ``parameters`` object."""
    params = body.get("parameters")
    if params is None:
        return None, None
    if not isinstance(params, dict):
        raise ApiError(422, f"'parameters' must be an object, got {_kind(params)}")
    unknown = [k for k in params if k not in PARAMETER_KEYS]
    if unknown:
        raise ApiError(422, f"unknown key 'parameters.{unknown[0]}'; allowed: {', '.join(PARAMETER_KEYS)}")
    function, top_k = params.get("function_to_apply"), params.get("top_k")
    if function is not None and function not in FUNCTIONS:
        raise ApiError(
            422, f"'parameters.function_to_apply' must be one of {', '.join(FUNCTIONS)}, got {function!r}"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ApiError(422, f"'parameters.top_k' must be a whole number of at least 1, got {top_k!r}")
    return function, top_k


def parse_predict(body, path_model: str | None = None) -> PredictRequest:
    """Check a decoded JSON body and return what it asks for.

    Args:
        body: The decoded JSON value.
        path_model: The run named in the URL (``/models/{name}/predict``), if any.

    Raises:
        ApiError: 422 naming the key or input at fault.
    """
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object such as {EXAMPLE}, got {_kind(body)}")
    unknown = [k for k in body if k not in KEYS]
    if unknown:
        raise ApiError(422, f"unknown key '{unknown[0]}'; allowed: {', '.join(KEYS)}")
    if "inputs" not in body:
        raise ApiError(422, f"the body has no 'inputs'; send e.g. {EXAMPLE}")
    texts, batch = _texts(body["inputs"])
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, f"'model' must be a run name (a text), got {_kind(model)}")
    if path_model is not None and model is not None and model != path_model:
        raise ApiError(422, f"'model' is '{model}' but the URL names '{path_model}'; name one run")
    raw = _flag(body, "raw_scores", False)
    function, top_k = _parameters(body)
    if raw and function not in (None, "none"):
        raise ApiError(
            422, f"'raw_scores' true asks for logits, 'parameters.function_to_apply' for {function}"
        )
    function = "none" if raw else (function or "softmax")
    return PredictRequest(texts, batch, path_model or model, function, top_k, _flag(body, "truncate", True))


def scores(logits: np.ndarray, function: str) -> np.ndarray:
    """Scores from logits of shape (rows, classes): softmax probabilities, per-class sigmoids or the logits."""
    logits = np.asarray(logits, dtype=np.float64)
    if function == "none":
        return logits
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def answer(request: PredictRequest, logits: np.ndarray, labels: list) -> list:
    """The response body: per input, ``[{"label", "score"}, …]`` sorted by score (highest first), ``top_k`` kept.

    Labels are the run's own (``labels.json``), as text.
    """
    table = scores(logits, request.function)
    keep = request.top_k or len(labels)
    out = []
    for row in table:
        order = np.argsort(-row, kind="stable")[:keep]
        out.append([{"label": str(labels[j]), "score": float(row[j])} for j in order])
    return out if request.batch else out[0]
