"""Score translations: hypothesis files against a reference, or decode with a checkpoint first.

    python -m nmt.evaluate hyp=out.ko ref=test.ko [json=report.json]
    python -m nmt.evaluate hyp=[a.ko,b.ko] ref=test.ko
    python -m nmt.evaluate ckpt=best.pt split=test [search=greedy] [out=hyp.ko]
    python -m nmt.evaluate ckpt=best.pt src=test.en ref=test.ko

Every system gets the same report from :mod:`nmt.evaluation.metrics` that validation uses during training:
BLEU (ko-mecab, char, 13a), chrF and TER with their sacrebleu signatures, and the degeneracy
diagnostics (in ckpt mode with ``max_len_rate``, the share of hypotheses the decoder cut at its
length limit). The report is printed as a table and, with ``json=``, written as JSON::

    {"ref": "test.ko", "src": null, "ckpt": null, "split": null,
     "systems": [{"system": "a.ko", "lines": 1080,
                  "scores": {"bleu_ko-mecab": {"score": 12.3, "signature": "nrefs:1|...", ...},
                             ...},
                  "degeneracy": {"repetition_rate": 0.01, ...},
                  "decoding": {"precision": "fp32", "precision_reason": "...", "backend": "torch",
                               "device": "cpu", "cpu": {"model": "...", "bf16_flags": [...]}}}]}

``decoding`` (ckpt mode only) says what produced the hypotheses: the search's precision and why,
the backend and the device, the CPU (:meth:`nmt.inference.translator.Translator.decoding_summary`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.io import write_json, write_text_atomic
from nmt.core.paths import CONFIG_DIR
from nmt.data.corpus import read_text_lines
from nmt.evaluation.metrics import DEFAULT_TOKENIZERS, degeneracy, format_table, score_corpus
from nmt.inference.search import explicit_settings

if TYPE_CHECKING:
    from nmt.inference.translator import Translator

SPLITS = ("train", "valid", "test")


def score_system(
    name: str,
    hypotheses: Sequence[str],
    references: Sequence[str],
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
    max_len_hits: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """One system's entry of the report: scores and degeneracy diagnostics."""
    return {
        "system": name,
        "lines": len(hypotheses),
        "scores": score_corpus(hypotheses, references, tokenizers),
        "degeneracy": degeneracy(hypotheses, references, max_len_hits),
    }


def evaluate_files(
    hyp_paths: Sequence[str | Path],
    ref_path: str | Path,
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
) -> dict[str, Any]:
    """Score each hypothesis file against the reference file; all files are checked first."""
    references = read_text_lines(ref_path, "reference")
    systems = []
    for hyp_path in hyp_paths:
        hypotheses = read_text_lines(hyp_path, "hypothesis")
        if len(hypotheses) != len(references):
            raise NMTError(
                f"{hyp_path} has {len(hypotheses)} lines but {ref_path} has {len(references)}: "
                "expected one hypothesis per reference line"
            )
        systems.append((str(hyp_path), hypotheses))
    return {
        "ref": str(ref_path),
        "src": None,
        "ckpt": None,
        "split": None,
        "systems": [score_system(name, hyps, references, tokenizers) for name, hyps in systems],
    }


