# ruff: noqa: RUF001, RUF003 - look-alike characters are what these tests are about
"""Moderation reads what a prompt shows: look-alikes, invisible characters and separators
do not hide a banned word, and text in other scripts or with accents still passes."""

from __future__ import annotations

import pytest

from generation.domain.moderation import is_flagged, moderate_prompt
from generation.domain.moderation_skeleton import skeleton
from kit.errors import ValidationError

HANGUL_FILLER = "\u3164"
SOFT_HYPHEN = "\u00ad"

BYPASSES = [
    # Cyrillic and Greek look-alikes.
    "a \u0455\u0435\u0445 dungeon bedroom",  # Cyrillic dze, ie, ha
    "p\u043ern studio lighting",  # Cyrillic o
    "\u0440\u043ern poster above the bed",  # Cyrillic er, o
    "h\u0435r\u043ein stash in the drawer",
    "a r\u03bfom for a c\u03bfcaine party",  # Greek omicron
    "N\u0391Z\u0399 flags on the wall",  # Greek capital alpha and iota
    "\u0455wastika rug",  # Cyrillic dze
    # Capital look-alikes, which case folding alone would turn into other letters.
    "\u039aILL HIM",  # Greek capital kappa
    "\u041cURDER SCENE",  # Cyrillic capital em
    "SE\u03a7 TOYS",  # Greek capital chi
    "NA\u0396I FLAG",  # Greek capital zeta
    "\u039dAZI memorabilia",  # Greek capital nu
    "\u03f2ocaine on the table",  # Greek lunate sigma (folds to sigma, like "o")
    "sui\u03f2ide note",
    # Hangul fillers, alone, in runs and their half-width and jamo forms.
    f"s{HANGUL_FILLER}e{HANGUL_FILLER}x room",
    f"a p{HANGUL_FILLER}o{HANGUL_FILLER}r{HANGUL_FILLER}n set",
    "s\u115fe\u115fx swing",
    "s\u1160e\u1160x swing",
    "s\uffa0e\uffa0x swing",
    # Soft hyphens and zero-width characters inside the word.
    f"p{SOFT_HYPHEN}o{SOFT_HYPHEN}r{SOFT_HYPHEN}n wallpaper",
    f"co{SOFT_HYPHEN}caine on the table",
    "p\u200born room",
    "p\u200co\u200drn room",
    "m\u2060urder scene in the lounge",
    "mur\ufeffder mystery",
    "s\ufe0fe\ufe0fx toy shelf",
    "se\U000e0100x toy shelf",
    "\u202ep\u202co\u202crn",
    "n\u00adu\u00add\u00adi\u00adt\u00ady",
    # Underscores and punctuation as separators.
    "s_e_x dungeon",
    "kill_him in the kitchen",
    "kill.them all",
    "serial_killer lair",
    "crystal_meth lab",
    "ethnic_cleansing mural",
    # Mixed tricks: full width, combining marks and look-alikes together.
    "ｐｏｒｎ set",
    "p\u0336o\u0336r\u0336n set",
    f"\u0455{SOFT_HYPHEN}\u0435{SOFT_HYPHEN}\u0445 swing",
    f"\u0455{HANGUL_FILLER}\u0435{HANGUL_FILLER}\u0445 swing",
    # Any one symbol or punctuation mark repeated between the letters.
    "a n\u00b7a\u00b7k\u00b7e\u00b7d woman on the bed",  # middle dot
    "p/o/r/n poster above the bed",
    "k\u00b7i\u00b7l\u00b7l him in the kitchen",
    "m\u2010u\u2010r\u2010d\u2010e\u2010r scene in the lounge",  # Unicode hyphen
    "s\u2013e\u2013x dungeon bedroom",  # en dash
    "c\u2022o\u2022c\u2022a\u2022i\u2022n\u2022e on the table",  # bullet
    "s:e:x swing in the bedroom",
    # Spaced letters after a one-letter word, which the run would take in ("aporn").
    "a p o r n poster above the bed",
    "a s e x dungeon bedroom",
    "a c o c a i n e party in the lounge",
    # Marks of combining class 0 (enclosing circle, keycap) and other marks.
    "p\u20ddo\u20ddr\u20ddn\u20dd poster above the bed",
    "s\u20e3e\u20e3x\u20e3 dungeon bedroom",
    "por\u0489n studio lighting",
    "m\u0488urder scene in the lounge",
    # Letters in parentheses (NFKC: "(p)"), negative circled and squared capitals.
    "\u24ab\u24aa\u24ad\u24a9 poster above the bed",
    "\U0001f15f\U0001f15e\U0001f161\U0001f15d poster above the bed",
    "\U0001f17f\U0001f17e\U0001f181\U0001f17d poster above the bed",
]

