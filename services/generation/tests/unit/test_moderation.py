"""Prompt moderation: ordinary interior prompts pass, each bad category is caught."""

from __future__ import annotations

import time

import pytest

from generation.domain.moderation import REJECTION_MESSAGE, is_flagged, moderate_prompt
from kit.errors import ValidationError

# Realistic prompts full of numbers, sizes, years and words that look alarming out of context.
BENIGN = [
    "Add a 3 seater sofa and 2 armchairs",
    "a 2.4 m ceiling, 0.9 m doors and a 1.2 m hallway",
    "version 2.0.4 of the layout, 0.25 scale",
    "photo taken 04.12.2026 10:30, keep the light",
    "handover on 08-03-2026 14:00, style it before then",
    "Shelving unit 1800.400.720 in oak",
    "vanity 1300.450.600 mm with a stone top",
    "bright white kitchen with 900mm benchtop",
    "King bed, 2 bedside tables",
    "Rug 2400 x 1200 under the dining table",
    "1960s mid-century sideboard in walnut",
    "Murray River red gum table",
    "kill the clutter and keep it minimal",
    "A killer view deserves a low sofa facing the window",
    "Blood orange cushions and an oxblood leather chair",
    "Blood red feature wall behind the bed",
    "nude tones with warm timber",
    "A jar of bath bombs on the vanity",
    "Gore-Tex covered outdoor cushions",
    "Bedroom for a same-sex couple, two matching bedside lamps",
    "Nursery wallpaper with blue tits and coal tits on branches",
    "a chink of light through linen curtains",
    "Keep the kitchen spick and span with hidden storage",
    "fire retardant curtains in the home theatre",
    "Sussex style cottage kitchen with an Essex range",
    "Make it a bit sexy and moody with dim lighting",
    "4 dining chairs close together around a round table",
    "a 2 storey street facing facade with a timber door",
    "60/40 split of warm and cool tones, 3000K lighting",
    "Shaker cabinets in Dulux Natural White, 2.7m ceilings",
    "A 4k TV mounted at 1200mm above the floor",
    "Bathroom with 600 x 600 tiles and a 1500mm freestanding bath",
    "Ceiling height 2700, window 1800 x 2100, door 820 wide",
    "Kids room with bunk beds for 2 boys aged 8 and 10",
    "Hamptons style with navy and white stripes!!!",
    "Put a bombe chest in the entry",
    "Replace the carpet with 180mm wide engineered oak boards",
    "Add a heritage gun cabinet converted into a bar",
    "Brass tapware, 40mm thick stone benchtop, waterfall edge",
    "Outdoor deck with a 6 burner BBQ and a 10 seat table",
    "Use 04 colour samples on the feature wall",
    "Mix of 1950s and 1970s furniture, 8 seat dining",
    "Take a stab at a japandi look with low furniture",
    "Photo shoot ready living room with statement lighting",
    "Keep the naked timber beams and add a linen sofa",
    "Pendant lights at 750mm above a 3600 x 1000 island",
    "Swap the 1990s tiles for 300 x 600 matte porcelain",
    "A cosy reading corner: armchair, floor lamp, side table, throw, plants",
    "Café style breakfast nook with bentwood chairs",
    "Make the room feel bigger; lighter walls, fewer pieces, a large mirror",
    "Dimensions 4.2 x 3.6 m, north facing, two windows",
    "Open plan living with a 2.4 m sliding door to the deck and a 5 x 3 rug",
    "Bedroom for a teenage girl who loves surfing, 1 double bed and a desk",
    "The house is on a quiet street; keep the front window and add shutters",
    "Replace the 2 Harbour Bridge prints with abstract art",
    "Stove 900 wide, rangehood 1200 wide, 2 ovens, code 4111 on the appliance",
]