def evaluate_checkpoint(
    ckpt_path: str | Path,
    search: Mapping[str, Any] | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> dict[str, Any]:
    """Load ``ckpt_path`` (its search settings with the ``search`` overrides) and
    :func:`evaluate_translator` it; ``kwargs`` as there."""
    from nmt.inference.translator import Translator

    translator = Translator.from_checkpoint(ckpt_path, device, **(search or {}))
    return evaluate_translator(translator, **kwargs)


def evaluate_translator(
    translator: Translator,
    split: str | None = None,
    src_path: str | Path | None = None,
    ref_path: str | Path | None = None,
    out_path: str | Path | None = None,
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
    max_sentences: int | None = None,
    progress: bool = False,
    ref_out_path: str | Path | None = None,
) -> dict[str, Any]:
    """Translate a split of the model's corpus (or ``src_path``) and score it.

    Give either ``split`` (read from the checkpoint's data config) or both ``src_path`` and
    ``ref_path``. With ``out_path`` the decoded hypotheses are also written there, one per line,
    and with ``ref_out_path`` the references exactly as scored (normalised), so that a
    significance test can pair them later.
    ``max_sentences`` keeps only the first N sentences (a quick look; the scores are not
    comparable with the whole split's).
    """
    if split is not None and split not in SPLITS:
        raise NMTError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if split is not None:
        sources, references, src_name, ref_name = _read_split(translator.info.config, split)
    else:
        sources = read_text_lines(src_path, "source")
        references = read_text_lines(ref_path, "reference")
        src_name, ref_name = str(src_path), str(ref_path)
        if len(sources) != len(references):
            raise NMTError(
                f"{src_path} has {len(sources)} lines but {ref_path} has {len(references)}: "
                "expected one reference per source line"
            )
    if max_sentences is not None:
        sources, references = sources[:max_sentences], references[:max_sentences]
    translations = translator.translate(sources, progress=progress)
    hypotheses = [t.text for t in translations]
    if out_path is not None:
        write_text_atomic(out_path, "".join(h + "\n" for h in hypotheses))
    if ref_out_path is not None:
        write_text_atomic(ref_out_path, "".join(r + "\n" for r in references))
    max_len_hits = [t.hit_max_len for t in translations]
    name = translator.info.source
    system = score_system(name, hypotheses, references, tokenizers, max_len_hits)
    system["decoding"] = translator.decoding_summary()  # the precision beside the signatures
    return {"ref": ref_name, "src": src_name, "ckpt": name, "split": split, "systems": [system]}


def format_report(report: dict[str, Any]) -> str:
    """The printed form of a report: one table per system, under a heading naming its inputs."""
    blocks = []
    for system in report["systems"]:
        source = f", src {report['src']}" if report["src"] else ""
        heading = f"== {system['system']} vs {report['ref']}{source} ({system['lines']} lines)"
        decoding = system.get("decoding")
        if decoding:  # decoded here (ckpt mode): say what produced the text
            heading += (
                f"\ndecoded in {decoding['precision']} ({decoding['precision_reason']}), "
                f"{decoding['backend']} on {decoding['device']}, CPU {decoding['cpu']['model']}"
            )
        blocks.append(heading + "\n" + format_table(system["scores"], system["degeneracy"]))
    return "\n\n".join(blocks)


# An absolute config path: "../configs" would be resolved as a Python package (and fail) whenever
# main is imported rather than run as __main__ (scripts/evaluate.py, the nmt-evaluate command).
@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    tokenizers = str_list(cfg.tokenizers, "tokenizers")
    if cfg.json is not None and not Path(cfg.json).parent.is_dir():
        raise NMTError(f"json={cfg.json}: folder {Path(cfg.json).parent} does not exist")
    if cfg.hyp is not None:
        ckpt_keys = [k for k in ("ckpt", "split", "src", "out") if cfg[k] is not None]
        if ckpt_keys:
            raise NMTError(
                f"hyp= scores files; {'=, '.join(ckpt_keys)}= belong to ckpt= mode (decode, then score)"
            )
        if cfg.ref is None:
            raise NMTError("hyp= needs ref=FILE, the reference translations")
        report = evaluate_files(str_list(cfg.hyp, "hyp"), _one_ref(cfg.ref), tokenizers)
    elif cfg.ckpt is not None:
        if (cfg.split is None) == (cfg.src is None):
            raise NMTError("ckpt= needs either split=train|valid|test or src=FILE ref=FILE")
        if cfg.split is not None and cfg.ref is not None:
            raise NMTError("split= reads the references from the corpus; leave out ref=")
        if cfg.src is not None and cfg.ref is None:
            raise NMTError("src= needs ref=FILE, the reference translations")
        report = evaluate_checkpoint(
            cfg.ckpt,
            explicit_settings(cfg.search),
            cfg.device,
            split=cfg.split,
            src_path=cfg.src,
            ref_path=None if cfg.ref is None else _one_ref(cfg.ref),
            out_path=cfg.out,
            tokenizers=tokenizers,
            progress=cfg.progress,
        )
    else:
        raise NMTError(
            "nothing to evaluate: give hyp=FILE ref=FILE, or ckpt=FILE with split= or src= ref="
        )
    print(format_report(report))
    if cfg.json is not None:
        write_json(cfg.json, report)
        print(f"\nwrote {cfg.json}")


def _one_ref(value: Any) -> str:
    refs = str_list(value, "ref")
    if len(refs) != 1:
        raise NMTError(f"ref: expected one reference file, got {len(refs)}")
    return refs[0]


def _read_split(train_cfg: Any, split: str) -> tuple[list[str], list[str], str, str]:
    """Source and reference lines of a split of the checkpoint's corpus, as ``nmt.prepare``
    wrote them to ``<data.out_dir>/<split>.{en,ko}`` (normalised; valid and test unfiltered), so
    ``split=valid`` scores the text validation scored. Any corpus works, recipes included; one
    not prepared on this machine yet is prepared first."""
    from nmt.data.pipeline import prepare

    cfg = OmegaConf.create(train_cfg)
    if split != "train" and cfg.data.get(split) is None and cfg.data.format != "recipe":
        raise NMTError(f"the checkpoint's data config has no {split} split (data.{split} is null)")
    data = prepare(cfg.data, cfg.get("seed", 1234), log=lambda line: print(line, file=sys.stderr))
    part = data.splits[split]
    src_name, ref_name = (
        str(data.out_dir / f"{split}.{lang}") for lang in (cfg.data.src_lang, cfg.data.tgt_lang)
    )
    return part.src_text, part.tgt_text, src_name, ref_name


if __name__ == "__main__":
    main()
