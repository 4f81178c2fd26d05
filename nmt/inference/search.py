"""Greedy and beam search over a trained :class:`~nmt.models.Seq2Seq`, batched over sentences.

Text in and :class:`~nmt.inference.translator.Translation` out is :mod:`nmt.inference.translator`'s job; this module
works on subword ids.

Both searches are batched over sentences and step the decoder one target position at a time
through the model's step API::

    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    logits, attn_weights, state = model.step(prev_tokens, state, memory)

Conventions shared by both searches:

* **Forbidden outputs.** ``<pad>`` and ``<s>`` are never predicted (their log-probability is set
  to -inf, without renormalising), so a hypothesis's ``log_prob`` is exactly the sum of the
  model's teacher-forced log-probabilities of its tokens and its ``</s>``.
* **Length.** A hypothesis's length is the number of tokens it predicted, ``</s>`` included when
  it has one. Sentence ``i`` stops after at most
  ``max_len[i] = floor(max_len_ratio * src_lengths[i] + max_len_offset)`` predicted tokens
  (``src_lengths`` as given to the model, i.e. with the source ``</s>``); a hypothesis stopped
  there without ``</s>`` has ``hit_max_len=True``. The limit is per sentence, so a translation
  never depends on the other sentences of its batch.
* **Score.** ``score = log_prob / lp(length)`` with GNMT's length penalty
  ``lp(n) = ((5 + n) / 6) ** alpha`` (Wu et al. 2016, eq. 14); ``alpha = 0`` gives
  ``score == log_prob``.
* **Repeated n-grams** (``no_repeat_ngram_size = n > 0``; fairseq's ``--no-repeat-ngram-size``,
  OpenNMT-py's ``block_ngram_repeat``). A hypothesis may not produce an n-gram of target ids that
  it already contains: a token that would complete one gets -inf like the forbidden ids, before
  the choice and without renormalising, so ``log_prob`` stays the teacher-forced sum
  (:func:`block_repeated_ngrams`). ``</s>`` is never blocked (a live hypothesis has not produced
  it), so a hypothesis can always end. ``n = 1`` forbids producing any token twice.

Speed: a step is one decoder call on all unfinished rows, tensor ops over them, and one host
sync (is every sentence done?); there is no Python loop over hypotheses. Sentences that are done
leave the decoder's batch (:class:`_Decoding`), and beam search finds its top ``k`` of ``k * V``
candidates with two small ``topk`` calls instead of one over ``k * V`` (:func:`_beam_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.core.runtime import Precision, autocast_context, resolve_precision
from nmt.core.settings import check_fields, load_settings, setting
from nmt.core.special_ids import BOS_ID, EOS_ID, PAD_ID
from nmt.data.batching import pad
from nmt.inference.constraints import (
    ConstraintState,
    Phrases,
    PhraseTable,
    advance,
    allocate,
    block_avoided,
    missing_phrases,
    next_tokens,
)
from nmt.models import DecoderState, Memory, Seq2Seq

FORBIDDEN_IDS = (PAD_ID, BOS_ID)  # never predicted


SEARCH_NAMES = ("greedy", "beam")


@dataclass(frozen=True)
class SearchSettings:
    """The search and its parameters: the ``search`` config group, typed and checked.

    ``name`` greedy or beam; ``beam_size`` hypotheses kept per sentence (beam); ``n_best``
    hypotheses returned per sentence (1 <= n_best <= beam_size); ``length_penalty`` GNMT's alpha;
    ``max_len_ratio`` / ``max_len_offset`` the per-sentence length limit; ``no_repeat_ngram_size``
    n > 0 blocks repeated n-grams; ``batch_size`` sentences decoded together, and at most
    ``batch_tokens`` source subwords, padding included, in one decoder call's hypotheses
    (sentences × ``beam_size`` × the longest source, ``</s>`` included; 0: no such limit; CPU
    only: :meth:`padded_budget`); ``precision`` the autocast the search runs under (fp32, bf16, or
    auto: :func:`nmt.inference.search.search_precision`).
    """

    name: str = setting(choices=SEARCH_NAMES, default="beam")
    beam_size: int = setting(ge=1, default=5)
    length_penalty: float = setting(ge=0, default=2.0)
    max_len_ratio: float = setting(ge=0, default=1.5)
    max_len_offset: float = setting(ge=0, default=10)
    n_best: int = setting(ge=1, default=1)
    no_repeat_ngram_size: int = setting(ge=0, default=4)
    batch_size: int = setting(ge=1, default=64)
    batch_tokens: int = setting(ge=0, default=10240)
    precision: str = setting(choices=("auto", "fp32", "bf16"), default="auto")

    def __post_init__(self) -> None:
        check_fields(self, "search")
        limit = self.hypotheses
        if self.n_best > limit:
            raise NMTError(
                f"search.n_best: expected 1 <= n_best <= {limit} "
                f"({'greedy search keeps one hypothesis' if self.name == 'greedy' else 'beam_size'}"
                f"); got {self.n_best}"
            )

    @classmethod
    def from_config(cls, search_cfg: Any, **overrides: Any) -> SearchSettings:
        """From a ``search`` mapping (a checkpoint's stored settings), with keyword ``overrides``.

        A key the settings do not know is an error naming it. ``beam_size`` given without
        ``name`` picks the search: 1 → greedy, more → beam. Configs saved before
        ``no_repeat_ngram_size`` or ``precision`` existed decode as they did (0: off; fp32).
        """
        values = {
            "no_repeat_ngram_size": 0,
            "precision": "fp32",
            **(search_cfg or {}),
        }
        if "beam_size" in overrides and "name" not in overrides:
            overrides["name"] = "greedy" if overrides["beam_size"] == 1 else "beam"
        if overrides.get("name") == "greedy" and "beam_size" not in overrides:
            overrides["beam_size"] = 1
        values = {**values, **overrides}
        for key in (f.name for f in fields(cls)):
            if key in values and values[key] is None:
                raise NMTError(
                    f"search.{key}: no value; search=checkpoint takes the settings of the "
                    "checkpoint being decoded, so it works in translate and evaluate, not here"
                )
        return load_settings(cls, values, "search")

    def replace(self, **overrides: Any) -> SearchSettings:
        """These settings with ``overrides`` (same rules as :meth:`from_config`)."""
        return SearchSettings.from_config(asdict(self), **overrides)

    @property
    def hypotheses(self) -> int:
        """Hypotheses kept per sentence: 1 for greedy (which ignores ``beam_size``)."""
        return 1 if self.name == "greedy" else self.beam_size

    def padded_budget(self, device_type: str) -> int | None:
        """``batch_tokens`` per sentence's worth of hypotheses, on the CPU: the most
        sentences × longest source of one batch (:func:`nmt.inference.search.padded_chunks`); None: no
        limit. Counted over the hypotheses because a step's cost grows with its rows (sentences ×
        beam): with one budget in sentences × longest, beam 5 was fastest at 2,048 but greedy
        14–18% slower than with no limit (enko/test, 2-core EPYC). Not on a GPU, where a step is
        bound by kernel launches, not arithmetic, and larger batches win (docs/benchmarks.md:
        batches of 512 on the H200)."""
        if not self.batch_tokens or device_type != "cpu":
            return None
        return self.batch_tokens // self.hypotheses


@dataclass
class Hypothesis:
    """One output of a search.

    tokens: predicted target ids without ``<s>`` and ``</s>``.
    score: ``log_prob`` divided by the length penalty; what the beam ranks by.
    log_prob: sum of the log-probabilities of ``tokens`` and, when present, the final ``</s>``.
    attn_weights: (len(tokens) + 1 if it ended with ``</s>`` else len(tokens), src_len) attention
        weights of each predicted position over this sentence's source (padding trimmed).
    hit_max_len: the hypothesis was stopped by the length limit, not by ``</s>``.
    missing_constraints: the indices of the sentence's constraints that ``tokens`` does not
        contain (:func:`nmt.inference.constraints.missing_phrases`); empty without constraints.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attn_weights: torch.Tensor
    hit_max_len: bool
    missing_constraints: list[int] = field(default_factory=list)


