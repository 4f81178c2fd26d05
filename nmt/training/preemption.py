"""Preemption: a signal ends a training run within one training step or one decoding batch,
with ``last.pt`` written.

SLURM, Kubernetes and spot instances send SIGTERM some seconds before they kill a job (SLURM's
KillWait and Kubernetes' ``terminationGracePeriodSeconds`` are 30 s by default; SLURM can also
send SIGUSR1 ahead of time: ``sbatch --signal=USR1@120``). While
:meth:`nmt.training.trainer.Trainer.fit` runs, the signals named in ``trainer.preempt_signals`` only set a
flag (:class:`SignalFlag`). The training loop looks at it after each optimiser step — under DDP
all ranks agree on it in one all-reduce, so they stop at the same step. The long phases between
steps — validation (the loss batches and the decoding batches), checkpoint averaging, the
end-of-run validation — look at it between their batches through :meth:`SignalFlag.check`,
which raises :class:`PhaseInterrupted`: the phase's partial work is dropped. Either way the
trainer writes ``last.pt`` (rank 0), logs how to continue and raises :class:`Preempted`;
``nmt.train`` then exits with :data:`PREEMPTED_EXIT_STATUS`, which a requeue script can act on
(docs/faults.md). A validation dropped so runs again first thing after the resume.

A second signal while the step finishes or the checkpoint is written is logged and ignored; the
write is atomic (:mod:`nmt.core.io`), so even SIGKILL at that moment leaves the previous ``last.pt``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from nmt.core.errors import NMTError

# EX_TEMPFAIL from sysexits.h, "temporary failure; the user is invited to retry": distinct from
# 0 (done), 1 (a crash), 2 (a user error), 130 (Ctrl-C) and 128+N (killed by signal N).
PREEMPTED_EXIT_STATUS = 75

UNCATCHABLE = ("SIGKILL", "SIGSTOP")


class PhaseInterrupted(Exception):
    """A preemption signal arrived during a long phase (validation, averaging); raised between
    two of its batches, so that the run saves now instead of after the whole phase."""


class Preempted(Exception):
    """The run stopped on a preemption signal after writing ``last.pt``."""

    def __init__(self, signal_name: str, step: int | None):
        where = f"at step {step}" if step is not None else "before training started"
        super().__init__(f"preempted by {signal_name} {where}")
        self.signal_name, self.step = signal_name, step


def exit_preempted(signals: Sequence[int]) -> NoReturn:
    """Exit with :data:`PREEMPTED_EXIT_STATUS`, ignoring ``signals`` from now on (torchrun
    signals the ranks still running when the first one exits)."""
    for number in signals:
        signal.signal(number, signal.SIG_IGN)
    raise SystemExit(PREEMPTED_EXIT_STATUS) from None


def parse_signals(names: Sequence[str] | None, key: str = "trainer.preempt_signals") -> list[int]:
    """Signal numbers for names such as ``SIGTERM`` or ``USR1``; one line for a bad name."""
    if names is None:
        return []
    if isinstance(names, str):
        raise NMTError(
            f"{key}: expected a list of signal names such as [SIGTERM, SIGUSR1]; got {names!r}"
        )
    numbers = []
    for name in names:
        full = (
            str(name).upper() if str(name).upper().startswith("SIG") else f"SIG{str(name).upper()}"
        )
        number = getattr(signal, full, None)
        if not isinstance(number, signal.Signals) or full in UNCATCHABLE:
            raise NMTError(
                f"{key}: {name!r} is not a signal a process can catch here; expected names such "
                "as SIGTERM, SIGUSR1, SIGUSR2, SIGINT"
            )
        numbers.append(int(number))
    return numbers


class SignalFlag:
    """While entered, the given signals set :attr:`received` (the first one's name) instead of
    ending the process — or, with ``immediate``, raise :class:`Preempted` where the program is
    (before training starts, when there is nothing to save); the previous handlers come back on
    exit.

    Handlers can only be installed from the main thread; elsewhere the signals keep their
    default action (a warning says so).
    """

    def __init__(
        self,
        signals: Sequence[int],
        warn: Callable[[str], None] | None = None,
        immediate: bool = False,
    ):
        self.signals, self.immediate = list(signals), immediate
        self.warn = warn or logging.getLogger("nmt").warning
        self.received: str | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> SignalFlag:
        if self.signals and threading.current_thread() is not threading.main_thread():
            self.warn("trainer.preempt_signals: not in the main thread; signals keep their default")
            return self
        for number in self.signals:
            self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def check(self) -> None:
        """Raise :class:`PhaseInterrupted` when a signal has arrived: called between the batches
        of a long phase."""
        if self.received is not None:
            raise PhaseInterrupted(self.received)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.immediate:
            raise Preempted(name, None)
        if self.received is None:
            self.received = name
            self.warn(f"{name} received: finishing this step or batch, then writing last.pt")
        else:
            self.warn(f"{name} received again: ignored while the run saves ({self.received} first)")
