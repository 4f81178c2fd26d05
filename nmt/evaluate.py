"""Score translations: hypothesis files against a reference, or decode with a checkpoint first.

    python -m nmt.evaluate hyp=out.ko ref=test.ko [json=report.json]
    python -m nmt.evaluate hyp=[a.ko,b.ko] ref=test.ko
    python -m nmt.evaluate ckpt=best.pt split=test [search=greedy] [out=hyp.ko]
    python -m nmt.evaluate ckpt=best.pt src=test.en ref=test.ko

Every system gets the same report from :mod:`nmt.metrics` that validation uses during training:
BLEU (ko-mecab, char, 13a), chrF and TER with their sacrebleu signatures, and the degeneracy
diagnostics (in ckpt mode with ``max_len_rate``, the share of hypotheses the decoder cut at its
length limit). The report is printed as a table and, with ``json=``, written as JSON::

    {"ref": "test.ko", "src": null, "ckpt": null, "split": null,
     "systems": [{"system": "a.ko", "lines": 1080,
                  "scores": {"bleu_ko-mecab": {"score": 12.3, "signature": "nrefs:1|...", ...},
                             ...},
                  "degeneracy": {"repetition_rate": 0.01, ...}}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from nmt import REPO_ROOT
from nmt.errors import NMTError, exit_on_user_error
from nmt.metrics import (
    DEFAULT_TOKENIZERS,
    degeneracy,
    format_table,
    score_corpus,
    write_json,
    write_text_atomic,
)

SPLITS = ("train", "valid", "test")


def read_text_lines(path: str | Path, role: str) -> list[str]:
    """Read a UTF-8 file as one string per line (without the line break).

    Lines are split at ``\\n`` only, so a stray U+2028 inside a sentence cannot shift the
    alignment. ``role`` ("hypothesis", "reference", "source") goes into the error messages.
    Raises NMTError for a missing or empty file and for bytes that are not UTF-8 (file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise NMTError(f"{path}: {role} file not found")
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise NMTError(
                    f"{path}:{number}: invalid UTF-8 in {role} file "
                    f"(byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            lines.append(text.rstrip("\r\n"))
    if not lines:
        raise NMTError(f"{path}: {role} file is empty, expected one sentence per line")
    return lines


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
    search_cfg: DictConfig,
    split: str | None = None,
    src_path: str | Path | None = None,
    ref_path: str | Path | None = None,
    device: str = "cpu",
    out_path: str | Path | None = None,
    tokenizers: Sequence[str] = DEFAULT_TOKENIZERS,
    max_sentences: int | None = None,
    ref_out_path: str | Path | None = None,
) -> dict[str, Any]:
    """Translate a split of the checkpoint's corpus (or ``src_path``) and score it.

    Give either ``split`` or both ``src_path`` and ``ref_path``. With ``out_path`` the decoded
    hypotheses are also written there, one per line, and with ``ref_out_path`` the references
    exactly as scored (normalised), so that a significance test can pair them later.
    ``max_sentences`` keeps only the first N sentences (a quick look; the scores are not
    comparable with the whole split's).
    """
    if not Path(ckpt_path).is_file():
        raise NMTError(f"{ckpt_path}: checkpoint file not found")
    if split is not None and split not in SPLITS:
        raise NMTError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    from nmt.checkpoint import load_for_inference
    from nmt.data.corpus import normalize
    from nmt.search import decode_lines

    model, src_vocab, tgt_vocab, train_cfg = load_for_inference(ckpt_path, device)
    if split is not None:
        sources, references, src_name, ref_name = _read_split(train_cfg, split)
    else:
        sources = [normalize(line) for line in read_text_lines(src_path, "source")]
        references = read_text_lines(ref_path, "reference")
        src_name, ref_name = str(src_path), str(ref_path)
        if len(sources) != len(references):
            raise NMTError(
                f"{src_path} has {len(sources)} lines but {ref_path} has {len(references)}: "
                "expected one reference per source line"
            )
    if max_sentences is not None:
        sources, references = sources[:max_sentences], references[:max_sentences]
    # the best hypothesis of each line, detokenised as translate_lines does
    nbest_lists = decode_lines(model, src_vocab, sources, search_cfg)
    hypotheses = tgt_vocab.decode([nbest[0].tokens if nbest else [] for nbest in nbest_lists])
    if out_path is not None:
        write_text_atomic(out_path, "".join(h + "\n" for h in hypotheses))
    if ref_out_path is not None:
        write_text_atomic(ref_out_path, "".join(r + "\n" for r in references))
    max_len_hits = [bool(nbest) and nbest[0].hit_max_len for nbest in nbest_lists]
    system = score_system(str(ckpt_path), hypotheses, references, tokenizers, max_len_hits)
    return {
        "ref": ref_name,
        "src": src_name,
        "ckpt": str(ckpt_path),
        "split": split,
        "systems": [system],
    }


def format_report(report: dict[str, Any]) -> str:
    """The printed form of a report: one table per system, under a heading naming its inputs."""
    blocks = []
    for system in report["systems"]:
        source = f", src {report['src']}" if report["src"] else ""
        heading = f"== {system['system']} vs {report['ref']}{source} ({system['lines']} lines)"
        blocks.append(heading + "\n" + format_table(system["scores"], system["degeneracy"]))
    return "\n\n".join(blocks)


# An absolute config path: "../configs" would be resolved as a Python package (and fail) whenever
# main is imported rather than run as __main__ (scripts/evaluate.py, the nmt-evaluate command).
@hydra.main(config_path=str(REPO_ROOT / "configs"), config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    tokenizers = _as_list(cfg.tokenizers, "tokenizers")
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
        report = evaluate_files(_as_list(cfg.hyp, "hyp"), _one_ref(cfg.ref), tokenizers)
    elif cfg.ckpt is not None:
        if (cfg.split is None) == (cfg.src is None):
            raise NMTError("ckpt= needs either split=train|valid|test or src=FILE ref=FILE")
        if cfg.split is not None and cfg.ref is not None:
            raise NMTError("split= reads the references from the corpus; leave out ref=")
        if cfg.src is not None and cfg.ref is None:
            raise NMTError("src= needs ref=FILE, the reference translations")
        report = evaluate_checkpoint(
            cfg.ckpt,
            cfg.search,
            split=cfg.split,
            src_path=cfg.src,
            ref_path=None if cfg.ref is None else _one_ref(cfg.ref),
            device=cfg.device,
            out_path=cfg.out,
            tokenizers=tokenizers,
        )
    else:
        raise NMTError(
            "nothing to evaluate: give hyp=FILE ref=FILE, or ckpt=FILE with split= or src= ref="
        )
    print(format_report(report))
    if cfg.json is not None:
        write_json(cfg.json, report)
        print(f"\nwrote {cfg.json}")


def _as_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, ListConfig | list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise NMTError(f"{key}: expected a file name or a non-empty list [a,b], got {value!r}")


def _one_ref(value: Any) -> str:
    refs = _as_list(value, "ref")
    if len(refs) != 1:
        raise NMTError(f"ref: expected one reference file, got {len(refs)}")
    return refs[0]


def _read_split(train_cfg: Any, split: str) -> tuple[list[str], list[str], str, str]:
    """Source and reference lines of a split named in the checkpoint's data config.

    Both sides are normalised as ``nmt.prepare`` normalises valid and test, so ``split=valid``
    scores the same text that validation during training scores.
    """
    from nmt.data.corpus import normalize, read_aligned, read_tsv
    from nmt.data.pipeline import corpus_root

    data = OmegaConf.create(train_cfg).data
    if data.format not in ("tsv", "aligned"):
        raise NMTError(
            f"split= reads tsv and aligned corpora; this checkpoint's corpus is "
            f"{data.format!r}: give src=FILE ref=FILE instead"
        )
    if data[split] is None:
        raise NMTError(f"the checkpoint's data config has no {split} split (data.{split} is null)")
    path = corpus_root(data) / Path(data[split]).expanduser()
    if data.format == "tsv":
        pairs = read_tsv(path)
        src_name = ref_name = str(path)
    else:
        src_file, ref_file = (Path(f"{path}.{lang}") for lang in (data.src_lang, data.tgt_lang))
        pairs = read_aligned(src_file, ref_file)
        src_name, ref_name = str(src_file), str(ref_file)
    return [normalize(s) for s, _ in pairs], [normalize(t) for _, t in pairs], src_name, ref_name


if __name__ == "__main__":
    main()
