"""Repair texts whose undecodable bytes left U+FFFD behind, before any row rule runs.

A source written through a lossy re-encoding keeps most of each text and loses a few
characters: a mangled emoji or apostrophe, a cut URL (``I don���t want either!``,
``… http://t.co/�``). ftfy cannot bring those bytes back, but the rest of the text is
readable and labelled. A *damaged span* is a run of U+FFFD together with the mojibake
residue that sticks to it (underscores, C1 controls, combining marks, Greek-Coptic,
Armenian, Hebrew and Arabic code points, private-use characters: what the mangled
multi-byte sequences decoded into). Each span is removed; one between a word and a
contraction ending (``don|t``, ``we|ll``, ``Brady|s``) becomes an apostrophe.

A text is kept as repaired when its damaged spans cover at most ``max_damaged_share``
of its characters and at least ``min_words`` words of two letters or more remain.
Anything else keeps its original text, so the ``undecodable_text`` rule quarantines it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from distillery.validation.suites import REPLACEMENT_CHAR

# What the damaged bytes decoded into around each U+FFFD (measured on the packaged
# corpus: `_` and Armenian letters dominate, then Arabic marks and private-use points).
_RESIDUE = (
    "_"
    "\u0080-\u00a0"  # C1 controls, no-break space
    "\u0180-\u03ff"  # Latin Extended-B, IPA, spacing modifiers, combining, Greek-Coptic
    "\u0530-\u06ff"  # Armenian, Hebrew, Arabic
    "\ue000-\uf8ff"  # private use
    "\U000f0000-\U0010ffff"  # supplementary private use
)
_SPAN = re.compile(f"[{_RESIDUE}]*{REPLACEMENT_CHAR}[{_RESIDUE}{REPLACEMENT_CHAR}]*")
# A span between a letter and one of these endings stood for an apostrophe.
_CONTRACTION = re.compile(r"(?:s|t|m|d|ll|re|ve)\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class RepairOptions:
    """When a damaged text is worth keeping.

    Attributes:
        max_damaged_share: Largest share of a text's characters inside damaged spans.
        min_words: Fewest words (two letters or more) that must remain.
    """

    max_damaged_share: float = 0.5
    min_words: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.max_damaged_share <= 1.0:
            raise ValueError(
                f"max_damaged_share must be in (0, 1], got {self.max_damaged_share}"
            )
        if self.min_words < 1:
            raise ValueError(f"min_words must be >= 1, got {self.min_words}")


def _replacement(text: str, match: re.Match[str]) -> str:
    start, end = match.span()
    if start > 0 and text[start - 1].isalpha() and _CONTRACTION.match(text, end):
        return "'"
    return " "


def strip_damage(text: str) -> tuple[str, float]:
    """Remove every damaged span of ``text``.

    Args:
        text: A text that may hold U+FFFD.

    Returns:
        The text without damaged spans (runs of spaces collapsed, ends stripped) and
        the share of the original characters the spans covered (0 for clean text).
    """
    if REPLACEMENT_CHAR not in text:
        return text, 0.0
    damaged = sum(m.end() - m.start() for m in _SPAN.finditer(text))
    stripped = _SPAN.sub(lambda m: _replacement(text, m), text)
    stripped = "\n".join(
        _SPACES.sub(" ", line).strip() for line in stripped.split("\n")
    )
    return stripped.strip(), damaged / len(text)


def repair_texts(
    texts: pd.Series, options: RepairOptions
) -> tuple[pd.Series, pd.DataFrame]:
    """Repair every text with damaged spans that still has enough to read.

    Args:
        texts: The ``text`` column (missing values pass through untouched).
        options: The keep thresholds.

    Returns:
        The column with repaired texts in place (unrepairable ones unchanged, so the
        ``undecodable_text`` rule still sees their U+FFFD), and one row per repaired
        text: ``original``, ``repaired`` and ``damaged_share``, indexed like ``texts``.
    """
    damaged = texts.notna() & texts.astype("string").str.contains(
        REPLACEMENT_CHAR, regex=False
    ).fillna(False)
    rows = []
    for index, text in texts[damaged].items():
        repaired, share = strip_damage(str(text))
        if (
            share <= options.max_damaged_share
            and len(_WORD.findall(repaired)) >= options.min_words
        ):
            rows.append((index, str(text), repaired, share))
    repairs = pd.DataFrame(
        [r[1:] for r in rows],
        index=pd.Index([r[0] for r in rows], dtype=texts.index.dtype),
        columns=["original", "repaired", "damaged_share"],
    ).astype({"original": "string", "repaired": "string", "damaged_share": "float64"})
    fixed = texts.copy()
    fixed.loc[repairs.index] = repairs["repaired"]
    return fixed, repairs