@dataclass
class SearchResult:
    """``hypotheses[i]``: the n-best list of sentence ``i`` of the batch, best score first."""

    hypotheses: list[list[Hypothesis]]


def gnmt_length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14).

    lengths: (...) long. Returns (...) float; exactly 1.0 when ``alpha == 0``.
    """
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def max_lengths(
    src_lengths: torch.Tensor, max_len_ratio: float, max_len_offset: float
) -> torch.Tensor:
    """Per-sentence limit ``floor(max_len_ratio * src_length + max_len_offset)``, at least 0.

    src_lengths: (batch,). Returns (batch,) long, on the same device.
    """
    limit = torch.floor(src_lengths.double() * max_len_ratio + max_len_offset)
    return limit.clamp(min=0).long()


def _predictable_log_probs(
    logits: torch.Tensor,
    history: torch.Tensor | None,
    no_repeat_ngram_size: int,
    avoid: PhraseTable | None = None,
) -> torch.Tensor:
    """log_softmax of ``logits`` (rows, V), in fp32, with the forbidden ids set to -inf, and
    the tokens that would repeat an n-gram of the row's ``history`` (rows, steps) or complete
    one of its ``avoid`` phrases too."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (rows, V)
    log_probs[:, list(FORBIDDEN_IDS)] = -math.inf
    if history is not None:
        block_repeated_ngrams(log_probs, history, no_repeat_ngram_size)
        if avoid is not None:
            block_avoided(log_probs, history, avoid)
    return log_probs


def _avoid_table(
    avoid: Sequence[Phrases] | None, batch: int, per_sentence: int, device: torch.device
) -> PhraseTable | None:
    """The avoided phrases of each row (``per_sentence`` rows a sentence); None without any."""
    if avoid is None or not any(avoid):
        return None
    if len(avoid) != batch:
        raise ValueError(f"avoid: {len(avoid)} lists for {batch} sentences")
    return PhraseTable.build(avoid, device).repeat(per_sentence)


