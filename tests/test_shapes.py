"""The ``shapes`` source: deterministic ShapesEdit pairs whose references say exactly what was
drawn. Pixel checks find an object by its colour (scenes here use distinct colours)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ecap.interfaces import PluginContext
from ecap.records import Item, SampleError
from ecap_shapes.operations import FAMILIES, OPERATIONS
from ecap_shapes.source import CHANGES, ShapesConfig, ShapesSource
from ecap_shapes.world import BACKGROUNDS, COLOURS

SIZE = 160
Pixel = tuple[int, int]


def generate(folder: Path, **config: Any) -> list[Item]:
    """Every item the source makes for ``config`` (failures fail the test)."""
    context = PluginContext(step_id="pairs", base_dir=folder, work_dir=folder / "work")
    source = ShapesSource(ShapesConfig(**config), context)
    results = source.load(list(source.rows()))
    assert not [r for r in results if isinstance(r, SampleError)]
    return [item for result in results if isinstance(result, list) for item in result]


def images(item: Item) -> tuple[Image.Image, Image.Image]:
    return (
        Image.open(item.pair.source.uri).convert("RGB"),
        Image.open(item.pair.target.uri).convert("RGB"),
    )


def change(item: Item) -> dict[str, Any]:
    assert item.reference is not None
    [only] = item.reference.meta[CHANGES]
    return only


def values(image: Image.Image) -> list[tuple[int, ...]]:
    """Every pixel's value, row by row."""
    bands = len(image.getbands())
    data = image.tobytes()
    return [tuple(data[i : i + bands]) for i in range(0, len(data), bands)]


