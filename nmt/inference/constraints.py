"""Lexical constraints: target phrases an output must contain, and dynamic beam allocation.

A sentence may come with constraints: phrases of target subword ids that its translation must
contain (a glossary's Korean term, a product name). The beam search meets them with **dynamic
beam allocation** (DBA; Post & Vilar 2018, vectorised as Hu et al. 2019 and fairseq's
``LexicallyConstrainedBeamSearch``):

* **Progress.** A hypothesis's progress is the set of phrases it has completed and, at most one
  at a time, the phrase it is in the middle of with the number of its tokens produced so far
  (:class:`ConstraintState`). A token that breaks the phrase it is in unwinds that progress (the
  tokens stay in the output as ordinary words); a token that starts an unmet phrase starts it.
  Its *bank* is the number of constraint tokens it has met:
  ``Σ len(completed phrases) + tokens of the current one``.
* **Candidates.** Besides each hypothesis's ``beam_size`` best next tokens, every hypothesis
  offers the tokens that would advance it: the next token of its current phrase, or else the
  first token of each phrase it has not met (:func:`next_tokens`), with their model
  log-probabilities. ``</s>`` is allowed only to a hypothesis that has met every phrase.
* **Allocation.** The beam's slots are dealt round-robin over the banks, highest bank first,
  each bank's candidates in score order (:func:`allocate`): a hypothesis that has met more of the
  constraints is kept even when its score is lower, and no bank takes slots another could use.
  A sentence without constraints has one bank, and the allocation is the plain beam's top-k.

Scores stay the model's: a hypothesis's ``log_prob`` is the teacher-forced sum of its tokens'
log-probabilities whichever way a token was proposed. Greedy search with constraints is this
search with one hypothesis, which takes each phrase as soon as it is proposed.

*Negative* constraints — phrases an output must not contain — are cheaper: the token that would
complete one is never chosen (:func:`block_avoided`, as repeated n-grams are blocked).

A phrase that the search could not fit (longer than what is left of the length limit, or
outscored everywhere) is reported by :func:`missing_phrases`, which checks the final tokens
themselves: a hypothesis contains a phrase when the phrase's ids occur in it contiguously.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.core.special_ids import PAD_ID

Phrases = Sequence[Sequence[int]]  # one sentence's constraints: each a list of target ids


@dataclass
class PhraseTable:
    """The constraints of a batch of sentences, padded into tensors.

    tokens: (batch, C, L) long, phrase ``c`` of sentence ``i`` in ``tokens[i, c, :lengths[i, c]]``,
        ``<pad>`` after it; C is the most phrases of any sentence, L the longest phrase.
    lengths: (batch, C) long, 0 for the padding phrases of a sentence with fewer.
    totals: (batch,) long, every phrase's tokens added up: the highest bank.
    """

    tokens: Tensor
    lengths: Tensor
    totals: Tensor

    @classmethod
    def build(cls, constraints: Sequence[Phrases], device: torch.device) -> PhraseTable:
        """From each sentence's phrases (empty phrases are the caller's error to report)."""
        num_phrases = max((len(p) for p in constraints), default=0)
        longest = max((len(ids) for p in constraints for ids in p), default=0)
        batch = len(constraints)
        tokens = torch.full((batch, max(num_phrases, 1), max(longest, 1)), PAD_ID, dtype=torch.long)
        lengths = torch.zeros(batch, max(num_phrases, 1), dtype=torch.long)
        for i, phrases in enumerate(constraints):
            for c, ids in enumerate(phrases):
                tokens[i, c, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
                lengths[i, c] = len(ids)
        return cls(tokens.to(device), lengths.to(device), lengths.sum(dim=1).to(device))

    def repeat(self, times: int) -> PhraseTable:
        """Each sentence's rows ``times`` times over: one entry per hypothesis of a beam."""
        return PhraseTable(
            self.tokens.repeat_interleave(times, dim=0),
            self.lengths.repeat_interleave(times, dim=0),
            self.totals.repeat_interleave(times, dim=0),
        )

    def take(self, rows: Tensor) -> PhraseTable:
        return PhraseTable(self.tokens[rows], self.lengths[rows], self.totals[rows])


