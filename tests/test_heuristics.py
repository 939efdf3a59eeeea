"""The heuristics filter: each check on rows it must flag and rows it must leave alone, Unicode
tricks included, and the default keep rule's decisions with their reasons."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ecap.interfaces import PluginContext
from ecap.records import ImageRef, Instruction, Item, Pair, SampleError, Score
from ecap_heuristics.filter import HeuristicsConfig, HeuristicsFilter
from ecap_heuristics.images import dhash, hamming


def heuristics(**config: object) -> HeuristicsFilter:
    context = PluginContext(step_id="check", base_dir=Path("."), work_dir=Path("."))
    return HeuristicsFilter(HeuristicsConfig.model_validate(config), context)


def save(folder: Path, name: str, image: Image.Image, fmt: str = "PNG") -> ImageRef:
    path = folder / name
    image.save(path, format=fmt)
    return ImageRef(uri=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def scene(colour: tuple[int, int, int] = (200, 60, 40), box: tuple[int, ...] = (20, 20, 40, 44)):
    """A 256x256 picture with a gradient and one coloured box (an "object"), box given on a
    64x64 grid."""
    image = Image.new("RGB", (256, 256))
    draw = ImageDraw.Draw(image)
    for x in range(256):
        draw.line([(x, 0), (x, 255)], fill=(x * 3 // 4, 120, 255 - x * 3 // 4))
    draw.rectangle(tuple(4 * v for v in box), fill=colour)
    return image


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair.of(
        save(tmp_path, "s.png", scene()), save(tmp_path, "t.png", scene(box=(30, 10, 60, 30)))
    )


def item_with(pair: Pair, text: str) -> Item:
    return Item(pair=pair, instruction=Instruction(pair_id=pair.id, text=text, origin="model"))


def check(pair: Pair, text: str, **config: object) -> Score:
    result = heuristics(**config).score([item_with(pair, text)])[0]
    assert isinstance(result, Score)
    return result


def flags(pair: Pair, text: str, **config: object) -> dict[str, float]:
    return check(pair, text, **config).values


GOOD = "Move the red box from the left side to the upper right corner."


def test_a_clear_instruction_sets_no_flag(pair):
    score = check(pair, GOOD)
    assert score.values == {
        "vague_terms": 0.0,
        "too_short": 0.0,
        "too_long": 0.0,
        "garbled": 0.0,
        "not_english": 0.0,
        "leak": 0.0,
        "identical_images": 0.0,
    }
    assert score.meta["reasons"] == {}
    assert score.meta["words"] == 13


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Make the sky slightly bluer.", "vague degree 'slightly'"),
        ("Make the sky SLIGHTLY   bluer.", "vague degree 'slightly'"),
        ("Make the sky slight-ly bluer.", "vague degree 'slightly'"),
        ("Make the sky sl\u00adightly bluer.", "vague degree 'slightly'"),  # soft hyphen
        ("Make the sky sl\u200bightly bluer.", "vague degree 'slightly'"),  # zero-width space
        ("Make the sky \u0455lightly bluer.", "vague degree 'slightly'"),  # Cyrillic dze
        (
            "Make the sky \uff53\uff4c\uff49\uff47\uff48\uff54\uff4c\uff59 bluer.",
            "vague degree 'slightly'",
        ),
        ("Make the box a-bit larger.", "vague degree 'a bit'"),
        ("Make the box a\n little bigger.", "vague degree 'a little'"),
        ("Resize the box to an appropriate size.", "vague degree 'appropriate'"),
        ("Make the photo somewhat warmer.", "vague degree 'somewhat'"),
        ("Adjust the lighting of the room.", "vague verb 'adjust'"),
        ("Opti-\nmize the colours of the scene.", "vague verb 'optimize'"),
        ("Process the background of the photo.", "vague verb 'process'"),
        ("Change that piece of clothing to pink.", "vague reference 'that'"),
        ("Paint this wall green.", "vague reference 'this'"),
        ("Make it look better.", "vague degree 'look better', vague reference 'it'"),
    ],
)
def test_vague_terms_are_found_through_case_spacing_hyphens_and_look_alikes(pair, text, reason):
    score = check(pair, text)
    assert score.values["vague_terms"] == 1.0
    assert score.meta["reasons"]["vague_terms"] == reason


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "Adjust the brightness of the sky to a deep evening blue.",
        "Modify the background into a sandy beach at noon.",
        "Remove the cup that sits on the wooden table.",
        "Replace the gray wide-strap dress with a pink spaghetti-strap mini dress.",
        "Add a bitter lemon to the plate.",  # "bit" inside a word is not "a bit"
        "Show the processing plant behind the river.",  # not the verb "process"
    ],
)
def test_precise_instructions_have_no_vague_terms(pair, text):
    assert flags(pair, text)["vague_terms"] == 0.0


def test_vague_verbs_need_a_target_state_not_a_purpose(pair):
    assert flags(pair, "Optimize the image to make the colors pop.")["vague_terms"] == 1.0
    assert flags(pair, "Adjust the box, then turn it blue.")["vague_terms"] == 1.0


def test_allowed_and_extra_terms(pair):
    text = "Rotate the red box and paint it navy blue."
    assert flags(pair, text)["vague_terms"] == 1.0
    assert flags(pair, text, allowed_terms=["it"])["vague_terms"] == 0.0
    score = check(pair, "Make the red box nicer overall.", extra_vague_terms=["nicer"])
    assert score.meta["reasons"]["vague_terms"] == "vague degree 'nicer'"


def test_length_bounds(pair):
    short = check(pair, "Blue sky.")
    assert short.values["too_short"] == 1.0
    assert short.meta["reasons"]["too_short"] == "2 words < 3"
    long = check(pair, " ".join(["red"] * 151))
    assert long.values["too_long"] == 1.0 and long.values["too_short"] == 0.0
    assert flags(pair, " ".join(["red"] * 150))["too_long"] == 0.0
    assert flags(pair, "Remove red box", min_words=3)["too_short"] == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Make the box \ufffd blue.", "replacement character U+FFFD"),
        ("Make the box\x07 blue now.", "control characters U+0007"),
        ("Make the box blue\u200b now.", "invisible characters U+200B"),
        (
            "\u200b\u200d \u2060",
            "invisible characters U+200B, U+200D, U+2060; no visible characters",
        ),
        ("Make the box bl\u0443e now.", "words mixing scripts: 'bl\u0443e'"),
        ("Make the box \ue000 blue.", "private-use characters"),
    ],
)
def test_garbled_text_is_flagged_with_what_is_wrong(pair, text, reason):
    score = check(pair, text)
    assert score.values["garbled"] == 1.0
    assert score.meta["reasons"]["garbled"] == reason


def test_ordinary_punctuation_and_newlines_are_not_garbled(pair):
    assert flags(pair, "Move the box left;\nthen paint it “navy” — not black.")["garbled"] == 0.0


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("把天空变成蓝色", True),
        ("Сделай небо синим", True),
        ("1234 5678 90", True),
        ("Make the sky over the café a deep blue.", False),
        ("Replace the sign's text with 欢迎 in red letters on the wall.", False),
    ],
)
def test_non_english_scripts(pair, text, flagged):
    assert flags(pair, text)["not_english"] == float(flagged)


@pytest.mark.parametrize(
    "text",
    [
        "Put it back on the table.",
        "Put them back where they were.",
        "Make the dog look as in the second image.",
        "Make it look like image 2.",
        "Change the sky like the target.",
        "Color the box the same as the edited picture.",
        "Match the lighting of the target image.",
        "Undo the crop.",
        "Restore the original background.",
        "Make the sky like in the other photo.",
    ],
)
def test_instructions_leaking_target_only_knowledge(pair, text):
    score = check(pair, text)
    assert score.values["leak"] == 1.0, text
    assert score.meta["reasons"]["leak"]


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "Put a second lamp on the desk.",
        "Add a target board on the wall.",
        "Place the book back cover up on the table.",
        "Make the picture frame on the wall golden.",
        "Hang a new picture above the sofa.",
        "Add a second picture beside the mirror.",
        "Move the other picture on the wall to the left.",
    ],
)
def test_instructions_that_do_not_leak(pair, text):
    assert flags(pair, text)["leak"] == 0.0


def test_near_identical_images_a_recompressed_copy_is_caught(tmp_path):
    picture = scene()
    again = io.BytesIO()
    picture.save(again, format="JPEG", quality=95)
    copy = Image.open(io.BytesIO(again.getvalue())).convert("RGB")
    pair = Pair.of(save(tmp_path, "a.png", picture), save(tmp_path, "b.png", copy))
    score = check(pair, GOOD)
    assert score.values["identical_images"] == 1.0
    assert score.meta["image_hash_distance"] <= 2
    assert score.meta["reasons"]["identical_images"].startswith("dHash distance")


def test_the_same_image_twice_is_identical_without_decoding(tmp_path):
    ref = save(tmp_path, "a.png", scene())
    pair = Pair(id="same", source=ref, target=ref.model_copy(update={"uri": "/nowhere.png"}))
    score = check(pair, GOOD)
    assert score.values["identical_images"] == 1.0
    assert score.meta["image_hash_distance"] == 0


def test_a_recoloured_object_or_whole_image_is_not_near_identical(tmp_path):
    source = save(tmp_path, "a.png", scene())
    recoloured = save(tmp_path, "b.png", scene(colour=(40, 60, 200)))
    assert flags(Pair.of(source, recoloured), GOOD)["identical_images"] == 0.0
    flat_a = save(tmp_path, "c.png", Image.new("RGB", (32, 32), (10, 10, 40)))
    flat_b = save(tmp_path, "d.png", Image.new("RGB", (32, 32), (10, 10, 200)))
    score = check(Pair.of(flat_a, flat_b), GOOD)
    assert score.meta["image_hash_distance"] == 0  # the hash is blind to colour ...
    assert score.values["identical_images"] == 0.0  # ... the thumbnail is not


def test_dhash_distance_grows_with_the_change():
    a = scene()
    moved = scene(box=(30, 10, 60, 30))
    assert hamming(dhash(a), dhash(a)) == 0
    assert hamming(dhash(a), dhash(moved)) > 2


def test_an_unreadable_image_fails_the_row_and_text_checks_still_work_without_it(tmp_path):
    source = save(tmp_path, "a.png", scene())
    missing = ImageRef(uri=str(tmp_path / "gone.png"), sha256="0" * 64)
    result = heuristics().score([item_with(Pair.of(source, missing), GOOD)])[0]
    assert isinstance(result, SampleError) and result.error_type == "ImageError"
    text_only = heuristics(checks=["vague_terms", "leak"])
    score = text_only.score([item_with(Pair.of(source, missing), "Put it back.")])[0]
    assert isinstance(score, Score)
    assert score.values == {"vague_terms": 1.0, "leak": 1.0}


def test_an_item_without_instruction_is_a_recorded_failure(pair):
    result = heuristics().score([Item(pair=pair)])[0]
    assert isinstance(result, SampleError) and result.error_type == "NoInstruction"


def test_the_default_rule_drops_flagged_rows_and_duplicates_keeping_one(tmp_path):
    pairs = [
        Pair.of(save(tmp_path, f"s{i}.png", scene()), save(tmp_path, f"t{i}.png", scene(box=b)))
        for i, b in enumerate([(30, 10, 60, 30), (0, 0, 10, 10), (40, 40, 63, 63)])
    ]
    texts = [GOOD, "move the red box from the LEFT side to the upper-right corner", "Put it back."]
    items = [item_with(p, t) for p, t in zip(pairs, texts, strict=True)]
    plugin = heuristics()
    scored = [
        item.model_copy(update={"score": s})
        for item, s in zip(items, plugin.score(items), strict=True)
    ]
    decisions = plugin.decide(scored)
    first = min((0, 1), key=lambda i: pairs[i].id)  # ties: the pair id that sorts first stays
    assert [d.keep for d in decisions][:2] == [i == first for i in (0, 1)]
    assert decisions[1 - first].reason.startswith("duplicate (text_hash) of ")
    assert not decisions[2].keep
    assert decisions[2].reason == (
        "vague_terms: vague reference 'it'; leak: undoes an earlier state: 'put it back'"
    )


def test_duplicates_ignore_case_spacing_and_punctuation(pair):
    a = check(pair, "Turn the box blue!")
    b = check(pair, "turn  the BOX blue")
    c = check(pair, "Turn the box green!")
    assert a.meta["text_hash"] == b.meta["text_hash"] != c.meta["text_hash"]
