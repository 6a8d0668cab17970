"""Devices, numeric precision, threads and the environment record.

``auto`` picks CUDA, then Apple MPS, then the CPU. Precision ``auto`` means bf16 autocast where the hardware has
fast bf16 (CUDA GPUs from Ampere on; CPUs with AMX or AVX-512 BF16), fp16 autocast with loss scaling on older CUDA
GPUs, fp32 elsewhere. Weights and optimizer state stay fp32 in every mode; only matrix products run in low precision.
Inference adds ``int8``: the encoder's matrix products quantised and run by ONNX Runtime on the CPU (inference/onnx_int8.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys

import torch

from loraclf.utils.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(
            f"train.device: '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: '{name}' requested but no CUDA GPU is visible; use train.device=cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"train.device: '{name}' requested but MPS is not available; use train.device=cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 BF16, where oneDNN runs bf16 matrix products natively."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bf16 in hardware (compute capability 8.0 and up: Ampere, Hopper, Ada, Blackwell).

    ``torch.cuda.is_bf16_supported()`` also says yes on T4 and V100 (sm_75, sm_70), where bf16 is emulated: it
    runs, several times slower than fp16 on their tensor cores.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8


def pick_precision(name: str, device: torch.device) -> str:
    """The training (and PyTorch inference) precision: ``auto`` is bf16 where the hardware computes it natively
    (GPUs from Ampere on; CPUs with AMX or AVX-512 BF16), fp16 with loss scaling on older GPUs, else fp32.

    Raises:
        UserError: fp16 asked for on the CPU, or bf16 on a GPU that only emulates it.
    """
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise UserError("train.precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        if name == "bf16" and device.type == "cuda" and not cuda_native_bf16(device):
            raise UserError(
                f"train.precision bf16: {torch.cuda.get_device_name(device)} emulates bf16 (several times slower); "
                "use fp16 (or auto) or fp32"
            )
        return name
    if device.type == "cuda":
        return "bf16" if cuda_native_bf16(device) else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def onnx_available() -> bool:
    """True when onnxruntime and onnx (for the export and quantisation tools) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def pick_inference_precision(name: str, device: torch.device) -> str:
    """Precision of evaluation and prediction: the training choices plus ``int8`` (ONNX Runtime, CPU only).

    ``auto`` picks int8 on the CPU when onnxruntime is installed (about twice as fast as bf16 there, with the same
    accuracy on the tasks measured; see benchmarks/README.md), and what ``pick_precision`` picks elsewhere.
    """
    if name in ("auto", "int8") and device.type == "cpu":
        if onnx_available():
            return "int8"
        if name == "int8":
            raise UserError("--precision int8 needs onnxruntime and onnx: pip install onnxruntime onnx")
    if name == "int8":
        raise UserError(
            f"--precision int8 runs on the CPU (ONNX Runtime), not on {device.type}; add --device cpu"
        )
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"--precision: '{name}' is not a precision; use auto, int8, bf16, fp16 or fp32")
    return pick_precision(name, device)


def autocast(device: torch.device, precision: str):
    """An autocast context for the precision, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def environment(device: torch.device, precision: str) -> dict:
    """Library versions and hardware, recorded in every run folder so results can be traced and repeated."""
    import peft
    import transformers

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_fast_bf16(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
