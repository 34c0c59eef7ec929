"""The text moderation matches against: what a prompt looks like, not how it is encoded.

Word lists are written in plain ASCII, so a prompt is reduced to a comparable
"skeleton" first, undoing the tricks that keep a banned word readable to a person
(and to the image model) while hiding it from a pattern:

- invisible characters (Unicode's Default_Ignorable_Code_Point: soft hyphen,
  zero-width space/joiners, word joiner, BOM, bidi controls, variation selectors)
  are dropped; the Hangul fillers, which render as blanks, become underscores, a
  separator kept apart from real spaces so that "p\u3164o\u3164r\u3164n" glues into
  one word without pulling in its neighbours;
- NFKC folds compatibility forms (full-width, ligatures, mathematical letters);
- Unicode TR39 confusables (Cyrillic "\\u0430", Greek "\\u03bf", ...) become the ASCII letter
  they imitate, from the Unicode data shipped by ``confusable-homoglyphs``: before case
  folding (capital look-alikes) and after it;
- accents are stripped (NFKD without combining marks).

Only letters that imitate ASCII are mapped, so text in other scripts keeps its
own letters and cannot accidentally spell an English word list entry.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import unicodedata

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) without the Hangul
# fillers, which are handled as blanks below.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
# Hangul fillers and the blank Braille pattern: invisible, but they take up a
# space, so they are read as a separator.
_BLANKS = re.compile("[\u115f\u1160\u3164\uffa0\u2800]")


def _ascii_prototypes() -> dict[int, str]:
    """Non-ASCII characters that TR39 says look like ASCII letters or digits.

    Read from the package's data file rather than imported: its module keeps all of
    TR39 (and its script categories) in memory for the life of the process, about
    5 MiB, for the 1,412 entries kept here.
    """
    data = importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json")
    confusables: dict[str, list[dict[str, str]]] = json.loads(data.read_bytes())
    table: dict[int, str] = {}
    for char, homoglyphs in confusables.items():
        if len(char) != 1 or char.isascii():
            continue
        looks_like = [h["c"] for h in homoglyphs if h["c"].isascii() and h["c"].isalnum()]
        if looks_like:
            table[ord(char)] = looks_like[0].lower()
    return table


_PROTOTYPES = _ascii_prototypes()


def skeleton(text: str) -> str:
    """``text`` without invisible characters, folded, look-alikes and accents undone:
    its look-alikes read as small letters (see :func:`skeletons`)."""
    return skeletons(text)[0]


def skeletons(text: str) -> tuple[str, ...]:
    """The readings of ``text`` a person may see, each distinct one once: look-alikes
    read after case folding (a Greek capital Iota folds to an iota, which looks like
    "i"), and read before it, since folding turns some capitals that imitate a Latin
    letter into small letters that imitate nothing or something else (Greek Kappa,
    Cyrillic Em; the lunate sigma folds to a sigma, which looks like "o")."""
    visible = _BLANKS.sub("_", _INVISIBLE.sub("", text))
    small = unicodedata.normalize("NFKC", visible).casefold().translate(_PROTOTYPES)
    # Mapped before NFKC too: NFKC itself turns the lunate sigma symbol into a sigma.
    mapped = unicodedata.normalize("NFKC", visible.translate(_PROTOTYPES))
    capital = mapped.translate(_PROTOTYPES).casefold().translate(_PROTOTYPES)
    return tuple(dict.fromkeys(_unaccented(reading) for reading in (small, capital)))


def _unaccented(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char))
