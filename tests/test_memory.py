"""``trainer.keep_freed_memory``: glibc's malloc reuses a freed large block instead of
page-faulting a fresh one in (:func:`nmt.core.runtime.keep_freed_memory`)."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys

import pytest
from conftest import TINY_MODEL, build_trainer

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt")

# In a fresh interpreter: the page faults of filling blocks of 64, 60 and 56 MiB (above glibc's
# largest mmap threshold), each freed before the next, before and after keep_freed_memory().
# Shrinking sizes, like batches of different lengths: a freed block can hold the next one
# wherever it lies (the same size again may not fit: c10 asks posix_memalign for 64 bytes more).
FAULTS_PER_ALLOCATION = """
import json, resource, torch
from nmt.core.runtime import keep_freed_memory

def faults():
    counts = []
    for mib in (64, 60, 56):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.zeros(mib * 2**18)  # mib MiB of fp32
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block
    return counts

before = faults()
mode = keep_freed_memory(torch.device("cpu"))
print(json.dumps({"before": before, "mode": mode, "after": faults()}))
"""


@glibc_only
def test_a_freed_large_block_is_reused_without_page_faults():
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ALLOCATION],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(out.stdout)
    pages = 56 * 2**20 // 4096
    # without it each allocation is a fresh mmap: every 4 KiB page (or 2 MiB huge page) faults
    assert min(seen["before"]) > pages // 600, seen
    assert seen["mode"].startswith("freed blocks kept for reuse"), seen
    # the first allocation after it grows the heap; the next ones reuse the freed block
    assert max(seen["after"][1:]) < min(seen["before"]) // 10, seen


@pytest.mark.parametrize("keep", [True, False])
def test_the_trainer_logs_what_it_did_with_freed_memory(tiny_prepared, tmp_path, caplog, keep):
    cfg = tiny_prepared.corpus.cfg(
        *TINY_MODEL, "trainer.max_steps=1", f"trainer.keep_freed_memory={str(keep).lower()}"
    )
    with caplog.at_level(logging.INFO, logger="nmt"):
        build_trainer(cfg, tmp_path, data=tiny_prepared.data)
    memory = [m for m in caplog.messages if m.startswith("memory: ")]
    assert len(memory) == keep, caplog.messages
    if keep and platform.libc_ver()[0] == "glibc":
        assert memory[0].startswith("memory: freed blocks kept for reuse"), memory
