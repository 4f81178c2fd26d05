"""``python -m nmt.serve ckpt=… [host=127.0.0.1] [port=8000] [serve.key=value …]``: an HTTP API.

FastAPI on uvicorn, on top of :class:`~nmt.inference.translator.Translator` (the one decoding path).
The routes, their limits and error statuses: :mod:`nmt.serving.app`. Dynamic batching (concurrent
requests with the same search settings decoded in one batch, each answered as if decoded alone,
as ``nmt-translate`` prints it): :mod:`nmt.serving.service`. The ``serve.*`` settings:
:class:`~nmt.serving.settings.ServeSettings` (``configs/serve.yaml``).

SIGTERM (or Ctrl-C): stop accepting connections, answer every request already received, exit 0.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import hydra
import torch
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import ServeConfig, check_command
from nmt.core.errors import exit_on_user_error, str_list
from nmt.core.paths import CONFIG_DIR
from nmt.inference.translator import Translator
from nmt.serving.app import create_app, http_stack, listen, run_server
from nmt.serving.service import decoding_thread


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: ServeConfig = check_command("serve", cfg)
    limits = config.serve.with_env_api_key()
    # The event loop and the decoding thread share the GIL, which the decoder drops and takes
    # back around each of a beam step's many small torch ops; while the event loop has work,
    # each take-back could wait Python's default 5 ms switch interval. At 0.5 ms, 64 clients
    # got 69.8 sentences/s against 67.6 (means of six alternating runs, more in every pair).
    sys.setswitchinterval(0.0005)
    # the model is loaded in the decoding thread, the only one that runs torch (decoding_thread)
    limits = replace(limits, threads=limits.threads or torch.get_num_threads())
    decoding = decoding_thread(limits.threads)
    translator = (
        decoding.submit(
            Translator.from_checkpoints,
            str_list(config.ckpt, "ckpt"),
            config.device,
            ensemble=config.ensemble,
            **config.search,
        )
        .result()
        .with_markup(config.markup)
        .with_glossary(config.glossary)
    )
    sock = listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    app = create_app(translator, limits, executor=decoding)
    print(
        f"nmt-serve: listening on http://{host}:{port} ({translator.device}, {http_stack()})",
        file=sys.stderr,
    )
    sys.stderr.flush()
    run_server(app, limits, sock)
    print("nmt-serve: stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
