"""loraclf: budget-exact LoRA fine-tuning of transformer text classifiers.

import loraclf
run = loraclf.load("runs/agnews")
run.predict(["Stocks rallied after the Fed held rates."])
"""

from loraclf.utils.version import __version__


def load(path, device: str = "auto", precision: str = "auto", calibration: bool = True):
    """Load a finished run folder for prediction (see :class:`loraclf.inference.run.Run`).

    ``precision="auto"`` predicts in int8 through ONNX Runtime on a CPU (``"bf16"`` or ``"fp32"`` for PyTorch).
    ``calibration=False`` gives the raw softmax instead of the run's temperature-scaled probabilities.
    """
    from loraclf.inference.run import load as _load

    return _load(path, device=device, precision=precision, calibration=calibration)


__all__ = ["__version__", "load"]
