"""Where and how tensors are computed: the device and the autocast precision.

Shared by training and inference, so it imports neither: ``import nmt.inference`` must not pull
in the trainer (and TensorBoard) just to choose a device.

Precision (``trainer.precision``, ``search.precision``): ``fp32``; ``bf16`` or ``fp16``, mixed
precision through ``torch.autocast`` (matrix products in the low precision, the attention
softmax, the scores' log-softmax and the loss in fp32, weights and optimiser state in fp32);
``auto`` resolves per device with :func:`resolve_precision`: bf16 on a CPU with bf16 matrix
instructions (AMX-BF16 or AVX512-BF16) or on a CUDA device that supports bf16, else fp32.
fp16 runs on CUDA only (it needs loss scaling; CPUs without fp16 matrix units gain nothing).

Memory (``trainer.keep_freed_memory``): :func:`keep_freed_memory` has glibc's malloc reuse freed
blocks instead of handing them back to the kernel, so a training step's large tensors do not
page-fault afresh every step.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.errors import NMTError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU flags (as /proc/cpuinfo spells them) whose bf16 matrix units make bf16 autocast faster
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


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


# --------------------------------------------------------------------------------------------
# What the CPU can do


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first ``flags`` line of a ``/proc/cpuinfo`` text (x86 Linux)."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags: ``/proc/cpuinfo`` on Linux, else torch's own CPU probe
    (``torch.cpu.get_capabilities()``, the same names for the bf16 flags)."""
    try:
        flags = parse_cpu_flags(CPUINFO.read_text())
    except OSError:
        flags = frozenset()
    if flags:
        return flags
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return frozenset(name for name, value in capabilities.items() if value is True)


def bf16_cpu_flags(flags: frozenset[str] | None = None) -> list[str]:
    """Which of :data:`BF16_CPU_FLAGS` the CPU has (``flags``: this CPU's by default)."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


# --------------------------------------------------------------------------------------------
# Precision


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is fp32, bf16 or fp16; ``reason`` says why, for the log."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


def resolve_precision(
    precision: str,
    device: torch.device,
    key: str = "trainer.precision",
    flags: frozenset[str] | None = None,
) -> Precision:
    """``auto`` → bf16 where the device computes bf16 products fast, else fp32; the others
    checked against the device.  ``flags`` (tests): CPU flags instead of this CPU's."""
    if precision not in PRECISIONS:
        raise NMTError(f"{key}: expected one of {', '.join(PRECISIONS)}; got {precision!r}")
    if device.type == "cuda":
        if precision != "auto":
            return Precision(precision, f"{key}={precision}")
        # measured on an H200: the default model is latency-bound, and bf16 trained slower
        # (25,732 vs 30,830 tokens/s, docs/benchmarks.md), so auto keeps fp32 on GPUs
        return Precision("fp32", f"{key}=auto: fp32 on CUDA (bf16 is trainer.precision=bf16)")
    if precision == "fp16":
        raise NMTError(f"{key}=fp16 needs CUDA; use bf16 or fp32 on {device.type}")
    if device.type != "cpu":
        if precision == "bf16":
            raise NMTError(f"{key}=bf16 runs on cpu or cuda; use fp32 on {device.type}")
        return Precision("fp32", f"{key}={precision} on {device.type}")
    found = bf16_cpu_flags(flags)
    have = f"the CPU has {', '.join(found)}" if found else f"no {' or '.join(BF16_CPU_FLAGS)}"
    if precision == "auto":
        if found:
            return Precision("bf16", f"{key}=auto: {have}")
        return Precision("fp32", f"{key}=auto: {have} on this CPU (bf16 would be emulated)")
    if precision == "bf16" and not found:
        return Precision("bf16", f"{key}=bf16 ({have}: emulated bf16, slower than fp32)")
    return Precision(precision, f"{key}={precision}")


def autocast_context(
    precision: str | Precision, device: torch.device, key: str = "trainer.precision"
) -> AbstractContextManager:
    """``torch.autocast`` for a low precision on ``device``; a no-op for fp32.

    ``precision`` is a config value (resolved here, ``auto`` included) or a :class:`Precision`.
    Under it the matrix products run in bf16/fp16 while the model keeps the attention softmax,
    the loss and the search's log-softmax in fp32 (they cast with ``.float()``).
    """
    if not isinstance(precision, Precision):
        precision = resolve_precision(precision, device, key)
    if precision.name == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)


# --------------------------------------------------------------------------------------------
# Memory

# mallopt(3) parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # bytes: the largest an int holds; the heap is, in effect, never trimmed


def keep_freed_memory(device: torch.device) -> str:
    """Have glibc's malloc keep freed memory for reuse when ``device`` is the CPU; returns
    what was done, for the log (``trainer.keep_freed_memory``: the trainer and the benchmark).

    glibc serves every block above its mmap threshold (32 MiB at most) with a fresh ``mmap``
    and unmaps it again on ``free``.  A training step's logits and their gradient are such
    blocks (4,000 target tokens × 8,000 subwords × 4 bytes = 122 MiB each), so every step
    page-faults them in anew: 30,800 faults per tensor, 62–76 ms on this project's 2-core VMs
    against 8–16 ms for the subtraction that fills it (the loss gradient).  With mmap off
    (``M_MMAP_MAX=0``) and trimming off, large blocks come from the heap and the next step
    reuses what the previous one freed: what PyTorch's CPU tuning guide gets by preloading
    jemalloc or tcmalloc, without a preload.  The cost: the process keeps its peak heap until
    it exits, and glibc's bins are not size classes (c10 asks ``posix_memalign`` for 64 bytes
    more than a tensor, so a block freed between live small ones does not hold the same size
    again, only smaller).  Measured: the reference model's peak RSS did not grow (benchmark:
    1,740–1,809 MiB with, 1,747–1,765 without), and over 200 training steps its RSS stayed at
    1,513–1,516 MiB.  Process-wide and once per process; elsewhere than glibc nothing changes.
    """
    if device.type != "cpu":
        return f"unchanged (trainer.keep_freed_memory is for the CPU; device {device})"
    return _malloc_keeps_freed_memory()


@functools.cache
def _malloc_keeps_freed_memory() -> str:
    """The ``mallopt`` calls of :func:`keep_freed_memory`, once per process."""
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        return f"unchanged (the C library is {libc_name or 'not glibc'}, no mallopt)"
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "unchanged (glibc refused mallopt)"
    return "freed blocks kept for reuse (glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
