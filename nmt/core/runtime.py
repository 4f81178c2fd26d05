"""Where and how tensors are computed: the device, the CPU and the autocast precision.

Shared by training and inference, so it imports neither: ``import nmt.inference.translator`` must not pull
in the trainer (and TensorBoard) just to choose a device.

Precision (``trainer.precision``, ``search.precision``): ``fp32``; ``bf16`` or ``fp16``, mixed
precision through ``torch.autocast`` (matrix products in the low precision, the attention
softmax, the scores' log-softmax and the loss in fp32, weights and optimiser state in fp32);
``auto`` is fp32 on every device (:func:`resolve_precision`): bf16 changes the numbers, so it is
a choice a user makes, never one the CPU makes for them (docs/precision.md has the measurements).
fp16 runs on CUDA only (it needs loss scaling; CPUs without fp16 matrix units gain nothing).

The CPU (:func:`cpu_flags`, :func:`cpu_summary`): its flags decide whether bf16 is native or
emulated (a reason in the log, the benchmark's bf16 peak); ``NMT_CPU_FLAGS`` replaces them, so
that one machine can run the suite as another kind of CPU would (``NMT_CPU_FLAGS=avx512_bf16``
on an AVX2 runner, ``NMT_CPU_FLAGS=avx2`` on a Zen 4; :data:`CPU_KINDS`).

Memory (``trainer.keep_freed_memory``): :func:`keep_freed_memory` has glibc's malloc reuse freed
blocks instead of handing them back to the kernel, so a training step's large tensors do not
page-fault afresh every step.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.core.errors import NMTError

DEVICES = ("auto", "cpu", "cuda")
DEVICES = ("auto", "cpu", "cuda")  # trainer.device and the decoding commands' device=
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU flags (as /proc/cpuinfo spells them) whose bf16 matrix units make bf16 autocast faster
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")
# NMT_CPU_FLAGS=<a kind below, or flags separated by spaces or commas>: the CPU flags the project
# sees instead of this CPU's (tests and CI run one machine as the other kinds; see cpu_flags)
CPU_FLAGS_ENV = "NMT_CPU_FLAGS"
CPU_KINDS = {
    # AMD Zen 3, Intel before Cooper Lake: bf16 is emulated
    "avx2": frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"}),
    # AMD Zen 4 and later, Intel Cooper Lake: bf16 dot products in AVX-512
    "avx512_bf16": frozenset(
        {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16"}
    ),
    # Intel Sapphire Rapids and later: bf16 matrix tiles
    "amx": frozenset(
        {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16"}
        | {"amx_bf16", "amx_tile", "amx_int8"}
    ),
}


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


def cpu_flags() -> frozenset[str]:
    """The CPU flags the project decides by: ``$NMT_CPU_FLAGS`` when set (a name of
    :data:`CPU_KINDS`, or the flags themselves), else this CPU's (:func:`real_cpu_flags`).

    Read afresh on every call, so a test can set the variable and a subprocess inherits it.
    """
    simulated = os.environ.get(CPU_FLAGS_ENV)
    if simulated is None:
        return real_cpu_flags()
    return simulated_cpu_flags(simulated)


def simulated_cpu_flags(value: str) -> frozenset[str]:
    """The flags ``NMT_CPU_FLAGS=value`` stands for: a kind of :data:`CPU_KINDS`, or a list."""
    value = value.strip()
    if value in CPU_KINDS:
        return CPU_KINDS[value]
    return frozenset(flag for flag in re.split(r"[\s,]+", value) if flag)


@functools.cache
def real_cpu_flags() -> frozenset[str]:
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


@functools.cache
def cpu_model() -> str:
    """The CPU's name (``model name`` in ``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_summary() -> dict[str, object]:
    """What a report records about the CPU: its name, the bf16 flags the project sees, and
    whether ``$NMT_CPU_FLAGS`` simulated them (``simulated``: the variable's value, or None)."""
    return {
        "model": cpu_model(),
        "bf16_flags": bf16_cpu_flags(),
        "simulated": os.environ.get(CPU_FLAGS_ENV),
    }


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
    """``auto`` → fp32 on every device; ``fp32``, ``bf16`` and ``fp16`` checked against the
    device. The reason, for the log and the reports, names the CPU's bf16 units (or their
    absence: bf16 then runs emulated, far slower). ``flags`` (tests): instead of :func:`cpu_flags`.

    Why ``auto`` is not bf16 where the CPU has bf16 units (docs/precision.md): bf16 changes the
    numbers, so with it the same checkpoint and command gave other translations on a Zen 4 than
    on a Zen 3, for no speed in decoding (beam 5 0.99× / 0.71× fp32's on a Zen 4 / an AMX Xeon)
    and 1.13–1.22× / 0.78–1.10× in training at twice the peak memory; a 30-minute bf16 run on
    the Xeon scored 0.92 BLEU below fp32's. A result should not depend on the CPU it ran on.
    """
    if precision not in PRECISIONS:
        raise NMTError(f"{key}: expected one of {', '.join(PRECISIONS)}; got {precision!r}")
    auto = f"{key}=auto: fp32 on every device, so results do not depend on it (bf16: {key}=bf16)"
    if device.type == "cuda":
        return (
            Precision("fp32", auto)
            if precision == "auto"
            else Precision(precision, f"{key}={precision}")
        )
    if precision == "fp16":
        raise NMTError(f"{key}=fp16 needs CUDA; use bf16 or fp32 on {device.type}")
    if device.type != "cpu":
        if precision == "bf16":
            raise NMTError(f"{key}=bf16 runs on cpu or cuda; use fp32 on {device.type}")
        return Precision("fp32", f"{key}={precision} on {device.type}")
    if precision == "auto":
        return Precision("fp32", auto)
    if precision == "fp32":
        return Precision("fp32", f"{key}=fp32")
    found = bf16_cpu_flags(flags)
    if found:
        return Precision("bf16", f"{key}=bf16 (native: the CPU has {', '.join(found)})")
    return Precision(
        "bf16",
        f"{key}=bf16 (no {' or '.join(BF16_CPU_FLAGS)} on this CPU: emulated bf16, slower than fp32)",
    )


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