@dataclass
class ConstraintState:
    """Each hypothesis's progress through its sentence's phrases, one row per hypothesis.

    met: (rows, C) bool, the phrases completed (a padding phrase counts as met).
    current: (rows,) long, the phrase being produced, -1 when none.
    progress: (rows,) long, how many of ``current``'s tokens have been produced (0 when none).
    """

    met: Tensor
    current: Tensor
    progress: Tensor

    @classmethod
    def start(cls, table: PhraseTable) -> ConstraintState:
        """Nothing produced yet: only the padding phrases count as met."""
        rows = table.lengths.size(0)
        device = table.lengths.device
        return cls(
            met=table.lengths == 0,
            current=torch.full((rows,), -1, dtype=torch.long, device=device),
            progress=torch.zeros(rows, dtype=torch.long, device=device),
        )

    def take(self, rows: Tensor) -> ConstraintState:
        return ConstraintState(self.met[rows], self.current[rows], self.progress[rows])

    def put(self, rows: Tensor, part: ConstraintState) -> None:
        self.met[rows] = part.met
        self.current[rows] = part.current
        self.progress[rows] = part.progress

    def banks(self, table: PhraseTable) -> Tensor:
        """(rows,) constraint tokens met: the completed phrases' lengths plus the progress; for
        a state of candidates, (rows, K), as :func:`advance` returns it."""
        lengths = table.lengths.view(len(table.lengths), *[1] * (self.met.dim() - 2), -1)
        return (self.met.long() * lengths).sum(dim=-1) + self.progress

    def all_met(self) -> Tensor:
        """(rows,) bool: every phrase completed (always true without constraints)."""
        return self.met.all(dim=-1)


def next_tokens(table: PhraseTable, state: ConstraintState) -> Tensor:
    """(rows, C) long: the token that would advance each hypothesis on each phrase, -1 for none.

    A hypothesis in the middle of phrase ``c`` is offered only that phrase's next token (in
    column ``c``); one between phrases, the first token of every phrase it has not met.
    """
    in_phrase = state.current >= 0  # (rows,)
    current = state.current.clamp(min=0)
    rows = torch.arange(current.numel(), device=current.device)
    following = table.tokens[rows, current, state.progress]  # (rows,) the current phrase's next
    firsts = table.tokens[:, :, 0].masked_fill(state.met, -1)  # (rows, C)
    continuing = torch.full_like(firsts, -1)
    continuing[rows, current] = following
    return torch.where(in_phrase[:, None], continuing, firsts)


def advance(
    table: PhraseTable, state: ConstraintState, tokens: Tensor, frozen: Tensor
) -> ConstraintState:
    """The progress of each hypothesis extended by each of its candidate ``tokens``.

    table, state: (rows, ...); tokens: (rows, K) candidate next tokens; frozen: (rows,) bool,
    hypotheses that do not grow (finished ones), whose progress stays as it is. Returns a state
    of shape (rows, K, ...): ``met`` (rows, K, C), ``current`` and ``progress`` (rows, K).
    """
    rows, cands = tokens.shape
    num_phrases = table.lengths.size(1)
    current = state.current[:, None].expand(rows, cands)  # (rows, K)
    progress = state.progress[:, None].expand(rows, cands)
    met = state.met[:, None, :].expand(rows, cands, num_phrases)  # (rows, K, C)
    row_idx = torch.arange(rows, device=tokens.device)[:, None]  # (rows, 1)

    # continue the current phrase?
    phrase = current.clamp(min=0)
    expected = table.tokens[row_idx, phrase, progress]  # (rows, K)
    continues = (current >= 0) & (tokens == expected)
    completes = continues & (progress + 1 == table.lengths[row_idx, phrase])

    # otherwise (the progress unwound, or there was none): start the first unmet phrase it begins
    begins = (~met) & (table.tokens[:, None, :, 0] == tokens[..., None])  # (rows, K, C)
    starts = ~continues & begins.any(dim=-1)
    started = begins.long().argmax(dim=-1)  # (rows, K) the first such phrase
    started_alone = starts & (table.lengths[row_idx, started] == 1)  # a one-token phrase: met

    new_current = torch.where(continues & ~completes, current, -1)
    new_current = torch.where(starts & ~started_alone, started, new_current)
    new_progress = torch.where(continues & ~completes, progress + 1, 0)
    new_progress = torch.where(starts & ~started_alone, 1, new_progress)
    completed = F.one_hot(phrase, num_phrases).bool() & completes[..., None]
    completed |= F.one_hot(started, num_phrases).bool() & started_alone[..., None]
    new_met = met | completed

    keep = frozen[:, None]  # (rows, 1)
    return ConstraintState(
        met=torch.where(keep[..., None], met, new_met),
        current=torch.where(keep, current, new_current),
        progress=torch.where(keep, progress, new_progress),
    )