def block_repeated_ngrams(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Set to -inf, in place, every token that would complete an n-gram its row already holds.

    log_probs: (rows, V); history: (rows, t) long, the tokens each row has produced so far.
    The row's last ``n - 1`` tokens are compared with each earlier window of ``n - 1`` tokens;
    the token that followed a matching window is blocked. ``n = 1`` blocks every token of the
    history; ``n = 0`` (off) and ``t < n - 1`` (no complete window yet) block nothing.
    """
    t = history.size(1)
    if n == 0 or t < n - 1:
        return
    followers = history[:, n - 1 :]  # (rows, t-n+1) the token after each earlier window
    if n > 1:
        windows = history.unfold(1, n - 1, 1)  # (rows, t-n+2, n-1); the last is the row's tail
        seen = (windows[:, :-1] == windows[:, -1:]).all(dim=2)  # (rows, t-n+1)
        # a window that does not match writes to <pad>, which is -inf already
        followers = followers.masked_fill(~seen, PAD_ID)
    log_probs.scatter_(1, followers, -math.inf)


def _check_no_repeat_ngram_size(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise NMTError(
            "search.no_repeat_ngram_size: expected an integer >= 0 (0: off; n: no hypothesis "
            f"produces an n-gram twice; 1: no token twice), got {n!r}"
        )


# --------------------------------------------------------------------------------------------
# The decoder's batch, which shrinks as sentences finish
# --------------------------------------------------------------------------------------------


@dataclass
class _Decoding:
    """The sentences still being decoded, and the decoder inputs of their rows.

    Each sentence owns ``per_sentence`` consecutive rows (1 for greedy, ``beam_size`` for beam).
    Results are kept in full-size tensors, one entry per row of the whole batch; ``rows`` maps
    the decoder's current rows to them. Sentences that are done are dropped from the decoder's
    batch, so the remaining steps cost less. ``history`` (kept only when repeated n-grams are
    blocked) holds each row's tokens so far and follows the rows like the decoder state.
    """

    per_sentence: int
    sentences: torch.Tensor  # (active,) indices into the batch
    rows: torch.Tensor  # (active*per_sentence,) indices into the full rows
    memory: Memory
    state: DecoderState
    prev: torch.Tensor  # (active*per_sentence,) the tokens to feed next
    history: torch.Tensor | None  # (active*per_sentence, steps) tokens so far, or None

    @classmethod
    def start(
        cls,
        model: Seq2Seq,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        per_sentence: int,
        keep_history: bool,
    ):
        """Encode the batch; repeat each sentence's memory and state ``per_sentence`` times."""
        batch, device = src.size(0), src.device
        memory = model.encode(src, src_lengths)
        state = model.init_state(memory)
        if per_sentence > 1:
            repeat = torch.arange(batch, device=device).repeat_interleave(per_sentence)
            memory = memory.index_select(repeat)  # (batch*per, ...) every copy the same source
            state = state.index_select(repeat)
        rows = torch.arange(batch * per_sentence, device=device)
        prev = torch.full_like(rows, BOS_ID)
        history = torch.empty(rows.numel(), 0, dtype=torch.long, device=device)
        sentences = torch.arange(batch, device=device)
        return cls(
            per_sentence, sentences, rows, memory, state, prev, history if keep_history else None
        )

    def step(self, model: Seq2Seq) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder step on the active rows: logits (rows, V), attn_weights (rows, src_len)."""
        logits, attn_weights, self.state = model.step(self.prev, self.state, self.memory)
        return logits, attn_weights

    def advance(self, token: torch.Tensor, parent: torch.Tensor | None = None) -> None:
        """Row ``j`` now extends row ``parent[j]`` (itself when ``parent`` is None) with
        ``token[j]``; both (active*per,), ``parent`` indexing the active rows."""
        if parent is not None:
            self.state = self.state.index_select(parent)
        if self.history is not None:
            before = self.history if parent is None else self.history[parent]  # (rows, steps)
            self.history = torch.cat([before, token[:, None]], dim=1)  # (rows, steps+1)
        self.prev = token

    def drop_done(self, done: torch.Tensor) -> None:
        """Keep only the sentences whose entry in ``done`` (batch,) is False."""
        keep = (~done[self.sentences]).nonzero().squeeze(1)  # (kept,) positions among the active
        offsets = torch.arange(self.per_sentence, device=keep.device)
        keep_rows = (keep[:, None] * self.per_sentence + offsets).view(-1)  # (kept*per,)
        self.sentences = self.sentences[keep]
        self.rows = self.rows[keep_rows]
        self.memory = self.memory.index_select(keep_rows)
        self.state = self.state.index_select(keep_rows)
        self.prev = self.prev[keep_rows]
        if self.history is not None:
            self.history = self.history[keep_rows]


def _decoding_steps(decoding: _Decoding, done: torch.Tensor, max_steps: int):
    """Yield step numbers until every sentence is done, dropping done sentences first.

    ``done`` (batch,) is read each time, so the caller updates it in place. Reading it is the
    one host sync per step; dropping sentences (a second sync) happens only when some finished.
    """
    batch = done.numel()
    for step in range(max_steps):
        num_done = int(done.sum())
        if num_done == batch:
            return
        if num_done > batch - decoding.sentences.numel():
            decoding.drop_done(done)
        yield step


def _rows_of(table: PhraseTable | None, rows: torch.Tensor) -> PhraseTable | None:
    return table.take(rows) if table is not None else None


def _spread(values: torch.Tensor, rows: torch.Tensor, num_rows: int, fill: float) -> torch.Tensor:
    """values (n, ...) of ``rows`` (n,) → (num_rows, ...) with ``fill`` in the other rows."""
    out = values.new_full((num_rows, *values.shape[1:]), fill)
    out[rows] = values
    return out


# --------------------------------------------------------------------------------------------
# Greedy search
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_ratio: float,
    max_len_offset: float,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    avoid: Sequence[Phrases] | None = None,
) -> SearchResult:
    """Pick the most probable token at every step until ``</s>`` or the sentence's length limit.

    src: (batch, src_len) long, padded with ``<pad>``; src_lengths: (batch,).
    ``length_penalty`` (alpha) changes only the reported ``score`` (greedy's choice does not
    depend on it); pass the beam's alpha to compare scores with :func:`beam_search`.
    ``no_repeat_ngram_size`` > 0 picks among the tokens that repeat no n-gram of the hypothesis;
    ``avoid[i]``, phrases of target ids sentence ``i``'s output must not contain, among those
    that complete none (:func:`~nmt.inference.constraints.block_avoided`).
    A finished sentence leaves the decoder's batch. The caller puts the model in eval mode.
    """
    _check_no_repeat_ngram_size(no_repeat_ngram_size)
    batch, src_len = src.shape
    device = src.device
    max_lens = max_lengths(src_lengths, max_len_ratio, max_len_offset).to(device)  # (batch,)
    avoided = _avoid_table(avoid, batch, 1, device)
    keep_history = no_repeat_ngram_size > 0 or avoided is not None
    decoding = _Decoding.start(model, src, src_lengths, per_sentence=1, keep_history=keep_history)
    log_prob = torch.zeros(batch, device=device)  # (batch,)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (batch,)
    finished = max_lens == 0  # (batch,)
    hit_max = finished.clone()  # (batch,)

    step_tokens, step_attn = [], []
    for step in _decoding_steps(decoding, finished, int(max_lens.max()) if batch else 0):
        rows = decoding.rows  # (active,) every one of them unfinished
        logits, attn_weights = decoding.step(model)  # (active, V), (active, src_len)
        log_probs = _predictable_log_probs(
            logits, decoding.history, no_repeat_ngram_size, _rows_of(avoided, rows)
        )
        best_log_prob, token = log_probs.max(dim=-1)  # (active,), (active,)
        log_prob[rows] = log_prob[rows] + best_log_prob
        lengths[rows] = step + 1
        stopped_by_length = (token != EOS_ID) & (step + 1 >= max_lens[rows])
        hit_max[rows] = stopped_by_length
        finished[rows] = (token == EOS_ID) | stopped_by_length
        step_tokens.append(_spread(token, rows, batch, PAD_ID))
        step_attn.append(_spread(attn_weights, rows, batch, 0.0))
        decoding.advance(token)

    tokens, attn = _stack_steps(step_tokens, step_attn, batch, src_len, device)
    score = log_prob / gnmt_length_penalty(lengths, length_penalty)
    hyps = _hypotheses(tokens, attn, lengths, log_prob, score, hit_max, src_lengths)
    return SearchResult([[hyp] for hyp in hyps])


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------


@dataclass
class _Beams:
    """Per-hypothesis beam state, one row per hypothesis.

    Rows ``i * beam_size ... (i + 1) * beam_size - 1`` belong to sentence ``i``; after every step
    they are sorted by score, best first.
    """

    log_prob: torch.Tensor  # (rows,) fp32; -inf for an empty slot
    lengths: torch.Tensor  # (rows,) long, predicted tokens so far
    finished: torch.Tensor  # (rows,) bool: ended by </s>, by the length limit, or empty
    hit_max: torch.Tensor  # (rows,) bool
    constraint: ConstraintState | None = None  # each row's progress through its constraints

    def take(self, rows: torch.Tensor) -> _Beams:
        constraint = self.constraint.take(rows) if self.constraint is not None else None
        return _Beams(
            self.log_prob[rows],
            self.lengths[rows],
            self.finished[rows],
            self.hit_max[rows],
            constraint,
        )

    def put(self, rows: torch.Tensor, part: _Beams) -> None:
        self.log_prob[rows] = part.log_prob
        self.lengths[rows] = part.lengths
        self.finished[rows] = part.finished
        self.hit_max[rows] = part.hit_max
        if self.constraint is not None and part.constraint is not None:
            self.constraint.put(rows, part.constraint)


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int,
    length_penalty: float,
    max_len_ratio: float,
    max_len_offset: float,
    n_best: int = 1,
    no_repeat_ngram_size: int = 0,
    constraints: Sequence[Phrases] | None = None,
    avoid: Sequence[Phrases] | None = None,
) -> SearchResult:
    """Batched beam search with GNMT length penalty; returns each sentence's ``n_best`` best.

    src: (batch, src_len) long, padded with ``<pad>``; src_lengths: (batch,).

    Every sentence keeps ``beam_size`` hypotheses, all in one tensor of ``batch * beam_size``
    rows, so a step is one decoder call, one ``topk`` over ``beam_size * V`` candidates per
    sentence and one reorder of the decoder state:

    1. Each row's candidates are its log-prob plus the step's log-probabilities of every token
       (with ``no_repeat_ngram_size`` > 0, -inf for a token that repeats an n-gram of the row).
       A *finished* row offers exactly one candidate: itself unchanged (token ``<pad>``, +0, same
       length; every other token -inf), so it stays finished and never grows.
    2. Candidates are ranked by their length-penalised score, each with its own length, so a
       finished hypothesis competes fairly with the longer live ones.
    3. The best ``beam_size`` candidates of each sentence become its new rows; a row whose new
       token is ``</s>``, or that reached the sentence's length limit, is finished.
    4. A sentence is *done* when its ``n_best`` best rows are all finished, and leaves the
       decoder's batch. With ``alpha = 0`` this is exact: a live hypothesis's log-prob can only
       fall, so it can never overtake a finished one ranked above it. The loop ends when every
       sentence is done.

    Tokens, attention rows and the parent of every row are kept per step and followed back from
    the final rows once, at the end. With ``beam_size = 1`` the result equals
    :func:`greedy_search` (given the same alpha and ``no_repeat_ngram_size``). The caller puts
    the model in eval mode.

    ``constraints[i]``: phrases of target ids that sentence ``i``'s outputs must contain. When
    any sentence has one, each step is :func:`_constrained_beam_step` (dynamic beam allocation,
    :mod:`nmt.inference.constraints`); a sentence's rows are then ordered hypotheses that meet
    all its constraints first, and every hypothesis lists the ones it misses
    (``missing_constraints``). A sentence with no constraints decodes as without them.
    ``avoid[i]``: phrases sentence ``i``'s outputs must not contain (as :func:`greedy_search`).
    """
    _check_no_repeat_ngram_size(no_repeat_ngram_size)
    if beam_size < 1:
        raise NMTError(f"search.beam_size: expected an integer >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise NMTError(
            f"search.n_best: expected 1 <= n_best <= beam_size ({beam_size}), got {n_best}"
        )
    batch, src_len = src.shape
    num_rows = batch * beam_size
    device = src.device
    max_lens = max_lengths(src_lengths, max_len_ratio, max_len_offset).to(device)  # (batch,)
    row_max_lens = max_lens.repeat_interleave(beam_size)  # (batch*beam,)
    avoided = _avoid_table(avoid, batch, beam_size, device)
    keep_history = no_repeat_ngram_size > 0 or avoided is not None
    decoding = _Decoding.start(
        model, src, src_lengths, per_sentence=beam_size, keep_history=keep_history
    )
    beams = _initial_beams(batch, beam_size, max_lens, device)
    done = max_lens == 0  # (batch,)
    table = None
    if constraints is not None and any(constraints):
        if len(constraints) != batch:
            raise ValueError(f"constraints: {len(constraints)} lists for {batch} sentences")
        table = PhraseTable.build(constraints, device).repeat(beam_size)  # (batch*beam, ...)
        beams.constraint = ConstraintState.start(table)
        num_banks = int(table.totals.max()) + 1

    history = _History(num_rows, src_len)
    for step in _decoding_steps(decoding, done, int(max_lens.max()) if batch else 0):
        rows = decoding.rows  # (active*beam,)
        logits, attn_weights = decoding.step(model)  # (active*beam, V), (active*beam, src_len)
        log_probs = _predictable_log_probs(
            logits, decoding.history, no_repeat_ngram_size, _rows_of(avoided, rows)
        )
        if table is None:
            parent, token, part = _beam_step(
                log_probs, beams.take(rows), step, beam_size, length_penalty, row_max_lens[rows]
            )  # parent: (active*beam,) among the active rows
        else:
            parent, token, part = _constrained_beam_step(
                log_probs,
                beams.take(rows),
                table.take(rows),
                num_banks,
                step,
                beam_size,
                length_penalty,
                row_max_lens[rows],
            )
        beams.put(rows, part)
        done[decoding.sentences] = part.finished.view(-1, beam_size)[:, :n_best].all(dim=1)
        decoding.advance(token, parent)
        history.record(rows, parent, token, attn_weights)
    result = _collect_nbest(beams, history, src_lengths, beam_size, n_best, length_penalty)
    if table is not None:
        for phrases, nbest in zip(constraints, result.hypotheses, strict=True):
            for hyp in nbest:
                hyp.missing_constraints = missing_phrases(hyp.tokens, phrases)
    return result


class _History:
    """What every one of the batch*beam rows became at each step, to be read back at the end.

    Per step: ``tokens`` (batch*beam,), the token appended (``<pad>`` if none);
    ``attn_weights`` (batch*beam, src_len), the attention that predicted it; ``parents``
    (batch*beam,), the row it extended (itself for a row that did not step).
    """

    def __init__(self, num_rows: int, src_len: int):
        self.num_rows = num_rows
        self.src_len = src_len
        self.tokens: list[torch.Tensor] = []
        self.attn_weights: list[torch.Tensor] = []
        self.parents: list[torch.Tensor] = []

    def record(
        self,
        rows: torch.Tensor,
        parent: torch.Tensor,
        token: torch.Tensor,
        attn_weights: torch.Tensor,
    ) -> None:
        """One step of the active ``rows`` (n,): ``rows[j]`` now extends ``rows[parent[j]]``
        with ``token[j]``; attn_weights (n, src_len) is indexed by the rows before the step."""
        self.tokens.append(_spread(token, rows, self.num_rows, PAD_ID))
        attn_of_new_rows = attn_weights.index_select(0, parent)  # (n, src_len)
        self.attn_weights.append(_spread(attn_of_new_rows, rows, self.num_rows, 0.0))
        parents = torch.arange(self.num_rows, device=rows.device)
        parents[rows] = rows[parent]
        self.parents.append(parents)

    def backtrack(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (n, steps) and attention (n, steps, src_len) of ``rows`` (n,), read backwards."""
        steps = len(self.tokens)
        tokens = torch.empty(rows.numel(), steps, dtype=torch.long, device=rows.device)
        attn = torch.empty(rows.numel(), steps, self.src_len, device=rows.device)
        for t in range(steps - 1, -1, -1):
            tokens[:, t] = self.tokens[t][rows]
            attn[:, t] = self.attn_weights[t][rows]
            rows = self.parents[t][rows]
        return tokens, attn


def _collect_nbest(
    beams: _Beams,
    history: _History,
    src_lengths: torch.Tensor,
    beam_size: int,
    n_best: int,
    alpha: float,
) -> SearchResult:
    """The ``n_best`` first rows of every sentence (already sorted), minus empty slots."""
    batch = src_lengths.numel()
    device = beams.log_prob.device
    best_rows = (
        torch.arange(batch, device=device)[:, None] * beam_size
        + torch.arange(n_best, device=device)
    ).view(-1)  # (batch*n_best,)
    tokens, attn = history.backtrack(best_rows)
    log_prob = beams.log_prob[best_rows]  # (batch*n_best,)
    lengths = beams.lengths[best_rows]
    score = log_prob / gnmt_length_penalty(lengths, alpha)
    hit_max = beams.hit_max[best_rows]
    hyps = _hypotheses(
        tokens, attn, lengths, log_prob, score, hit_max, src_lengths.repeat_interleave(n_best)
    )
    nbest_lists = [hyps[i * n_best : (i + 1) * n_best] for i in range(batch)]
    return SearchResult([[h for h in nbest if h.log_prob > -math.inf] for nbest in nbest_lists])


def _initial_beams(
    batch: int, beam_size: int, max_lens: torch.Tensor, device: torch.device
) -> _Beams:
    """One live empty hypothesis per sentence (slot 0); the other slots are empty (-inf).

    A sentence whose length limit is 0 starts finished: its output is empty, ``hit_max_len``.
    """
    log_prob = torch.full((batch, beam_size), -math.inf, device=device)  # (batch, beam)
    log_prob[:, 0] = 0.0
    zero_limit = (max_lens == 0).repeat_interleave(beam_size)  # (batch*beam,)
    return _Beams(
        log_prob=log_prob.view(-1),
        lengths=torch.zeros(batch * beam_size, dtype=torch.long, device=device),
        finished=zero_limit.clone(),
        hit_max=zero_limit.clone(),
    )


def _beam_step(
    log_probs: torch.Tensor,
    beams: _Beams,
    step: int,
    beam_size: int,
    alpha: float,
    max_lens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, _Beams]:
    """Expand every row by one token and keep the best ``beam_size`` per sentence.

    log_probs: (rows, V) of step ``step`` (0-based), from :func:`_predictable_log_probs`, where
    every live row has ``step`` tokens;
    beams and max_lens (rows,): the same rows, ``rows = sentences * beam_size``. Returns
    ``parent`` (rows,), the row each new row extends; ``token`` (rows,), the token it appended
    (``<pad>`` for a finished row); the new beams.

    Ranking is by ``score = log_prob / lp(length)``. All live candidates have length
    ``step + 1``, so dividing them by the common ``lp(step + 1)`` would not change their order:
    they are ranked by their raw log-prob, and a finished row's single candidate carries its
    log-prob rescaled to that length, ``log_prob * lp(step + 1) / lp(own length)``, which places
    it exactly where its own score would.

    The top ``beam_size`` of a sentence's ``beam_size * V`` candidates are found in two stages:
    the best ``beam_size`` tokens of each row (adding the row's log-prob does not change their
    order within the row), then the best ``beam_size`` of those ``beam_size**2`` per sentence.
    Only the first stage touches (rows, V).
    """
    rows, vocab = log_probs.shape
    sentences = rows // beam_size
    per_row = min(beam_size, vocab)
    row_log_probs, row_tokens = log_probs.topk(per_row, dim=1)
    cand = beams.log_prob[:, None] + row_log_probs  # (rows, per_row)
    cand, row_tokens = _finished_rows_stay(cand, row_tokens, beams, step, alpha)

    flat = cand.view(sentences, beam_size * per_row)
    top_value, top_idx = flat.topk(beam_size, dim=1)  # (sentences, beam)
    first_row = torch.arange(sentences, device=log_probs.device)[:, None] * beam_size
    parent = (first_row + top_idx // per_row).view(-1)  # (rows,)
    token = row_tokens.view(sentences, -1).gather(1, top_idx).view(-1)  # (rows,)
    return parent, token, _next_beams(beams, parent, token, top_value.view(-1), step, max_lens)


def _finished_rows_stay(
    cand: torch.Tensor, tokens: torch.Tensor, beams: _Beams, step: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates (rows, K) and their tokens (rows, K) where a finished row offers one
    candidate: itself, token ``<pad>``, its score rescaled to length ``step + 1`` (so that it
    ranks among the live candidates as its own score would); -inf for its other columns."""
    live_penalty = ((5.0 + step + 1) / 6.0) ** alpha
    finished_value = beams.log_prob * (live_penalty / gnmt_length_penalty(beams.lengths, alpha))
    finished_cand = torch.full_like(cand, -math.inf)
    finished_cand[:, 0] = finished_value
    cand = torch.where(beams.finished[:, None], finished_cand, cand)  # (rows, K)
    tokens = tokens.masked_fill(beams.finished[:, None], PAD_ID)  # (rows, K)
    return cand, tokens


def _next_beams(
    beams: _Beams,
    parent: torch.Tensor,
    token: torch.Tensor,
    value: torch.Tensor,
    step: int,
    max_lens: torch.Tensor,
    constraint: ConstraintState | None = None,
) -> _Beams:
    """The rows after a step: row ``j`` extends ``parent[j]`` with ``token[j]``, its candidate
    value ``value[j]`` (all (rows,)); a finished parent stays as it was. A row ends on ``</s>``,
    at its length limit ``max_lens``, or as an empty slot (-inf: fewer candidates than rows)."""
    was_finished = beams.finished[parent]  # (rows,)
    log_prob = torch.where(was_finished, beams.log_prob[parent], value)
    lengths = torch.where(was_finished, beams.lengths[parent], step + 1)
    ended = ~was_finished & (token == EOS_ID)
    stopped_by_length = ~was_finished & ~ended & (lengths >= max_lens)
    empty = log_prob == -math.inf
    finished = was_finished | ended | stopped_by_length | empty
    hit_max = beams.hit_max[parent] | stopped_by_length
    return _Beams(log_prob, lengths, finished, hit_max, constraint)


def _constrained_beam_step(
    log_probs: torch.Tensor,
    beams: _Beams,
    table: PhraseTable,
    num_banks: int,
    step: int,
    beam_size: int,
    alpha: float,
    max_lens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, _Beams]:
    """:func:`_beam_step` under lexical constraints: dynamic beam allocation.

    As :func:`_beam_step` (same arguments, same returns, same ranking by length-penalised
    score), with ``table`` the constraints of the same rows, ``beams.constraint`` their progress
    and ``num_banks`` one more than the most constraint tokens of any sentence. The differences
    (:mod:`nmt.inference.constraints`):

    * ``</s>`` only for a row that has met all its constraints;
    * each row's candidates are its ``beam_size`` best tokens and the tokens that advance its
      constraints (``C`` more, duplicates dropped): (rows, K = beam_size + C);
    * the ``beam_size`` kept per sentence are dealt round-robin over the banks
      (:func:`~nmt.inference.constraints.allocate`), then ordered: rows that met every
      constraint first, by score within each group.
    """
    rows, vocab = log_probs.shape
    sentences = rows // beam_size
    state = beams.constraint
    assert state is not None
    log_probs[:, EOS_ID] = log_probs[:, EOS_ID].masked_fill(~state.all_met(), -math.inf)
    per_row = min(beam_size, vocab)
    row_log_probs, row_tokens = log_probs.topk(per_row, dim=1)  # (rows, per_row)

    advancing = next_tokens(table, state)  # (rows, C), -1: none
    num_phrases = advancing.size(1)
    earlier = torch.ones(num_phrases, num_phrases, device=advancing.device).tril(-1).bool()
    repeated = ((advancing[:, :, None] == advancing[:, None, :]) & earlier).any(dim=-1)
    offered = (advancing[:, :, None] == row_tokens[:, None, :]).any(dim=-1)
    advancing_log_probs = log_probs.gather(1, advancing.clamp(min=0)).masked_fill(
        (advancing < 0) | repeated | offered, -math.inf
    )  # (rows, C)
    tokens = torch.cat([row_tokens, advancing.clamp(min=0)], dim=1)  # (rows, K)
    cand = beams.log_prob[:, None] + torch.cat([row_log_probs, advancing_log_probs], dim=1)
    cand, tokens = _finished_rows_stay(cand, tokens, beams, step, alpha)

    cands = tokens.size(1)
    grown = advance(table, state, tokens, frozen=beams.finished)  # (rows, K, ...)
    banks = grown.banks(table)  # (rows, K)
    flat_values = cand.view(sentences, beam_size * cands)
    flat_banks = banks.view(sentences, beam_size * cands)
    kept = allocate(flat_values, flat_banks, num_banks, beam_size)  # (sentences, beam)
    totals = table.totals.view(sentences, beam_size)[:, :1]  # (sentences, 1)
    by_score = flat_values.gather(1, kept).argsort(dim=1, descending=True, stable=True)
    kept = kept.gather(1, by_score)
    met_all = flat_banks.gather(1, kept) == totals
    kept = kept.gather(1, met_all.long().argsort(dim=1, descending=True, stable=True))

    first_row = torch.arange(sentences, device=log_probs.device)[:, None] * beam_size
    parent = (first_row + kept // cands).view(-1)  # (rows,)
    flat_kept = (first_row * cands + kept).view(-1)  # (rows,) into rows * K
    token = tokens.view(-1)[flat_kept]
    constraint = ConstraintState(
        met=grown.met.reshape(rows * cands, -1)[flat_kept],
        current=grown.current.reshape(-1)[flat_kept],
        progress=grown.progress.reshape(-1)[flat_kept],
    )
    value = cand.view(-1)[flat_kept]
    return parent, token, _next_beams(beams, parent, token, value, step, max_lens, constraint)


# --------------------------------------------------------------------------------------------
# Shared output assembly
# --------------------------------------------------------------------------------------------


def _stack_steps(
    step_tokens: list[torch.Tensor],
    step_attn: list[torch.Tensor],
    rows: int,
    src_len: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-step tokens (rows,) and attention (rows, src_len) along a new steps axis."""
    if not step_tokens:
        return (
            torch.empty(rows, 0, dtype=torch.long, device=device),
            torch.empty(rows, 0, src_len, device=device),
        )
    return torch.stack(step_tokens, dim=1), torch.stack(step_attn, dim=1).float()


def _hypotheses(
    tokens: torch.Tensor,
    attn: torch.Tensor,
    lengths: torch.Tensor,
    log_prob: torch.Tensor,
    score: torch.Tensor,
    hit_max: torch.Tensor,
    src_lengths: torch.Tensor,
) -> list[Hypothesis]:
    """Cut each row to its length and its own source length; drop the final ``</s>`` token.

    tokens: (n, steps); attn: (n, steps, src_len); the others (n,). One host transfer each.
    """
    tokens_list = tokens.tolist()
    lengths_list = lengths.tolist()
    src_len_list = src_lengths.tolist()
    attn = attn.cpu()
    hyps = []
    for i, (log_p, sc, hit) in enumerate(
        zip(log_prob.tolist(), score.tolist(), hit_max.tolist(), strict=True)
    ):
        n = lengths_list[i]
        seq = tokens_list[i][:n]
        if seq and seq[-1] == EOS_ID:
            seq = seq[:-1]
        hyps.append(Hypothesis(seq, sc, log_p, attn[i, :n, : src_len_list[i]], bool(hit)))
    return hyps


# --------------------------------------------------------------------------------------------
# Settings, and batches of encoded sentences
# --------------------------------------------------------------------------------------------


def search_precision(settings: SearchSettings, device: torch.device) -> Precision:
    """``search.precision`` resolved on ``device`` (fp32 or bf16; ``auto`` is fp32, as in
    training: :func:`nmt.core.runtime.resolve_precision`)."""
    return resolve_precision(settings.precision, device, "search.precision")


def _search_batch(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    settings: SearchSettings,
    constraints: Sequence[Phrases] | None = None,
    avoid: Sequence[Phrases] | None = None,
) -> SearchResult:
    """Run the search that ``settings.name`` names on one padded batch; ``avoid[i]``: phrases
    sentence ``i``'s outputs must not contain, in both passes.

    With ``constraints``, the plain search runs first: a sentence whose best output already
    contains every one of its phrases keeps that output (so a constraint the model meets anyway
    changes nothing, which dynamic beam allocation alone does not promise: it deals some of the
    beam's slots to hypotheses that have met fewer phrases). The sentences whose best output
    misses a phrase are decoded again by the constrained beam search (greedy search: with one
    hypothesis), alone in a batch of their own — the searches are batch independent. Every
    hypothesis lists the phrases it misses.
    """
    found = _plain_search(model, src, src_lengths, settings, avoid)
    if constraints is None or not any(constraints):
        return found
    for phrases, nbest in zip(constraints, found.hypotheses, strict=True):
        for hyp in nbest:
            hyp.missing_constraints = missing_phrases(hyp.tokens, phrases)
    again = [i for i, nbest in enumerate(found.hypotheses) if nbest[0].missing_constraints]
    if again:
        rows = torch.tensor(again, device=src.device)
        lengths = src_lengths[rows]
        phrases = [constraints[i] for i in again]
        avoided = [avoid[i] for i in again] if avoid is not None else None
        redone = _beam(model, src[rows, : int(lengths.max())], lengths, settings, phrases, avoided)
        for i, nbest in zip(again, redone.hypotheses, strict=True):
            found.hypotheses[i] = nbest
    return found


def _plain_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    settings: SearchSettings,
    avoid: Sequence[Phrases] | None = None,
) -> SearchResult:
    """The search ``settings.name`` names, without (positive) constraints."""
    if settings.name == "greedy":
        return greedy_search(
            model,
            src,
            src_lengths,
            max_len_ratio=settings.max_len_ratio,
            max_len_offset=settings.max_len_offset,
            length_penalty=settings.length_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            avoid=avoid,
        )
    return _beam(model, src, src_lengths, settings, avoid=avoid)


def _beam(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    settings: SearchSettings,
    constraints: Sequence[Phrases] | None = None,
    avoid: Sequence[Phrases] | None = None,
) -> SearchResult:
    """:func:`beam_search` with ``settings``' hypotheses (one for greedy) and parameters."""
    return beam_search(
        model,
        src,
        src_lengths,
        beam_size=settings.hypotheses,
        length_penalty=settings.length_penalty,
        max_len_ratio=settings.max_len_ratio,
        max_len_offset=settings.max_len_offset,
        n_best=settings.n_best,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        constraints=constraints,
        avoid=avoid,
    )


def _empty_hypothesis(phrases: Phrases = ()) -> Hypothesis:
    return Hypothesis(
        tokens=[],
        score=0.0,
        log_prob=0.0,
        attn_weights=torch.zeros(0, 0),
        hit_max_len=False,
        missing_constraints=list(range(len(phrases))),
    )


def padded_chunks(
    lengths: Sequence[int], budget: int | None, max_sentences: int
) -> list[list[int]]:
    """Indices of ``lengths`` sorted longest first (ties in input order) and cut into chunks of
    at most ``max_sentences`` whose padded size ``len(chunk) * longest`` stays within ``budget``
    (a longer sentence alone is one chunk; ``None``: no budget, chunks of ``max_sentences``).

    The one way sentences are batched for decoding (:func:`decode_ids` with
    ``search.batch_tokens``, and the server's batcher in ``nmt.serving.service``). A decoder call costs about
    (sentences × beam) rows × the longest source (attention, and the copies of the encoder
    memory as sentences finish) for as many steps as its longest output, so one long sentence
    among short ones makes them all pay for its length: 64 sentences of enko/test (2–129
    subwords) decoded in one call took 6.6 s, in chunks of ≤ 1,024 padded subwords 3.1 s
    (base8.pt, beam 5, one thread).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        chunk = chunks[-1] if chunks else None
        padded = (len(chunk) + 1) * lengths[chunk[0]] if chunk else 0  # chunk[0]: its longest
        if chunk and len(chunk) < max_sentences and (budget is None or padded <= budget):
            chunk.append(i)
        else:
            chunks.append([i])
    return chunks


def search_batches(
    lengths: Sequence[int], settings: SearchSettings, device_type: str
) -> list[list[int]]:
    """:func:`padded_chunks` under the search's batch limits (``batch_size``, and on the CPU
    ``batch_tokens``): one decoder call each in :func:`decode_ids`. ``nmt.serving.service`` cuts its
    chunks with this too, so a chunk it takes is one call there."""
    return padded_chunks(lengths, settings.padded_budget(device_type), settings.batch_size)


def decode_ids(
    model: Seq2Seq,
    encoded: Sequence[Sequence[int]],
    settings: SearchSettings,
    device: torch.device | str | None = None,
    on_batch: Callable[[int], None] | None = None,
    precision: Precision | None = None,
    constraints: Sequence[Phrases] | None = None,
    avoid: Sequence[Phrases] | None = None,
) -> list[list[Hypothesis]]:
    """Decode encoded source sentences; return the n-best hypotheses of each, in input order.

    ``encoded[i]`` holds sentence i's subword ids without ``</s>``; each gets ``</s>`` appended
    (as in training). Sentences are sorted by length and decoded in the batches
    :func:`search_batches` cuts, so batches hold similar lengths; because the searches are batch
    independent, the result does not depend on this order. A sentence with no subwords (empty
    or blank) gets one empty hypothesis without running the model. ``on_batch(n)`` is called
    after each batch of ``n`` sentences (a progress bar).

    The model is put in eval mode for the call and its mode restored afterwards. ``device``
    defaults to the model's. ``precision`` (default: ``search.precision`` resolved,
    :func:`search_precision`) sets the autocast the searches run under. ``constraints[i]``:
    the phrases (target ids) sentence i's output must contain (:mod:`nmt.inference.constraints`);
    an empty sentence misses all of its own. ``avoid[i]``: phrases (target ids) sentence i's
    outputs must not contain.
    """
    for name, lists in (("constraints", constraints), ("avoid", avoid)):
        if lists is not None and len(lists) != len(encoded):
            raise ValueError(f"{name}: {len(lists)} lists for {len(encoded)} sentences")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = precision or search_precision(settings, device)
    autocast = autocast_context(precision, device)
    results = [
        [_empty_hypothesis(constraints[i] if constraints is not None else ())]
        for i in range(len(encoded))
    ]
    nonempty = [i for i, ids in enumerate(encoded) if ids]
    lengths = [len(encoded[i]) + 1 for i in nonempty]
    was_training = model.training
    model.eval()
    try:
        for chunk in search_batches(lengths, settings, device.type):
            batch_idx = [nonempty[k] for k in chunk]
            seqs = [list(encoded[i]) + [EOS_ID] for i in batch_idx]
            src = pad(seqs).to(device)  # (batch, src_len)
            src_lengths = torch.tensor([len(seq) for seq in seqs], device=device)
            phrases = [constraints[i] for i in batch_idx] if constraints is not None else None
            avoided = [avoid[i] for i in batch_idx] if avoid is not None else None
            with autocast:  # products in bf16 under autocast; the log-softmax stays fp32
                found = _search_batch(model, src, src_lengths, settings, phrases, avoided)
            for i, nbest in zip(batch_idx, found.hypotheses, strict=True):
                results[i] = nbest
            if on_batch is not None:
                on_batch(len(batch_idx))
    finally:
        model.train(was_training)
    return results
