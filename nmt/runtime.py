"""Where and how tensors are computed: the device and the autocast precision.

Shared by training and inference, so it imports neither: ``import nmt.inference`` must not pull
in the trainer (and TensorBoard) just to choose a device.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from nmt.errors import NMTError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(name: str | torch.device, key: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cpu``/``cuda`` as given (checked).

    ``key`` is the config key or argument named in the error (``trainer.device``, ``device``).
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NMTError(f"{key}=cuda, but no CUDA device is available; use auto or cpu")
    if name not in ("cpu", "cuda"):
        raise NMTError(f"{key}: expected auto, cpu or cuda; got {name!r}")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    if precision not in ("bf16", "fp16"):
        raise NMTError(f"trainer.precision: expected fp32, bf16 or fp16; got {precision!r}")
    if device.type != "cuda":
        raise NMTError(f"trainer.precision={precision} needs CUDA; use fp32 on {device.type}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)