def pixels(image: Image.Image, colour: str) -> list[Pixel]:
    rgb = COLOURS[colour]
    return [(i % image.width, i // image.width) for i, p in enumerate(values(image)) if p == rgb]


def centroid(points: list[Pixel]) -> tuple[float, float]:
    assert points, "the object is not in the image"
    return sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)


def mask(points: list[Pixel]) -> Image.Image:
    out = Image.new("L", (SIZE, SIZE), 0)
    for point in points:
        out.putpixel(point, 255)
    return out


def footprint(
    image: Image.Image, item: Item, kind: dict[str, Any], scale: float = 1.0
) -> list[Pixel]:
    """The pixels an object of the source scene covers in ``image``, whatever its texture: those
    unlike the background within its radius (times ``scale``; objects never come that close to
    each other)."""
    assert item.reference is not None
    scene = item.reference.meta["scene"]
    [obj] = [
        o for o in scene["objects"] if (o["shape"], o["colour"]) == (kind["shape"], kind["colour"])
    ]
    cx, cy, reach = obj["x"] * SIZE, obj["y"] * SIZE, obj["radius"] * scale * SIZE + 1
    background = BACKGROUNDS[scene["background"]]
    return [
        (x, y)
        for y in range(max(0, int(cy - reach)), min(SIZE, int(cy + reach) + 1))
        for x in range(max(0, int(cx - reach)), min(SIZE, int(cx + reach) + 1))
        if (x - cx) ** 2 + (y - cy) ** 2 <= reach**2 and image.getpixel((x, y)) != background
    ]


def colours_at(image: Image.Image, points: list[Pixel]) -> set[tuple[int, ...]]:
    every = values(image)
    return {every[y * image.width + x] for x, y in points}


def overlap(a: Image.Image, b: Image.Image) -> float:
    """Intersection over union of two masks."""
    both = sum(1 for p, q in zip(values(a), values(b), strict=True) if p[0] and q[0])
    either = sum(1 for p, q in zip(values(a), values(b), strict=True) if p[0] or q[0])
    return both / either


def solid_pairs(tmp_path: Path, operation: str, count: int = 4) -> list[Item]:
    """Pairs of one operation over solid objects of distinct colours."""
    return generate(
        tmp_path,
        count=count,
        seed=3,
        operations=[operation],
        image_size=SIZE,
        distractor_similarity=0.0,
    )


# -- determinism and splits ----------------------------------------------------------------------


def test_the_same_seed_and_split_give_byte_identical_images_and_identical_references(
    tmp_path: Path,
) -> None:
    config = {"count": 12, "seed": 7, "max_changes": 3, "secondary_changes": 1}
    first = generate(tmp_path / "a", **config)
    second = generate(tmp_path / "b", **config)
    for one, two in zip(first, second, strict=True):
        assert one.pair.id == two.pair.id
        assert Path(one.pair.source.uri).read_bytes() == Path(two.pair.source.uri).read_bytes()
        assert Path(one.pair.target.uri).read_bytes() == Path(two.pair.target.uri).read_bytes()
        assert one.reference is not None and two.reference is not None
        assert one.reference.model_dump(exclude={"id"}) == two.reference.model_dump(exclude={"id"})


def test_other_splits_and_other_seeds_are_other_pairs(tmp_path: Path) -> None:
    train = {i.pair.id for i in generate(tmp_path, count=30, seed=0, split="train")}
    test = {i.pair.id for i in generate(tmp_path, count=30, seed=0, split="test")}
    reseeded = {i.pair.id for i in generate(tmp_path, count=30, seed=1, split="train")}
    assert len(train) == len(test) == len(reseeded) == 30
    assert not train & test
    assert not train & reseeded


def test_items_carry_pair_reference_family_and_benchmark_but_no_instruction_by_default(
    tmp_path: Path,
) -> None:
    items = generate(tmp_path, count=20, max_changes=2, split="test")
    for item in items:
        assert item.instruction is None
        assert item.reference is not None and item.reference.pair_id == item.pair.id
        assert len(item.reference.primary) == len(item.reference.meta[CHANGES]) >= 1
        assert item.reference.overall.endswith("Everything else stays the same.")
        assert item.pair.category in (*FAMILIES, "mixed")
        assert item.pair.meta["benchmark"] == "ShapesEdit" and item.pair.meta["split"] == "test"
        assert Path(item.pair.source.uri).parent == tmp_path / "work" / "shapes-images"


def test_include_instruction_adds_the_canonical_instruction_as_a_reference_instruction(
    tmp_path: Path,
) -> None:
    [item] = solid_pairs(tmp_path, "move", count=1)
    [with_text] = generate(
        tmp_path,
        count=1,
        seed=3,
        operations=["move"],
        image_size=SIZE,
        distractor_similarity=0.0,
        include_instruction=True,
    )
    assert with_text.pair.id == item.pair.id
    assert with_text.instruction is not None
    assert with_text.instruction.origin == "reference"
    assert with_text.instruction.text.startswith("Move the ")


def test_difficulty_knobs_set_objects_and_changes_per_pair(tmp_path: Path) -> None:
    items = generate(tmp_path, count=10, min_objects=6, max_objects=6, min_changes=3, max_changes=3)
    for item in items:
        assert item.reference is not None
        assert len(item.reference.meta["scene"]["objects"]) >= 6
        assert len(item.reference.primary) == 3


def test_families_and_operations_restrict_what_is_generated(tmp_path: Path) -> None:
    stylistic = generate(tmp_path, count=15, families=["stylistic"])
    assert {i.pair.category for i in stylistic} == {"stylistic"}
    only = generate(tmp_path, count=10, operations=["zoom", "pan"])
    assert {change(i)["operation"] for i in only} <= {"zoom", "pan"}


def test_unknown_operations_and_inverted_ranges_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown operations"):
        ShapesConfig(operations=["teleport"])
    with pytest.raises(ValueError, match="must not exceed"):
        ShapesConfig(min_objects=4, max_objects=2)
    with pytest.raises(ValueError, match="no operation"):
        ShapesConfig(families=["semantic"], operations=["zoom"])


def test_a_pair_that_cannot_be_composed_fails_alone(tmp_path: Path) -> None:
    context = PluginContext(step_id="pairs", base_dir=tmp_path, work_dir=tmp_path)
    source = ShapesSource(
        ShapesConfig(count=2, operations=["swap"], min_objects=1, max_objects=1), context
    )
    results = source.load(list(source.rows()))
    assert all(isinstance(r, SampleError) and r.error_type == "GenerationError" for r in results)


# -- each operation draws what its reference says ------------------------------------------------


def test_move_shifts_the_named_object_by_the_stated_share_from_the_viewers_side(
    tmp_path: Path,
) -> None:
    steps = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for item in solid_pairs(tmp_path, "move", count=8):
        moved = change(item)
        source, target = images(item)
        (x0, y0), (x1, y1) = (
            centroid(pixels(image, moved["object"]["colour"])) for image in (source, target)
        )
        dx, dy = steps[moved["direction"]]
        assert x1 - x0 == pytest.approx(dx * moved["amount"] * SIZE, abs=1.5)
        assert y1 - y0 == pytest.approx(dy * moved["amount"] * SIZE, abs=1.5)
        if moved["direction"] == "left":
            assert x1 < x0  # left as the viewer sees it: smaller x


def test_resize_scales_the_object_by_the_stated_factor(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "resize"):
        resized = change(item)
        source, target = images(item)
        before = len(footprint(source, item, resized["object"]))
        after = len(footprint(target, item, resized["object"], resized["amount"]))
        # linear size: the square root of the area (edge pixels weigh more on small shapes)
        assert (after / before) ** 0.5 == pytest.approx(resized["amount"], rel=0.12)
        assert (after > before) == (resized["direction"] == "larger")


def test_rotate_turns_the_object_the_stated_way(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "rotate", count=6):
        turned = change(item)
        source, target = images(item)
        drawn = footprint(source, item, turned["object"])
        before, after = mask(drawn), mask(footprint(target, item, turned["object"]))
        centre = centroid(drawn)
        clockwise = turned["direction"] == "clockwise"
        # PIL turns counterclockwise for a positive angle.
        stated = before.rotate(-turned["amount"] if clockwise else turned["amount"], center=centre)
        reversed_ = before.rotate(
            turned["amount"] if clockwise else -turned["amount"], center=centre
        )
        assert overlap(stated, after) > overlap(reversed_, after)
        assert overlap(stated, after) > 0.85


def test_swap_exchanges_the_two_objects_positions(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "swap"):
        swapped = change(item)
        source, target = images(item)
        first, second = swapped["object"]["colour"], swapped["other"]["colour"]
        assert centroid(pixels(target, first)) == pytest.approx(
            centroid(pixels(source, second)), abs=1.5
        )
        assert centroid(pixels(target, second)) == pytest.approx(
            centroid(pixels(source, first)), abs=1.5
        )


def test_add_and_remove_make_the_object_appear_and_disappear(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "remove"):
        source, target = images(item)
        colour = change(item)["object"]["colour"]
        assert pixels(source, colour) and not pixels(target, colour)
    for item in solid_pairs(tmp_path, "add"):
        source, target = images(item)
        colour = change(item)["object"]["colour"]
        assert len(pixels(target, colour)) > len(pixels(source, colour))


def test_replace_puts_the_new_object_in_the_old_ones_place(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "replace"):
        replaced = change(item)
        source, target = images(item)
        old, new = (
            footprint(source, item, replaced["object"]),
            footprint(target, item, replaced["object"]),
        )
        assert COLOURS[replaced["object"]["colour"]] in colours_at(source, old)
        assert COLOURS[replaced["new_object"]["colour"]] in colours_at(target, new)
        assert overlap(mask(old), mask(new)) < 0.95  # another shape


def test_recolor_background_and_texture_change_what_they_say(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "recolor"):
        recoloured = change(item)
        source, target = images(item)
        after = colours_at(target, footprint(target, item, recoloured["object"]))
        assert COLOURS[recoloured["object"]["colour"]] not in after
        assert COLOURS[recoloured["to"]] in after
    for item in solid_pairs(tmp_path, "background"):
        source, target = images(item)
        shift = change(item)
        assert source.getpixel((0, 0)) == BACKGROUNDS[shift["from"]]
        assert target.getpixel((0, 0)) == BACKGROUNDS[shift["to"]]
    for item in solid_pairs(tmp_path, "texture", count=8):
        textured = change(item)
        source, target = images(item)
        colour = textured["object"]["colour"]
        filled_before, filled_after = len(pixels(source, colour)), len(pixels(target, colour))
        if textured["to"] == "solid":
            assert filled_after > filled_before  # the pattern's ink is gone
        elif textured["object"]["texture"] == "solid":
            assert filled_after < filled_before  # ink now covers part of the fill
        else:
            assert source.tobytes() != target.tobytes()


def mean(image: Image.Image, band: int) -> float:
    band_values = [p[band] for p in values(image)]
    return sum(band_values) / len(band_values)


def test_brightness_and_tone_change_the_whole_image(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "brightness"):
        source, target = images(item)
        grey_before, grey_after = (mean(i.convert("L"), 0) for i in (source, target))
        assert (grey_after > grey_before) == (change(item)["direction"] == "brighter")
    for item in solid_pairs(tmp_path, "tone"):
        source, target = images(item)
        warmth_before, warmth_after = (mean(i, 0) - mean(i, 2) for i in (source, target))
        assert (warmth_after > warmth_before) == (change(item)["direction"] == "warmer")


def test_count_changes_how_many_copies_there_are(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "count"):
        counted = change(item)
        source, target = images(item)
        colour = counted["object"]["colour"]
        ratio = len(pixels(target, colour)) / len(pixels(source, colour))
        assert ratio == pytest.approx(counted["to"] / counted["from"], rel=0.1)


# -- the camera moves the whole scene ------------------------------------------------------------


def test_pan_shifts_every_pixel_of_the_scene_the_other_way(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "pan", count=6):
        panned = change(item)
        source, target = images(item)
        shift = round(panned["amount"] * SIZE)
        dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[
            panned["direction"]
        ]
        # The camera moves by (dx, dy): what was at source (x, y) is at target (x - dx, y - dy).
        width, height = SIZE - shift * abs(dx), SIZE - shift * abs(dy)
        seen_in_source = (max(0, dx * shift), max(0, dy * shift))
        seen_in_target = (max(0, -dx * shift), max(0, -dy * shift))
        source_part = source.crop(
            (*seen_in_source, seen_in_source[0] + width, seen_in_source[1] + height)
        )
        target_part = target.crop(
            (*seen_in_target, seen_in_target[0] + width, seen_in_target[1] + height)
        )
        assert source_part.tobytes() == target_part.tobytes()


def zoom_error(wide: Image.Image, close: Image.Image, factor: float) -> float:
    """Mean absolute difference between ``close`` and the centre of ``wide`` cropped to a
    1/``factor`` window and rescaled: how far the pair is from a crop-and-rescale."""
    side = SIZE / factor
    start = (SIZE - side) / 2
    cropped = wide.crop((round(start), round(start), round(start + side), round(start + side)))
    rescaled = cropped.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    diffs = [
        abs(a - b)
        for p, q in zip(values(rescaled), values(close), strict=True)
        for a, b in zip(p, q, strict=True)
    ]
    return sum(diffs) / len(diffs)


def test_zoom_is_a_crop_and_rescale_of_the_whole_scene(tmp_path: Path) -> None:
    for item in solid_pairs(tmp_path, "zoom", count=6):
        zoomed = change(item)
        source, target = images(item)
        wide, close = (source, target) if zoomed["direction"] == "in" else (target, source)
        assert zoom_error(wide, close, zoomed["amount"]) < 6.0
        # and not the same images unchanged, nor the other way round
        assert zoom_error(close, wide, zoomed["amount"]) > zoom_error(wide, close, zoomed["amount"])


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_operation_changes_the_image_and_names_its_family(
    tmp_path: Path, operation: str
) -> None:
    for item in generate(tmp_path, count=3, operations=[operation], image_size=64):
        source, target = images(item)
        assert source.tobytes() != target.tobytes()
        assert item.pair.category == OPERATIONS[operation][0]
        assert change(item)["operation"] == operation