PERSONAL_DATA = [
    "call me on \uff10\uff14\uff11\uff12 \uff13\uff14\uff15 \uff16\uff17\uff18",  # full width
    "call me on \u0660\u0664\u0661\u0662 \u0663\u0664\u0665 \u0666\u0667\u0668",  # Arabic-Indic
    "\u0966\u096a\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e par call karo",  # Devanagari
    "ring \u06f0\u06f2 \u06f9\u06f8\u06f7\u06f6 \u06f5\u06f4\u06f3\u06f2",  # Extended Arabic-Indic
]

BENIGN = [
    "café corner with bistro chairs",
    "Küche im Landhausstil mit Eichenholz",
    "Crème brûlée coloured walls and a façade in naïve style",
    "和室にモダンな照明とナチュラルな木の家具",
    "リビングルームを明るい北欧スタイルにしてください",
    "现代简约风格的客厅，浅色木地板",
    "한국 전통 스타일의 거실, 따뜻한 조명",
    "Уютная кухня в скандинавском стиле с деревянным столом",
    "Σαλόνι σε μινιμαλιστικό στυλ με φυσικό φως",
    "غرفة معيشة بأسلوب عصري",
    "Salle de bain à l'italienne, carrelage en grès cérame",
    "Gore-Tex covered outdoor cushions",
    "Gore Tex awning over the deck",
    "a same-sex couple's bedroom",
    "bath-bomb jars on the vanity",
    "kill-the-clutter minimalism",
    "a 3_seater sofa",
    "a coat rack, a bench and a mirror",
    "self-contained granny flat",
    # The exceptions hold whatever dash a word processor put in.
    "a same\u2011sex couple's bedroom",  # non-breaking hyphen
    "a same\u2013sex couple's bedroom",  # en dash
    "Gore\u2011Tex covered outdoor cushions",
    "bath\u2011bomb jars on the vanity",
    # A listing's title: a number counting rooms or floors, not a street address.
    "Victorian 3 Bedroom Terrace, open plan living",
    "Level 2 Rooftop Terrace with planters and a pergola",
    "Modern 4 Bedroom Terrace House, Hamptons feel",
    "2 Storey Place with a void over the stairs",
]


@pytest.mark.parametrize("prompt", BYPASSES)
def test_obfuscated_banned_words_are_refused(prompt: str) -> None:
    assert is_flagged(prompt) is not None
    with pytest.raises(ValidationError):
        moderate_prompt(prompt)


@pytest.mark.parametrize("prompt", PERSONAL_DATA)
def test_personal_data_in_compatibility_digits_is_refused(prompt: str) -> None:
    assert is_flagged(prompt) == "pii"
    assert is_flagged(prompt.translate({c: c - 0xFF10 + 0x30 for c in range(0xFF10, 0xFF1A)}))


@pytest.mark.parametrize("prompt", BENIGN)
def test_other_scripts_and_accents_are_accepted(prompt: str) -> None:
    assert is_flagged(prompt) is None
    moderate_prompt(prompt)


def test_the_skeleton_maps_look_alikes_and_drops_invisibles() -> None:
    assert skeleton("\u0405\u0415\u0425") == "sex"
    assert skeleton(f"a{SOFT_HYPHEN}b\u200bc\ufeffd") == "abcd"
    assert skeleton(f"a{HANGUL_FILLER}b\uffa0c") == "a_b_c"
    assert skeleton("ＣＡＦÉ") == "cafe"
    assert skeleton("Straße") == "strasse"


def test_the_skeleton_keeps_letters_that_imitate_nothing_latin() -> None:
    assert skeleton("кухня") == "кyxня"  # only у and х imitate Latin letters
    assert skeleton("和室") == "和室"
