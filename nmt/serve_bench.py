"""``python -m nmt.serve_bench ckpt=… [clients=[1,8,64]] [requests=256] [max_seconds=60]``:
the HTTP API under load, with dynamic batching on and off, beside offline batched translation.

1. **The ceiling.** All the sentences translated offline at once in this process, as
   ``nmt-translate`` does; its texts are the reference for the server's answers. Then the first
   ``SINGLE`` sentences decoded one at a time: the ceiling over that rate bounds what batching
   can gain (``x off``).
2. **The servers**, real ``python -m nmt.serve`` processes on 127.0.0.1, one with batching on
   (``serve.max_batch_sentences=batch_sentences``) and one with it off (``=1``); for each client
   count C, C clients each send one sentence per request until ``requests`` are answered or
   ``max_seconds`` have passed. Throughput, latency percentiles, the mean batch, and the
   server's and the clients' CPU per run.
3. The servers get SIGTERM and must exit 0.

How each figure is measured: :mod:`nmt.serving.load_test`. Traffic goes to 127.0.0.1 only, and
every run is bounded by ``requests`` and ``max_seconds``. The clients, the servers and the
offline run share the machine's cores: run it on an otherwise idle machine for figures to
compare (the load average is printed with each run).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import ServeBenchConfig, check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.io import write_json
from nmt.core.paths import CONFIG_DIR
from nmt.serving.load_test import (
    SINGLE,
    compare_batching,
    default_input,
    format_table,
    offline,
    read_sentences,
    server_args,
)


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve_bench", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: ServeBenchConfig = check_command("serve_bench", cfg)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    clients = [config.clients] if isinstance(config.clients, int) else list(config.clients)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    path = Path(config.input) if config.input else default_input(config.ckpt)
    sentences = read_sentences(path, config.requests, config.seed)

    base = offline(
        config.ckpt,
        config.device,
        config.search,
        config.batch_sentences,
        sentences,
        config.markup,
    )
    ceiling, settings = base.ceiling, base.settings
    print(
        f"serve benchmark: {config.ckpt}, {settings['name']} search "
        f"(beam {settings['beam_size']}), {len(sentences)} single-sentence requests from "
        f"{path} (seed {config.seed}), at most {config.max_seconds:g} s per run, device "
        f"{config.device}, torch threads {config.threads or 'default'}, {config.client} "
        f"clients, load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)"
    )
    print(
        f"offline, all {len(sentences)} at once (Translator.translate, as nmt-translate: "
        f"batches of <= {config.batch_sentences} sentences and {settings['batch_tokens']} source "
        f"subwords over the hypotheses on the CPU): the ceiling, {ceiling:.2f} sentences/s "
        f"({base.per_cpu_s:.1f} per CPU second)\n"
        f"offline, the first {min(SINGLE, len(sentences))} one at a time: "
        f"{base.single_per_s:.2f} sentences/s ({base.single_per_cpu_s:.1f} per CPU second), so "
        f"batching can make decoding at most {ceiling / base.single_per_s:.2f}x faster here "
        f"({base.per_cpu_s / base.single_per_cpu_s:.2f}x per CPU second): the bound on 'x off'"
    )
    sys.stdout.flush()

    common = server_args(
        config.ckpt,
        config.device,
        config.max_wait_ms,
        config.search,
        config.threads,
        [f"markup={str(config.markup).lower()}", *config.server_args],
    )
    results = compare_batching(
        common,
        config.batch_sentences,
        clients,
        sentences,
        base,
        config.max_seconds,
        config.client,
        config.startup_timeout_s,
        say=functools.partial(print, flush=True),
    )
    runs, timings, exits = results.runs, results.timings, results.exits

    ceilings = {c: (timings[k] + timings[k + 1]) / 2 for k, c in enumerate(clients)}
    bound = sum(timings) / len(timings) / base.single_per_s
    print(
        "the ceiling timed again before each client count and after the last: "
        + ", ".join(f"{t:.2f}" for t in timings)
        + f" sentences/s; with their mean, the bound on 'x off' is {bound:.2f}x"
    )
    runs.sort(key=lambda r: (r.clients, r.batching != "on"))
    print(format_table(runs, ceilings))
    print(f"server exit status after SIGTERM: {exits}; load average {os.getloadavg()[0]:.2f}")
    if config.output:
        report = {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "search": settings,
            "input": str(path),
            "ceiling_sentences_per_s": ceiling,
            "ceiling_sentences_per_cpu_s": base.per_cpu_s,
            "ceiling_timings_sentences_per_s": timings,
            "ceiling_per_clients": ceilings,
            "x_off_bound": bound,  # the mean re-timed ceiling over one-at-a-time decoding
            "offline_single_sentences_per_s": base.single_per_s,
            "offline_single_sentences_per_cpu_s": base.single_per_cpu_s,
            "runs": [asdict(r) for r in runs],
            "exit_status": exits,
        }
        write_json(config.output, report)
        print(f"report: {config.output}")


if __name__ == "__main__":
    main()