BAD = {
    "explicit": [
        "a sex scene on the bed",
        "s.e.x on the sofa",
        "s e x",
        "p0rn poster",
        "\uff50\uff4f\uff52\uff4e poster",
        "$ex toy on the shelf",
        "naked woman on the bed",
        "Nude model posing by the window",
        "erotic art of a couple",
        "NSFW bedroom",
        "a roomporn shoot",
        "turn the cellar into a sexdungeon",
        "a poster of her tits",
        "big tits above the bed",
        "a framed poster of great tits above the bed",
        "a nakedwoman poster above the bed",
        "NudeModels by the window",
    ],
    "hate": [
        "a nazi flag on the wall",
        "a nazibunker basement",
        "Swastika wallpaper",
        "white power mural",
        "heil hitler sign above the desk",
    ],
    "violence": [
        "blood-spattered walls",
        "a pool of blood on the tiles",
        "dead body on the floor",
        "k1ll him in the kitchen",
        "kill everyone in the room",
        "murder scene in the lounge",
        "m u r d e r room",
        "gore everywhere",
        "a decapitated head on the table",
        # A phrase's words run together.
        "killhim in the kitchen",
        "a deadbody on the floor",
        "SerialKiller posters",
        # A stem no ordinary word holds, inside a longer word.
        "a murdermystery themed den",
        "a genocidememorial wall",
    ],
    "illegal": [
        "meth lab in the garage",
        "turn the shed into a m.e.t.h lab",
        "a m - e - t - h lab",
        "build a pipe bomb on the bench",
        "cocaine on the coffee table",
        "an ak-47 on the wall",
        "ghost guns on the workbench",
        "cannabis grow room in the spare bedroom",
        "a crystalmeth lab in the garage",
        "machineguns on the wall",
        "a cocainebar in the basement",
    ],
    "pii": [
        "email me at jane.doe@example.com",
        "call 0412 345 678 for access",
        "call 0412.345.678 for access",
        "ring 02.9876.5432 after six",
        "call 0412\u2013345\u2013678 for access",
        "1800\u2013123\u2013456",
        "61.412.345.678",
        "my number is 0412345678",
        "+61 412 345 678",
        "+61 2 9876 5432",
        "(02) 9876 5432",
        "1800 123 456",
        "+1 (555) 123-4567",
        "card 4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "amex 3782 822463 10005",
        "my house at 12 Smith Street",
        "7 Harbour Cres, Manly",
        "42 Wallaby Way Sydney",
        "Unit 4/120 Glenferrie Rd Hawthorn",
    ],
    "spam": [
        "visit https://spam.example now",
        "see www.best-sofas.com",
        "buy at cheapsofas.com.au",
        "sofa " * 10,
        "buy buy buy buy buy buy buy buy cheap lamps",
        "aaaaaaaaaaaa",
        "!!!!!!!!!!!!!!",
        " ".join(["sofa chair lamp rug"] * 10),
    ],
}


@pytest.mark.parametrize("prompt", BENIGN)
def test_benign_prompts_pass(prompt: str) -> None:
    assert is_flagged(prompt) is None
    moderate_prompt(prompt)


def test_the_benign_corpus_is_large_enough() -> None:
    assert len(BENIGN) >= 30


@pytest.mark.parametrize(
    ("category", "prompt"), [(category, p) for category, prompts in BAD.items() for p in prompts]
)
def test_bad_prompts_are_flagged_with_their_category(category: str, prompt: str) -> None:
    assert is_flagged(prompt) == category


@pytest.mark.parametrize("prompt", ["email me at jane.doe@example.com", "k1ll him", "p0rn"])
def test_rejection_is_generic_and_never_echoes_the_prompt(prompt: str) -> None:
    with pytest.raises(ValidationError) as caught:
        moderate_prompt(prompt)
    error = caught.value
    assert error.message == REJECTION_MESSAGE
    assert str(error) == REJECTION_MESSAGE
    assert error.details == {}
    assert error.reason == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "prompt",
    [
        "4111 1111 1111 1112",  # card-shaped but the Luhn check digit is wrong
        "sizes 2400 1800 1200 900",  # dimensions in a row are not a card number
        "a 3 x 2 m rug and a 2 x 1 m runner",  # spaced single characters glued stay harmless
        # Words that only begin or end like a phrase run together stay whole words.
        "a killer view and a deadbolt on the door",
        "white powder coated frames and a massive window",
        "display shelves for the skills of the household",
        "a cookingmethods shelf",
        # Words that hold a listed term's letters but are no compound of it.
        "a Sussex cottage with a Middlesex townhouse feel",
        "an antique sextant on the Essex sideboard",
        "an Ashkenazi family heirloom cabinet",
        "a superheroine poster in the kids room",
    ],
)
def test_near_misses_pass(prompt: str) -> None:
    assert is_flagged(prompt) is None


def test_a_long_varied_prompt_passes() -> None:
    prompt = (
        "Redesign the open plan living and dining area with a long low sofa in oatmeal boucle, "
        "a pair of rattan armchairs, a round travertine coffee table, a jute rug, linen "
        "curtains to the floor, a timber dining table for eight with woven chairs, a brass "
        "pendant over the table, a sideboard for storage, large potted fiddle leaf figs, "
        "framed coastal photography, soft blue and sand cushions and warm white lighting."
    )
    assert is_flagged(prompt) is None


def test_worst_case_inputs_do_not_backtrack_catastrophically() -> None:
    # A hang guard, not a speed measurement: catastrophic backtracking on these takes
    # minutes to forever; the patterns as written need milliseconds.
    nasty = ["a " * 500, "1-" * 500, "1" * 1000, "+1" * 500, "a" * 500 + "@" + "b-" * 250]
    started = time.perf_counter()
    for text in nasty:
        is_flagged(text)
    assert time.perf_counter() - started < 10