def allocate(values: Tensor, banks: Tensor, num_banks: int, beam_size: int) -> Tensor:
    """Dynamic beam allocation: which ``beam_size`` candidates of each sentence to keep.

    values: (sentences, N) candidate scores (-inf: not a candidate); banks: (sentences, N) long,
    each candidate's constraint tokens met, ``< num_banks``. Candidates are ranked within their
    bank by score and dealt round-robin, the highest bank first: slot order is (rank in bank,
    higher bank first). Returns (sentences, beam_size) indices into N, in slot order; with one
    bank this is ``values.topk(beam_size)``'s order. Non-candidates come last.
    """
    order = values.argsort(dim=1, descending=True, stable=True)  # (S, N) best first
    sorted_banks = banks.gather(1, order)
    one_hot = F.one_hot(sorted_banks, num_banks)  # (S, N, B)
    rank_in_bank = (one_hot.cumsum(dim=1) * one_hot).sum(dim=-1) - 1  # (S, N)
    key = (rank_in_bank * num_banks + (num_banks - 1 - sorted_banks)).double()
    key = key.masked_fill(values.gather(1, order) == -float("inf"), float("inf"))
    slots = key.topk(beam_size, dim=1, largest=False, sorted=True).indices  # (S, beam)
    return order.gather(1, slots)


def block_avoided(log_probs: Tensor, history: Tensor, table: PhraseTable) -> None:
    """Negative constraints: set to -inf, in place, every token that would complete one of its
    row's avoided phrases.

    log_probs: (rows, V); history: (rows, t) the tokens each row has produced; table: the
    avoided phrases of the same rows. A phrase of ``m + 1`` tokens is completed by its last
    token when the row's last ``m`` tokens are its first ``m`` (a one-token phrase: always), so
    no output ever contains it (as subwords: the phrase as it segments at a word's start).
    """
    longest, produced = table.tokens.size(2), history.size(1)
    for m in range(min(longest, produced + 1)):  # m: the length of the prefix already produced
        completes = table.lengths == m + 1  # (rows, A)
        if m:
            tail = history[:, None, produced - m :]  # (rows, 1, m)
            completes &= (table.tokens[:, :, :m] == tail).all(dim=-1)
        # a phrase that is not completed writes to <pad>, which is -inf already
        last = table.tokens[:, :, m].masked_fill(~completes, PAD_ID)  # (rows, A)
        log_probs.scatter_(1, last, -float("inf"))


def find_phrase(tokens: Sequence[int], phrase: Sequence[int]) -> int | None:
    """The first position at which ``phrase`` occurs in ``tokens`` contiguously, or None."""
    width = len(phrase)
    for start in range(len(tokens) - width + 1):
        if list(tokens[start : start + width]) == list(phrase):
            return start
    return None


def missing_phrases(tokens: Sequence[int], phrases: Phrases) -> list[int]:
    """The indices of the ``phrases`` that ``tokens`` does not contain."""
    return [c for c, phrase in enumerate(phrases) if find_phrase(tokens, phrase) is None]


def phrase_positions(tokens: Sequence[int], phrases: Phrases) -> list[int]:
    """Sorted positions of ``tokens`` that belong to the first occurrence of any phrase (what
    the explorer and the demo mark as constrained)."""
    marked: set[int] = set()
    for phrase in phrases:
        start = find_phrase(tokens, phrase)
        if start is not None:
            marked.update(range(start, start + len(phrase)))
    return sorted(marked)
