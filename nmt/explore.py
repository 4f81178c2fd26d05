"""``python -m nmt.explore ckpt=… input=FILE [ref=FILE] out=explorer.html``: an attention explorer.

Translates the sentences of ``input`` with one or more checkpoints and writes one self-contained
HTML page (no network): per sentence the source and target subwords, shaded by their attention
weights on hover or focus, a heat-map view, the n-best list, the attention diagnostics and, with
``ref=``, the reference with sentence BLEU (``ko-mecab``) and chrF.

``ckpt=[a.pt,b.pt,…]`` (or a sweep dir, whose run dirs each give ``checkpoints/best.pt``) puts the
models side by side on the same sentences, with hover synchronised across them; the checkpoints
must share their vocabularies. The page, its data and its DOM contract:
:mod:`nmt.evaluation.explorer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import ExploreConfig, check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.evaluation.explorer import explore


@hydra.main(config_path=str(CONFIG_DIR), config_name="explore", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: ExploreConfig = check_command("explore", cfg)
    payload = explore(
        config.ckpt,
        config.input,
        config.ref,
        config.out,
        max_sentences=config.max_sentences,
        search=config.search,  # the keys search= sets; each checkpoint's own values for the rest
        n_best=config.n_best,
        bleu_tokenizer=config.bleu_tokenizer,
        title=config.title,
        device=config.device,
        progress=config.progress,
        ensemble=config.ensemble,
        glossary=config.glossary,
    )
    size = Path(config.out).stat().st_size
    if payload["note"]:
        print(f"note: {payload['note']}", file=sys.stderr)
    print(
        f"wrote {config.out}: {len(payload['sentences'])} sentences × {len(payload['models'])} "
        f"model(s), {size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
