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
- letters in parentheses (NFKC turns "\u24ab" into "(p)") and the negative circled and
  squared capitals, which neither NFKC nor TR39 maps, become the letter;
- dashes of every kind (non-breaking, en, em, minus) become "-", so that the word lists'
  exceptions ("same-sex", "Gore-Tex") hold however a word processor hyphenated them;
- accents and any other marks on a letter are stripped (NFKD without marks).

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
    shown = _BLANKS.sub("_", _INVISIBLE.sub("", text)).translate(_SYMBOL_LETTERS)
    small = _letters(unicodedata.normalize("NFKC", shown)).casefold().translate(_PROTOTYPES)
    # Mapped before NFKC too: NFKC itself turns the lunate sigma symbol into a sigma.
    mapped = _letters(unicodedata.normalize("NFKC", shown.translate(_PROTOTYPES)))
    capital = mapped.translate(_PROTOTYPES).casefold().translate(_PROTOTYPES)
    return tuple(dict.fromkeys(_unaccented(reading) for reading in (small, capital)))


def _letters(folded: str) -> str:
    """NFKC's "(p)" for a parenthesized letter read as the letter; every dash as "-"."""
    return _PARENTHESIZED.sub(r"\1", folded).translate(DASHES)


# Parenthesized small letters and digits (U+249C..U+24B5, U+2474..) after NFKC.
_PARENTHESIZED = re.compile(r"\((\w)\)")
# Negative circled (U+1F150) and negative squared (U+1F170) Latin capitals.
_SYMBOL_LETTERS = {
    start + offset: chr(ord("a") + offset) for start in (0x1F150, 0x1F170) for offset in range(26)
}
# Dash punctuation (Unicode category Pd) and the minus sign, as a plain hyphen.
DASHES = {
    ord(char): "-"
    for char in (
        "\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e17\u2e1a"
        "\u2e3a\u2e3b\u2e40\u2e5d\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d"
        "\U00010ead"
    )
}


def _unaccented(text: str) -> str:
    """Without accents, or any other mark on a letter: enclosing circles and keycaps
    (U+20DD, U+20E3) have combining class 0, so ``unicodedata.combining`` misses them."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if unicodedata.category(char) not in _MARKS)


_MARKS = frozenset({"Mn", "Mc", "Me"})


def visible(text: str) -> str:
    """``text`` without what shows nothing: invisible characters and blanks."""
    return _BLANKS.sub("", _INVISIBLE.sub("", text))
