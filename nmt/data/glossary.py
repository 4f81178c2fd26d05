"""Glossaries: English terms whose Korean translation is fixed, found in the source text.

A glossary is a UTF-8 TSV file, one term per line::

    # comments and blank lines are skipped
    Save As<TAB>다른 이름으로 저장
    Writer<TAB>Writer
    keyword argument<TAB>키워드 인자

Where a source sentence contains an English term, its Korean side becomes a constraint of that
sentence's translation (:mod:`nmt.inference.constraints`). The rules of "contains":

* **Word boundaries.** A term matches only as whole words: ``Save`` does not match in
  ``Saved`` and ``As`` not in ``Ask`` (an end of the term that is a letter, digit or ``_`` may
  not touch another one; ``.NET`` or ``C++`` match wherever their punctuation ends allow).
* **Case.** A term written all in lower case matches in any case (``keyword argument`` matches
  ``Keyword argument`` at a sentence's start); a term with a capital letter matches only as
  written (``Save As`` is a menu item, ``save as`` in running text is not; ``Writer`` the
  program, not ``writer``).
* **Longest match, no overlaps.** The text is read left to right; at each position the longest
  term that matches there wins, and the next match starts after it: with ``Save`` and
  ``Save As``, "choose Save As" yields ``Save As`` only.
* Each Korean term is imposed once per sentence, however often its English term occurs.
* Terms inside protected markup (:mod:`nmt.data.markup`) are not imposed: the span comes back
  byte-identical. A labelled role's shown text is the exception, since it may be translated:
  ``:ref:`Save As <save-as>``` comes back as ``:ref:`다른 이름으로 저장 <save-as>```
  (:meth:`Glossary.translate_shown_text`).

Text is NFC-normalised with folded whitespace, as the corpus and the translator normalise it.
Errors name the file and line: a line without exactly one tab, an empty side, or a term listed
twice with different translations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nmt.core.errors import NMTError
from nmt.data.corpus import normalize, read_text_lines
from nmt.data.markup import LABELLED_ROLE

TOKEN = re.compile(r"\w+|[^\w\s]")  # where a term may start: a word, or one other character
WORD = re.compile(r"\w")


@dataclass(frozen=True)
class GlossaryMatch:
    """One occurrence of a term in a text: ``text[start:end] `` matched ``term``."""

    start: int
    end: int
    term: str
    target: str


class Glossary:
    """English terms and their Korean translations; :meth:`find` them in a sentence."""

    def __init__(self, entries: dict[str, str], source: str = "a glossary in memory"):
        """``entries``: English term → Korean term (both non-empty)."""
        self.source = source
        self.entries = {normalize(term): normalize(target) for term, target in entries.items()}
        for term, target in self.entries.items():
            if not term or not target:
                raise NMTError(f"{source}: empty term in {term!r} → {target!r}")
        # first token (lower-cased) → the terms that start with it, longest first
        self._by_first: dict[str, list[str]] = {}
        for term in sorted(self.entries, key=lambda t: (-len(t), t)):
            first = TOKEN.match(term)
            assert first is not None  # a non-empty normalised term starts with a token
            self._by_first.setdefault(first.group().lower(), []).append(term)

    @classmethod
    def read(cls, path: str | Path, field_name: str = "glossary") -> Glossary:
        """A glossary file (the module docstring's format); errors name ``path:line``."""
        entries: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for number, line in enumerate(read_text_lines(path, field_name), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) != 2:
                raise NMTError(
                    f"{path}:{number}: expected 'English term<TAB>Korean term' (one tab); got "
                    f"{len(columns)} column{'s' if len(columns) != 1 else ''}: {line[:60]!r}"
                )
            term, target = (normalize(c) for c in columns)
            if not term or not target:
                side = "English" if not term else "Korean"
                raise NMTError(f"{path}:{number}: the {side} term is empty: {line[:60]!r}")
            if term in entries and entries[term] != target:
                raise NMTError(
                    f"{path}:{number}: {term!r} is listed twice with different translations: "
                    f"{entries[term]!r} (line {first_line[term]}) and {target!r}"
                )
            entries[term] = target
            first_line.setdefault(term, number)
        if not entries:
            raise NMTError(f"{field_name}={path}: no terms (expected 'English<TAB>Korean' lines)")
        return cls(entries, str(path))

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, text: str) -> list[GlossaryMatch]:
        """The terms in ``text`` (already normalised), left to right, by the module's rules.

        Only token starts are tried (a run of letters, digits and ``_``, or one other non-space
        character), each against the terms that begin with that token, longest first: the cost
        grows with the text, not with the glossary's size.
        """
        matches: list[GlossaryMatch] = []
        resume = 0  # matches do not overlap
        for token in TOKEN.finditer(text):
            start = token.start()
            if start < resume:
                continue
            for term in self._by_first.get(token.group().lower(), ()):
                end = start + len(term)
                candidate = text[start:end]
                if candidate != term and (term != term.lower() or candidate.lower() != term):
                    continue
                if WORD.match(term[-1]) and end < len(text) and WORD.match(text[end]):
                    continue  # the term would end inside a word
                matches.append(GlossaryMatch(start, end, term, self.entries[term]))
                resume = end
                break
        return matches

    def translate_shown_text(self, span: str) -> str:
        """A labelled reStructuredText role (``:ref:`Save As <save-as>```) with the glossary's
        terms in its shown text replaced by their Korean sides; any other span as it is. The
        role and its target stay: a shown text may be translated (:mod:`nmt.data.markup`)."""
        labelled = LABELLED_ROLE.fullmatch(span)
        if labelled is None:
            return span
        head, tail = labelled.group(1), labelled.group(2)
        shown = span[len(head) : len(span) - len(tail)]
        for match in reversed(self.find(shown)):
            shown = shown[: match.start] + match.target + shown[match.end :]
        return head + shown + tail

    def targets(self, text: str) -> list[str]:
        """The Korean terms ``text`` calls for, each once, in order of first occurrence."""
        return list(dict.fromkeys(m.target for m in self.find(text)))
