"""SentencePiece subword vocabularies.

Every model trained here uses the same fixed special ids, so that checkpoints, search and the
data pipeline agree without looking them up:

====  =====  ===========================================
 id   piece  meaning
====  =====  ===========================================
 0    <pad>  padding; never predicted, ignored by the loss
 1    <unk>  a character outside the vocabulary
 2    <s>    beginning of sentence (decoder's first input)
 3    </s>   end of sentence (the decoder's stop signal)
====  =====  ===========================================
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from nmt.core.errors import NMTError
from nmt.core.io import write_bytes_atomic
from nmt.core.settings import setting
from nmt.core.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SHORT_LIST = 64  # lines encoded or decoded one by one (see Vocab.encode)


@dataclass(frozen=True, kw_only=True)
class VocabSettings:
    model_type: str = setting(choices=("unigram", "bpe"))
    joint: bool = setting()
    src_size: int = setting(ge=1)
    tgt_size: int = setting(ge=1)
    src_character_coverage: float = setting(gt=0, le=1)
    tgt_character_coverage: float = setting(gt=0, le=1)
    input_sentence_size: int = setting(ge=1)


class Vocab:
    """A trained SentencePiece model: text ↔ subword ids (without <s> and </s>)."""

    def __init__(self, model_path: str | Path | None = None, *, model_proto: bytes | None = None):
        """Load from a ``.model`` file, or from its bytes (as stored in a checkpoint)."""
        if model_proto is None:
            if model_path is None:
                raise ValueError("Vocab needs a model_path or model_proto")
            model_proto = Path(model_path).read_bytes()
        self.path = Path(model_path) if model_path is not None else None
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Subword ids of each line. Up to ``SHORT_LIST`` lines are encoded one by one:
        sentencepiece's list call sets up its thread pool each time, 0.3-1 ms for a list of one
        sentence against 0.01 ms for the string (the server encodes each request as it comes,
        on the event loop); a longer list gets the pool's threads."""
        if len(lines) <= SHORT_LIST:
            return [self.sp.encode(line, out_type=int) for line in lines]
        return self.sp.encode(list(lines), out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The text of each id sequence (specials dropped); a short list one by one, as in
        :meth:`encode` (0.8 ms for a list of one sentence, 0.01 ms for the sequence)."""
        seqs = [strip_specials(seq) for seq in ids]
        if len(seqs) <= SHORT_LIST:
            return [self.sp.decode(seq) for seq in seqs]
        return self.sp.decode(seqs)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def model_bytes(self) -> bytes:
        return self.proto

    def same_subwords(self, other: Vocab) -> bool:
        """Whether ``other`` has these subwords under the same ids (its model file may differ,
        e.g. in the folder it was trained in, which SentencePiece records)."""
        return len(self) == len(other) and self.pieces(range(len(self))) == other.pieces(
            range(len(other))
        )


def strip_specials(ids: Sequence[int]) -> list[int]:
    """Cut a hypothesis at its first </s> and drop <pad> and <s>."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


def train_sentencepiece(
    sentences: Iterable[str],
    model_prefix: Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    input_sentence_size: int = 200_000,
    seed: int = 1234,
    size_key: str = "data.vocab size",
) -> Path:
    """Train a SentencePiece model on ``sentences``; write ``<prefix>.model`` atomically.

    The model is trained under a temporary prefix and renamed into place, so an interrupted run
    never leaves a model that looks finished.
    """
    if model_type not in ("unigram", "bpe"):
        raise NMTError(f"data.vocab.model_type: expected 'unigram' or 'bpe', got {model_type!r}")
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_prefix.parent) as tmp:
        text_path = Path(tmp) / "input.txt"
        with open(text_path, "w", encoding="utf-8") as f:
            for line in sentences:
                f.write(line + "\n")
        tmp_prefix = Path(tmp) / "spm"
        spm.set_random_generator_seed(seed)  # sampling of input_sentence_size is reproducible
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_path),
                model_prefix=str(tmp_prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                hard_vocab_limit=True,
                minloglevel=2,
            )
        except RuntimeError as err:
            message = str(err).strip().splitlines()[-1] if str(err) else "training failed"
            limit = re.search(r"value <= (\d+)", message)
            if limit:
                raise NMTError(
                    f"{size_key}={vocab_size} is larger than the training text allows: "
                    f"expected at most {limit.group(1)}"
                ) from None
            too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
            if too_small:
                raise NMTError(
                    f"{size_key}={vocab_size} is smaller than the {too_small.group(2)} characters "
                    f"the text needs at character coverage {character_coverage}: raise it"
                ) from None
            raise NMTError(f"SentencePiece training for {model_prefix}: {message}") from None
        final = Path(f"{model_prefix}.model")
        for suffix in (".vocab", ".model"):  # durably (nmt.core.io), the model last
            write_bytes_atomic(
                f"{model_prefix}{suffix}", Path(f"{tmp_prefix}{suffix}").read_bytes()
            )
    return final
