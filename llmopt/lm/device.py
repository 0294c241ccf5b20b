"""Where a language model runs and in which float type: device and dtype choice, native bf16
detection, and the memory left for a model."""

from __future__ import annotations

import functools
import os

import torch

from llmopt.errors import Fix, LlmoptError

# the float types a model may be loaded in or compressed to, by their CLI names (the one map)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DEVICES = ("auto", "cpu", "cuda")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX-BF16, Arm BF16).

    Without it torch emulates bf16 through fp32 and runs slower than fp32, so ``auto`` picks
    bf16 on a CPU only when this is true.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return bf16_in_cpuinfo(f.read())
    except OSError:
        return False


def bf16_in_cpuinfo(text: str) -> bool:
    """Whether a /proc/cpuinfo text lists a native bf16 instruction set on its first CPU."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is refused.

    Raises:
        LlmoptError: an unknown device name, or ``cuda`` on a machine without CUDA.
    """
    if device not in DEVICES:
        raise LlmoptError(f"device {device!r} is not one of: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise LlmoptError(
            "device 'cuda' was asked for, but torch sees no CUDA GPU on this machine",
            fix=Fix(cli="pass --device cpu (or auto)", app="choose the CPU device"),
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, checkpoint_dtype: torch.dtype | None) -> str:
    """The float type a model runs in: ``fp32``, ``bf16`` or ``fp16``.

    ``auto``: the checkpoint's own float type on CUDA (fp32 if it does not say), bf16 on a CPU
    with native bf16, else fp32.

    Raises:
        LlmoptError: an unknown dtype name.
    """
    if dtype != "auto" and dtype not in DTYPES:
        raise LlmoptError(f"dtype {dtype!r} is not one of: auto, {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return DTYPE_NAMES.get(checkpoint_dtype, "fp32")
    return "bf16" if native_bf16() else "fp32"


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a float type: ``fp32``/``bf16``/``fp16``, else torch's own name
    (``float64``), so a model in any float type can be labelled."""
    return DTYPE_NAMES.get(dtype) or str(dtype).removeprefix("torch.")


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new model on ``device`` (CUDA: free device memory; CPU: the kernel's
    MemAvailable), or None where it cannot be known."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (all of ours live on one device)."""
    return next(model.parameters()).device


def fuse_gelu(model: torch.nn.Module) -> int:
    """Swap transformers' ``NewGELUActivation`` (GPT-2's ``gelu_new``: five element-wise passes
    in Python) for ``GELUTanh`` (torch's one fused ``gelu(approximate="tanh")``), in place.

    Both compute 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); they differ only in float
    rounding (~1e-7 relative). The config is left as it is, so a saved model is unchanged.
    Measured by ``bench/lm.py``: about 6% of a 12 × 768 GPT-2's forward time went to the
    unfused activation. Returns how many modules were swapped.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped
