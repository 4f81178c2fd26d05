"""Faults a run on a shared cluster meets: kill -9, preemption signals, full or read-only disks,
and bad input; each ends in an exact resume or in one line with exit status 2 (docs/faults.md).

The kill tests start ``python -m nmt.train`` as a subprocess, read its progress bar, send the
signal once it passes a randomly drawn step, resume in this process and compare the weights
with a straight run of the same settings.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL, build_trainer, quote, run_main

from nmt.core import io
from nmt.core.errors import NMTError
from nmt.models import checkpoint
from nmt.training import keeper as checkpoint_keeper
from nmt.training import trainer
from nmt.training.distributed import TORCHRUN_VARS
from nmt.training.preemption import PREEMPTED_EXIT_STATUS, Preempted
from nmt.training.trainer import Trainer

MAX_STEPS = 30
RUN = [
    *TINY_MODEL,
    "model/attention=concat",
    "model.attention.hidden_size=16",
    "model.encoder.dropout=0.3",  # resuming must restore the RNG states to match
    "model.decoder.dropout=0.3",
    "optim.warmup_steps=0",
    "trainer.val_max_sentences=2",
    "trainer.num_attention_plots=0",
    "trainer.val_every_steps=1000",  # one validation, at the end
    "trainer.save_every_minutes=null",
    f"trainer.max_steps={MAX_STEPS}",
]


def train_args(tiny_prepared, run_dir: Path, *overrides: str) -> list[str]:
    return [
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *RUN,
        f"hydra.run.dir={quote(run_dir)}",
        *overrides,
    ]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def straight_run(tiny_prepared, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    result = run_main("nmt.train", *train_args(tiny_prepared, run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


class TrainProcess:
    """``python -m nmt.train`` in a subprocess, with the step its progress bar last showed."""

    def __init__(self, args: list[str], launcher: tuple[str, ...] = (), max_steps=MAX_STEPS):
        self.max_steps = max_steps
        env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
        env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
        env.pop("HYDRA_FULL_ERROR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *launcher, "nmt.train", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.step, self.stderr = 0, b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stderr.read1(4096):
            self.stderr += chunk
            steps = re.findall(rb"(\d+)/%d" % self.max_steps, chunk)
            if steps:
                self.step = max(self.step, int(steps[-1]))

    def signal_after(self, step: int, signum: int, pid: int | None = None, timeout=120) -> int:
        """Send ``signum`` (to ``pid``, by default the process) once the bar passes ``step``;
        return the exit status."""
        deadline = time.monotonic() + timeout
        while self.step < step and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.proc.poll() is None, f"the run ended before step {step}: {self.text[-2000:]}"
        os.kill(pid or self.proc.pid, signum)
        status = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return status

    @property
    def text(self) -> str:
        return self.stderr.decode(errors="replace")


def resume_and_compare(tiny_prepared, run_dir: Path, straight_run: Path) -> float:
    result = run_main("nmt.train", *train_args(tiny_prepared, run_dir, "trainer.resume=true"))
    assert result.returncode == 0, result.stderr
    got, expected = (
        load(run_dir / "checkpoints" / "last.pt"),
        load(straight_run / "checkpoints" / "last.pt"),
    )
    assert got["progress"]["step"] == expected["progress"]["step"] == MAX_STEPS
    for key in ("epoch", "batches_in_epoch", "best_score", "validations_without_gain"):
        assert got["progress"][key] == expected["progress"][key], key
    assert not list(run_dir.rglob("*.tmp"))
    return max_weight_difference(got["model"], expected["model"])


def test_sigkill_at_a_random_step_then_resume_matches_a_straight_run(
    tiny_prepared, straight_run, tmp_path
):
    seed = int.from_bytes(os.urandom(3))  # the trainer reseeds `random`
    kill_after = random.Random(seed).randint(5, MAX_STEPS // 2)
    run_dir = tmp_path / "killed"
    process = TrainProcess(train_args(tiny_prepared, run_dir, "trainer.save_every_steps=3"))
    assert process.signal_after(kill_after, signal.SIGKILL) == -signal.SIGKILL
    saved = load(run_dir / "checkpoints" / "last.pt")["progress"]["step"]
    assert 0 < saved < MAX_STEPS and saved % 3 == 0, (seed, saved)  # written between validations
    print(f"SIGKILL after step {process.step} (drawn: {kill_after}); last.pt at step {saved}")
    assert max_weight_difference_ok(resume_and_compare(tiny_prepared, run_dir, straight_run), seed)


def max_weight_difference_ok(delta: float, seed: int) -> bool:
    print(f"max |Δweight| against the straight run: {delta:.3g} (seed {seed})")
    assert delta <= 1e-6, (delta, seed)
    return True


def test_sigterm_saves_the_step_and_exits_75_then_resume_matches(
    tiny_prepared, straight_run, tmp_path
):
    seed = int.from_bytes(os.urandom(3))  # the trainer reseeds `random`
    signal_after = random.Random(seed).randint(5, MAX_STEPS // 2)
    run_dir = tmp_path / "preempted"
    process = TrainProcess(train_args(tiny_prepared, run_dir))  # no checkpoint before the end
    assert process.signal_after(signal_after, signal.SIGTERM) == PREEMPTED_EXIT_STATUS
    assert "Traceback" not in process.text
    step = load(run_dir / "checkpoints" / "last.pt")["progress"]["step"]
    assert signal_after <= step < MAX_STEPS, seed
    print(f"SIGTERM after step {process.step} (drawn: {signal_after}); last.pt at step {step}")
    log = (run_dir / "train.log").read_text()
    assert "SIGTERM received: finishing this step or batch, then writing last.pt" in log
    assert (
        f"preempted by SIGTERM at step {step}: wrote {run_dir / 'checkpoints' / 'last.pt'}; "
        f"continue with trainer.resume=true hydra.run.dir={run_dir} (exit status 75)"
    ) in log
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]
    assert max_weight_difference_ok(resume_and_compare(tiny_prepared, run_dir, straight_run), seed)


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The process id of torchrun's worker with ``RANK=rank`` (Linux: read from /proc)."""
    todo, seen = [launcher_pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        if pid != launcher_pid:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return pid
        todo += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    raise AssertionError(f"no worker with RANK={rank} among {seen}")


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds workers in /proc")
def test_sigterm_to_one_ddp_rank_stops_both_at_one_step_and_rank_0_saves(tiny_prepared, tmp_path):
    run_dir = tmp_path / "ddp"
    args = train_args(tiny_prepared, run_dir, "trainer.distributed=true", "trainer.max_steps=400")
    process = TrainProcess(
        [arg.replace(f"max_steps={MAX_STEPS}", "max_steps=400") for arg in args],
        launcher=("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"),
        max_steps=400,
    )
    deadline = time.monotonic() + 120
    while process.step < 1 and time.monotonic() < deadline:  # both workers are running
        time.sleep(0.05)
    rank1 = worker_pid(process.proc.pid, 1)
    status = process.signal_after(random.randint(3, 8), signal.SIGTERM, pid=rank1)
    # torchrun reports its workers' exits with a traceback of its own, and exits 1
    assert status == 1 and process.text.count("Traceback (most recent call last)") == 1
    assert process.text.count(f"exitcode  : {PREEMPTED_EXIT_STATUS} ") == 2, process.text[-3000:]
    log = (run_dir / "train.log").read_text()
    step = int(re.search(r"preempted by a signal to another rank at step (\d+)", log).group(1))
    saved = load(run_dir / "checkpoints" / "last.pt")
    assert (saved["progress"]["step"], saved["world_size"], len(saved["rng"])) == (step, 2, 2)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]
    print(
        f"DDP: SIGTERM to rank 1 after step {process.step}; both stopped at {step}; torchrun exit {status}"
    )


# ------------------------------------------------------------------------------ in-process loop


@pytest.fixture
def small_trainer(tiny_prepared, small_data, tmp_path):
    """A Trainer over the first 40 training pairs, validating 2 sentences."""

    def make(*overrides: str, run_dir: Path = tmp_path) -> Trainer:
        cfg = tiny_prepared.corpus.cfg(*RUN, *overrides, out_dir=small_data.out_dir)
        return build_trainer(cfg, run_dir, small_data)

    return make


def signal_at_step(monkeypatch, step: int, times: int = 1) -> None:
    """Send SIGTERM to this process ``times`` times during optimiser step ``step``."""
    real = Trainer.train_step

    def train_step(self, batches):
        if self.progress.step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batches)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_preempted_checkpoint_resumes_the_epoch_and_early_stopping_exactly(
    small_trainer, tmp_path, monkeypatch
):
    """Validating every 3 steps with patience 100: the preemption at step 7 lands inside the
    second epoch (5 batches each) and between validations."""
    common = (
        "trainer.val_every_steps=3",
        "trainer.early_stopping_metric=loss",
        "trainer.early_stopping_patience=100",
        "trainer.max_steps=10",
    )
    straight = small_trainer(*common, run_dir=tmp_path / "straight")
    straight.fit()

    signal_at_step(monkeypatch, 7)
    preempted = small_trainer(*common, run_dir=tmp_path / "split")
    with pytest.raises(Preempted, match="preempted by SIGTERM at step 7"):
        preempted.fit()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    last = tmp_path / "split" / "checkpoints" / "last.pt"
    saved = load(last)
    assert preempted.batcher.num_batches() == 5
    assert (saved["progress"]["epoch"], saved["progress"]["batches_in_epoch"]) == (1, 2)
    assert saved["last_validated_step"] == 6

    monkeypatch.undo()
    resumed = small_trainer(*common, f"trainer.resume={quote(last)}", run_dir=tmp_path / "split")
    resumed.fit()
    expected = {**vars(straight.progress), "minutes": None}
    assert {**vars(resumed.progress), "minutes": None} == expected
    assert max_weight_difference(resumed.model.state_dict(), straight.model.state_dict()) == 0


def test_sigterm_during_a_long_validation_stops_within_a_batch_and_the_resume_redoes_it(
    small_trainer, tmp_path, monkeypatch, caplog
):
    """The validation at step 4 decodes 40 sentences one at a time, each batch held to 1 s: 40 s,
    longer than SLURM's and Kubernetes' 30 s of grace. SIGTERM arrives during its second batch:
    the run stops after that batch (about 1 s, not the 38 s left), last.pt is at step 4 with
    step 2 as its last validation, and the resumed run validates step 4 first, so
    ``validations.jsonl`` holds steps 2, 4, 6 once each."""
    import nmt.inference.search

    common = (
        "trainer.val_every_steps=2",
        "trainer.max_steps=6",
        "trainer.val_max_sentences=40",
        "search.batch_size=1",
    )
    real_search_batch = nmt.inference.search._search_batch
    slow = {"armed": False, "batches": 0, "signalled_at": None}

    def search_batch(*args, **kwargs):
        if slow["armed"]:
            slow["batches"] += 1
            if slow["batches"] == 2:
                slow["signalled_at"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        return real_search_batch(*args, **kwargs)

    real_validate = Trainer.validate_and_save

    def validate_and_save(self):
        slow["armed"] = self.progress.step == 4
        return real_validate(self)

    monkeypatch.setattr(nmt.inference.search, "_search_batch", search_batch)
    monkeypatch.setattr(Trainer, "validate_and_save", validate_and_save)
    run_dir = tmp_path / "run"
    t = small_trainer(*common, run_dir=run_dir)
    with caplog.at_level("INFO", logger="nmt"), pytest.raises(Preempted):
        t.fit()
    seconds = time.monotonic() - slow["signalled_at"]
    assert slow["batches"] == 2 and seconds < 5, (slow, seconds)  # one batch of 1 s, not 39
    print(f"SIGTERM during the step-4 validation: stopped {seconds:.2f} s later")
    assert "validation at step 4 dropped: it runs again on resume" in caplog.text
    saved = load(run_dir / "checkpoints" / "last.pt")
    assert (saved["progress"]["step"], saved["last_validated_step"]) == (4, 2)
    history = run_dir / "validations.jsonl"
    assert [json.loads(line)["step"] for line in history.read_text().splitlines()] == [2]

    monkeypatch.undo()
    last = run_dir / "checkpoints" / "last.pt"
    resumed = small_trainer(*common, f"trainer.resume={quote(last)}", run_dir=run_dir)
    with caplog.at_level("INFO", logger="nmt"):
        resumed.fit()
    assert "resume: the validation at step 4 was dropped; running it" in caplog.text
    steps = [json.loads(line)["step"] for line in history.read_text().splitlines()]
    assert steps == [2, 4, 6]  # no gap, no duplicate
    assert resumed.progress.step == 6 and load(last)["last_validated_step"] == 6


def test_sigterm_while_scoring_the_averaged_checkpoint_saves_and_resumes(
    small_trainer, tmp_path, monkeypatch
):
    """The end-of-run phase (averaging, then scoring averaged.pt) stops between batches too; the
    resume does the averaging again and ends normally."""
    from nmt.training.validation import Validator

    common = (
        "trainer.val_every_steps=2",
        "trainer.max_steps=4",
        "trainer.average_last=2",
        "trainer.keep_last=2",
    )
    real_score = Validator.score
    calls = []

    def score(self, model, interrupt=None):
        calls.append(interrupt)
        if len(calls) == 3:  # steps 2 and 4 validated; the third scores averaged.pt
            os.kill(os.getpid(), signal.SIGTERM)
        return real_score(self, model, interrupt)

    monkeypatch.setattr(Validator, "score", score)
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted, match="at step 4"):
        small_trainer(*common, run_dir=run_dir).fit()
    assert len(calls) == 3 and all(c is not None for c in calls)
    monkeypatch.undo()
    last = run_dir / "checkpoints" / "last.pt"
    resumed = small_trainer(*common, f"trainer.resume={quote(last)}", run_dir=run_dir)
    resumed.fit()
    assert (run_dir / "checkpoints" / "averaged.pt").is_file()
    history = (run_dir / "validations.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in history]
    assert steps == [2, 4]


def test_a_second_signal_while_saving_is_ignored(small_trainer, monkeypatch, caplog):
    real_save = checkpoint.save_checkpoint

    def save_during_signal(path, payload):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while last.pt is being written
        real_save(path, payload)

    signal_at_step(monkeypatch, 2, times=2)
    monkeypatch.setattr(checkpoint_keeper, "save_checkpoint", save_during_signal)
    t = small_trainer("trainer.max_steps=5")
    with pytest.raises(Preempted):
        t.fit()
    assert caplog.text.count("SIGTERM received again: ignored while the run saves") == 2
    ckpt_dir = t.run_dir / "checkpoints"
    assert [p.name for p in ckpt_dir.iterdir()] == ["last.pt"]
    assert checkpoint.load_checkpoint(ckpt_dir / "last.pt")["progress"]["step"] == 2


def test_a_signal_before_training_starts_exits_75_at_once(tiny_prepared, tmp_path, monkeypatch):
    real_prepare = trainer.prepare

    def prepare(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)  # while the data is being read
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(trainer, "prepare", prepare)
    result = run_main("nmt.train", *train_args(tiny_prepared, tmp_path))
    assert result.returncode == PREEMPTED_EXIT_STATUS
    log = (tmp_path / "train.log").read_text()
    assert "preempted by SIGUSR1 before training started: nothing to save (exit status 75)" in log
    assert not (tmp_path / "checkpoints").exists()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN  # a second one cannot kill the exit
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_save_every_minutes_writes_last_pt_between_validations(small_trainer, monkeypatch):
    written = []
    monkeypatch.setattr(
        checkpoint_keeper,
        "save_checkpoint",
        lambda path, p: written.append((path.name, p["progress"]["step"])),
    )
    small_trainer("trainer.save_every_minutes=1e-9", "trainer.max_steps=3").fit()
    assert written == [
        ("last.pt", 1),
        ("last.pt", 2),
        ("step0000003.pt", 3),
        ("best.pt", 3),
        ("last.pt", 3),
    ]

    written.clear()
    small_trainer("trainer.save_every_minutes=60", "trainer.max_steps=3").fit()  # only the end
    assert [step for _, step in written] == [3, 3, 3]


# ------------------------------------------------------------------------------ durable writes


def test_atomic_writes_keep_the_umask_mode_and_fsync_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real_fsync(fd))
    )
    old_umask = os.umask(0o027)
    try:
        io.write_text_atomic(tmp_path / "a.txt", "한국어\n")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "한국어\n"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640  # 0o666 minus the umask
    assert len(synced) == 2 and [bool(m & 0o040000) for m in synced] == [
        False,
        True,
    ]  # file, folder
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_disk_full_while_training_is_one_line_and_keeps_earlier_checkpoints(
    tiny_prepared, tmp_path, monkeypatch
):
    real_save, calls = torch.save, []

    def save(payload, f):
        calls.append(f)
        if len(calls) > 3:  # step 2's step0000002.pt, best.pt, last.pt are written; then full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(payload, f)

    monkeypatch.setattr(torch, "save", save)
    args = train_args(tiny_prepared, tmp_path, "trainer.max_steps=4", "trainer.val_every_steps=2")
    result = run_main("nmt.train", *args)
    assert result.returncode == 2
    ckpt_dir = tmp_path / "checkpoints"
    assert result.stderr.splitlines()[-1] == (
        f"error: {ckpt_dir / 'step0000004.pt'}: cannot write: No space left on device"
    )
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.pt", "last.pt", "step0000002.pt"]
    assert load(ckpt_dir / "last.pt")["progress"]["step"] == 2


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 6 MiB tmpfs, mounted for the test (root, where the kernel lets it); the test is
    skipped, saying why, elsewhere."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill ``folder``'s file system until ``leave`` bytes are free; returns the filler file."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


@pytest.mark.parametrize("leave", [0, 4096, 65536, 500_000, 1_000_000])
def test_a_full_disk_anywhere_in_a_checkpoint_is_one_line_and_keeps_the_old_one(
    small_filesystem, leave
):
    """torch's zip writer, interrupted by the full disk mid-file, raises
    ``RuntimeError: … unexpected pos …`` while unwinding from the OSError: still one line."""
    path = small_filesystem / "last.pt"
    payload = {"model": {f"w{i}": torch.randn(256, 256) for i in range(5)}}  # 1.3 MB
    checkpoint.save_checkpoint(path, payload)
    fill(small_filesystem, leave)
    with pytest.raises(NMTError) as err:
        checkpoint.save_checkpoint(path, {**payload, "newer": True})
    assert str(err.value) == f"{path}: cannot write: No space left on device"
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["filler", "last.pt"]  # no .tmp
    assert "newer" not in load(path)


def test_a_run_that_fills_its_disk_ends_in_one_line_with_its_checkpoints_loadable(
    tiny_prepared, small_filesystem
):
    """The issue's run: 40 steps, a validation every 10 keeping every step checkpoint, on 6 MiB;
    checkpoints of 1.6 MB fill it at the second validation."""
    run_dir = small_filesystem / "run"
    args = train_args(
        tiny_prepared,
        run_dir,
        *(
            f"model.{side}.{size}=32"
            for side in ("encoder", "decoder")
            for size in ("embed_dim", "hidden_size")
        ),
        "trainer.max_steps=40",
        "trainer.val_every_steps=10",
        "trainer.keep_every_validation=true",
    )
    result = run_main("nmt.train", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.fullmatch(
        rf"error: {re.escape(str(run_dir / 'checkpoints'))}/\S+\.pt: cannot write: "
        "No space left on device",
        result.stderr.strip().splitlines()[-1],
    )
    assert not list(run_dir.rglob("*.tmp"))
    kept = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert len(kept) >= 2
    for path in kept:
        assert load(path)["progress"]["step"] == 10


def test_the_other_writers_of_a_run_report_a_full_disk_in_one_line(
    small_filesystem, tiny_checkpoint
):
    """validations.jsonl (no half line left), TensorBoard's events (written by a thread), and an
    exported folder, each on a full disk."""
    from nmt.inference.onnx_export import export_checkpoint
    from nmt.training.validation import EventsWriter

    history = small_filesystem / "validations.jsonl"
    io.append_line(history, '{"step": 2}')
    events = EventsWriter(small_filesystem / "tensorboard")
    events.add_scalar("valid/bleu", 1.0, 2)
    events.flush()
    fill(small_filesystem, 0)

    with pytest.raises(NMTError, match=f"^{re.escape(str(history))}: cannot write: No space"):
        io.append_line(history, '{"step": 4, "padding": "' + "x" * 10_000 + '"}')
    assert history.read_text() == '{"step": 2}\n'

    with pytest.raises(NMTError) as err:
        for step in range(2000):  # the thread's error comes back at a later call
            events.add_scalar("valid/bleu", 1.0, step)
        events.flush()
    assert (
        str(err.value)
        == f"{small_filesystem / 'tensorboard'}: cannot write: No space left on device"
    )

    out = small_filesystem / "exported"
    with pytest.raises(NMTError) as err:
        export_checkpoint(tiny_checkpoint, out)
    assert str(err.value) == f"{out}: cannot write: No space left on device"
    assert not out.exists() and not list(small_filesystem.glob(".exported.*"))


def test_an_error_a_writer_raises_while_unwinding_from_the_disk_is_one_line(tmp_path):
    """Without a small disk: the shape of torch's failure (a RuntimeError raised while handling
    the OSError) is one line; a writer's own bug (no OSError behind it) stays a traceback."""

    def torch_like_chained(f):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904

    with pytest.raises(NMTError, match="a.pt: cannot write: No space left on device"):
        io.write_atomic(tmp_path / "a.pt", torch_like_chained)

    def bug(f):
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError):
        io.write_atomic(tmp_path / "b.pt", bug)
    assert list(tmp_path.iterdir()) == []  # no temporary file left by any of them


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "plot.png"), "plot.png: cannot write"),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "cannot write"),
        (OSError(errno.ENOENT, os.strerror(errno.ENOENT), "x"), None),  # not the disk's: a bug
        (ValueError("a bug"), None),
    ],
)
def test_a_write_the_disk_refuses_anywhere_in_a_command_is_one_line(raised, expected, capsys):
    """The net under writers that do not report it themselves (matplotlib's savefig, …)."""
    from nmt.core.errors import exit_on_user_error

    @exit_on_user_error
    def command():
        try:
            raise raised
        except Exception as err:  # as a library unwinding from it would
            raise RuntimeError("the library's own error while unwinding") from err

    if expected is None:
        with pytest.raises(RuntimeError):
            command()
        return
    with pytest.raises(SystemExit) as exit_:
        command()
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line == f"error: {expected}: {raised.strerror}"


def test_a_read_only_run_folder_is_refused_before_training(tiny_prepared, tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    result = run_main("nmt.train", *train_args(tiny_prepared, tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: run folder {tmp_path}: not writable: Read-only file system"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_run_folder_is_refused_before_training(tiny_prepared, tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    ckpt_dir.chmod(0o500)
    result = run_main("nmt.train", *train_args(tiny_prepared, tmp_path))
    ckpt_dir.chmod(0o700)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: run folder {ckpt_dir}: not writable: Permission denied"


def test_too_little_free_space_is_refused_before_training(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    result = run_main("nmt.train", *train_args(tiny_prepared, tmp_path))
    assert result.returncode == 2
    assert re.fullmatch(
        rf"error: run folder {re.escape(str(tmp_path))}: 0\.0 MiB free, a checkpoint of this "
        r"model needs about [\d.]+ MiB: No space left on device",
        result.stderr.strip(),
    )


def test_stale_temporary_files_of_a_killed_run_are_removed(small_trainer, tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    (ckpt_dir / ".last.pt.1a2b3c4d.tmp").write_bytes(b"half")
    small_trainer("trainer.max_steps=1")
    assert list(ckpt_dir.iterdir()) == []


# ------------------------------------------------------------------------------ bad input


def one_line(result, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {expected}"


def test_a_corrupt_gz_corpus_is_one_line(tiny_prepared, tmp_path):
    corpus = tiny_prepared.corpus
    data = gzip.compress(corpus.train.read_bytes())
    cut = tmp_path / "train.tsv.gz"
    cut.write_bytes(data[: len(data) // 2])
    not_gzip = tmp_path / "plain.tsv.gz"
    not_gzip.write_bytes(corpus.train.read_bytes())
    for path, expected in (
        (
            cut,
            r"damaged or cut-short gzip data after line \d+ \(Compressed file ended before the end-of-stream marker was reached\)",
        ),
        (
            not_gzip,
            r"not a gzip file, though its name ends in \.gz",
        ),
    ):
        args = [*corpus.overrides(tmp_path / "prepared"), f"data.train={quote(path)}"]
        result = run_main("nmt.prepare", *args)
        assert result.returncode == 2
        assert re.fullmatch(rf"error: {re.escape(str(path))}: {expected}", result.stderr.strip())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=-1", "optim.lr: expected a number >= 0; got -1"),
        ("optim.betas=[0.9,1.5]", "optim.betas: expected two numbers in [0, 1); got [0.9, 1.5]"),
        ("data.batching.max_tokens=0", "data.batching.max_tokens: expected an integer >= 1; got 0"),
        (
            "trainer.save_every_minutes=0",
            "trainer.save_every_minutes: expected a number > 0 or null; got 0",
        ),
        (
            "trainer.preempt_signals=[SIGKILL]",
            "trainer.preempt_signals: 'SIGKILL' is not a signal a process can catch here; "
            "expected names such as SIGTERM, SIGUSR1, SIGUSR2, SIGINT",
        ),
    ],
)
def test_bad_training_settings_are_one_line(tiny_prepared, tmp_path, override, expected):
    one_line(run_main("nmt.train", *train_args(tiny_prepared, tmp_path, override)), expected)
    assert not (tmp_path / "checkpoints").exists()


class Payload:
    """Pickled code: loading it unsafely would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def bad_checkpoints(folder: Path) -> list[tuple[Path, str]]:
    """(file, the message after its path) for files that are not nmt checkpoints."""
    files = {name: folder / f"{name}.pt" for name in ("state_dict", "tensor", "random", "code")}
    torch.save({"state_dict": {"w": torch.zeros(2)}}, files["state_dict"])
    torch.save(torch.zeros(3, 4), files["tensor"])
    files["random"].write_bytes(random.Random(0).randbytes(4096))
    torch.save({"model": Payload(folder / "code_ran")}, files["code"])
    keys = "model, config, vocab"
    return [
        (
            files["state_dict"],
            f"not an nmt checkpoint: expected a dict with keys {keys} (what nmt.train writes); found a dict with keys state_dict, without {keys}",
        ),
        (
            files["tensor"],
            f"not an nmt checkpoint: expected a dict with keys {keys} (what nmt.train writes); found a tensor of shape (3, 4)",
        ),
        (files["random"], "not a checkpoint file (neither torch's zip format nor a pickle)"),
        (
            files["code"],
            "refused: it holds pickled Python objects (classes or functions), which an nmt checkpoint never does and which could run code; nothing in it was loaded",
        ),
    ]


def test_files_that_are_not_checkpoints_are_one_line(tiny_prepared, tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("Hello.\n")
    for path, message in bad_checkpoints(tmp_path):
        result = run_main("nmt.translate", f"ckpt={quote(path)}", f"input={quote(sentences)}")
        one_line(result, f"{path}: {message}")
        resume = train_args(tiny_prepared, tmp_path / "run", f"trainer.resume={quote(path)}")
        one_line(run_main("nmt.train", *resume), f"{path}: {message}")
        assert "weights_only" not in result.stderr
    assert not (tmp_path / "code_ran").exists()


def test_a_translation_checkpoint_without_training_state_cannot_be_resumed(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {}, "config": {}, "vocab": {}}, path)
    with pytest.raises(
        NMTError, match=r"\(no optimizer, schedule, scaler, progress, rng, world_size\)"
    ):
        checkpoint.load_checkpoint(path, keys=checkpoint.TRAINING_KEYS)


def test_translate_without_ckpt_is_one_line():
    one_line(
        run_main("nmt.translate", "input=-"), "ckpt: missing; give it on the command line (ckpt=…)"
    )


def test_resume_auto_continues_when_last_pt_exists_and_starts_fresh_otherwise(tmp_path):
    assert trainer.resolve_resume("auto", tmp_path) is None
    last = tmp_path / "checkpoints" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert trainer.resolve_resume("auto", tmp_path) == last


def test_a_damaged_manifest_and_leftover_temporaries_mean_a_rebuild(tiny_prepared, tmp_path):
    from conftest import prepare

    out_dir = tmp_path / "prepared"
    shutil.copytree(tiny_prepared.data.out_dir, out_dir)
    (out_dir / "manifest.json").write_text("")  # renamed but never flushed before a power loss
    (out_dir / ".train.pt.0badf00d.tmp").write_bytes(b"half")
    log: list[str] = []
    data = prepare(tiny_prepared.corpus.cfg(out_dir=out_dir).data, log=log.append)
    assert not any(line.startswith("reusing") for line in log)
    assert len(data.splits["train"]) == len(tiny_prepared.data.splits["train"])
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*.tmp"))
    assert json.loads((out_dir / "manifest.json").read_text())["fingerprint"]
