"""The simulated ``shapes-annotator`` and a small ShapesEdit pipeline through the runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ecap.interfaces import PluginContext
from ecap.records import Instruction, Item, SampleError
from ecap.store.schema import InstructionRow, PairRow, PreferenceRow, VerdictRow
from ecap.testing import query_store, run_spec
from ecap_shapes.annotator import AUTHOR, ShapesAnnotator, ShapesAnnotatorConfig
from ecap_shapes.judge import ShapesRulesConfig, score
from ecap_shapes.source import ShapesConfig, ShapesSource


def captioned(folder: Path, text: str, **config: Any) -> list[Item]:
    """Source items carrying a model's instruction ``text``."""
    context = PluginContext(step_id="pairs", base_dir=folder, work_dir=folder)
    source = ShapesSource(ShapesConfig(image_size=48, **config), context)
    made = [i for r in source.load(list(source.rows())) if isinstance(r, list) for i in r]
    return [
        i.model_copy(
            update={
                "instruction": Instruction(
                    pair_id=i.pair.id, text=text, origin="model", author="tiny-vlm"
                )
            }
        )
        for i in made
    ]


def annotate(items: list[Item], **config: Any) -> list[list[Item] | SampleError | None]:
    context = PluginContext(step_id="refined", base_dir=Path("."), work_dir=Path("."))
    annotator = ShapesAnnotator(ShapesAnnotatorConfig(**config), context)
    tasks = annotator.push(items)
    assert tasks == annotator.push(items)  # pushing again is harmless: the same tasks
    return annotator.pull(list(zip(items, tasks, strict=True)))


def test_refinements_are_the_reference_instruction_labelled_simulated(tmp_path: Path) -> None:
    items = captioned(tmp_path, "Edit the image.", count=5, max_changes=2)
    for item, result in zip(items, annotate(items, task="refine"), strict=True):
        assert isinstance(result, list)
        [refined] = result
        made = refined.instruction
        assert made is not None and item.instruction is not None
        assert made.origin == "human"  # it stands in for the human refiner ...
        assert made.author == AUTHOR == "simulated:shapes-annotator"  # ... and says it is not one
        assert made.meta["simulated"] is True
        assert made.parent_id == item.instruction.id
        assert score(refined, ShapesRulesConfig()).weighted == 5.0


def test_prefer_turns_a_failing_instruction_into_a_simulated_preference(tmp_path: Path) -> None:
    [item] = captioned(tmp_path, "Optimize the image.", count=1)
    [result] = annotate([item], task="prefer")
    assert isinstance(result, list)
    [corrected] = result
    preference, chosen = corrected.preference, corrected.instruction
    assert preference is not None and chosen is not None and item.instruction is not None
    assert preference.chosen_id == chosen.id and chosen.author == AUTHOR
    assert preference.rejected_id == item.instruction.id
    assert preference.meta["simulated"] is True
    assert preference.meta["rejected_score"] < 5.0


def test_prefer_leaves_an_instruction_that_passes_alone(tmp_path: Path) -> None:
    [item] = captioned(tmp_path, "Edit the image.", count=1)
    [refined] = annotate([item], task="refine")
    assert isinstance(refined, list)
    assert annotate(refined, task="prefer") == [[]]  # finished, nothing to correct


def test_items_without_a_shapes_reference_fail_alone(tmp_path: Path) -> None:
    [item] = captioned(tmp_path, "Edit the image.", count=1)
    [result] = annotate([item.model_copy(update={"reference": None})])
    assert isinstance(result, SampleError) and "ShapesEdit reference" in result.message


def test_a_shapes_pipeline_generates_judges_captions_and_collects_preferences(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    spec = write_spec(
        """
        name: shapes-mini
        steps:
          pairs:
            source: shapes
            with: {count: 6, seed: 1, split: test, image_size: 48, include_instruction: true}
          reference_judged:
            judge: shapes-rules
            from: pairs
          captions:
            caption: fake
            from: pairs
            with: {template: "Edit the {category} image."}
          corrections:
            annotate: shapes-annotator
            from: captions
            with: {task: prefer}
          caption_judged:
            judge: shapes-rules
            from: captions
        """
    )
    result = run_spec(spec)
    assert result.status == "complete", {k: v.error for k, v in result.steps.items()}
    store = tmp_path / "ecap.db"
    assert len(query_store(store, select(PairRow))) == 6
    verdicts = query_store(store, select(VerdictRow))
    by_author = {row.id: row.author for row in query_store(store, select(InstructionRow))}
    reference_scores = [v.weighted for v in verdicts if by_author[v.instruction_id] == "shapes"]
    caption_scores = [v.weighted for v in verdicts if by_author[v.instruction_id] == "fake"]
    assert reference_scores == [5.0] * 6
    assert len(caption_scores) == 6 and max(caption_scores) < 5.0
    preferences = query_store(store, select(PreferenceRow))
    assert len(preferences) == 6
    assert {by_author[p.chosen_id] for p in preferences} == {AUTHOR}
    assert {by_author[p.rejected_id] for p in preferences} == {"fake"}
    assert run_spec(spec).steps["pairs"].status == "cached"  # a second run is served from the store


def test_evaluate_grades_with_the_papers_defect_codes_a_flip_being_critical(
    tmp_path: Path,
) -> None:
    from ecap.defects import grade
    from ecap_shapes.annotator import defect_codes

    # A perfect instruction (the refinement) is correct; a wrong one gets P0 codes.
    [item] = captioned(tmp_path, "Edit the image.", count=1, operations=["move"])
    [refined] = annotate([item], task="refine")
    assert isinstance(refined, list)
    [[good]] = [r for r in annotate(refined, task="evaluate") if isinstance(r, list)]
    assert good.verdict is not None and good.verdict.kind == "human"
    assert good.verdict.judge == f"human:{AUTHOR}" and good.verdict.meta["simulated"] is True
    assert good.verdict.labels == [] and grade(good.verdict.labels) == "correct"

    assert refined[0].instruction is not None
    text = refined[0].instruction.text
    flipped = text.replace("left", "@").replace("right", "left").replace("@", "right")
    flipped = flipped.replace(" up ", " @ ").replace(" down ", " up ").replace(" @ ", " down ")
    wrong = item.model_copy(
        update={"instruction": Instruction(pair_id=item.pair.id, text=flipped, origin="model")}
    )
    [[bad]] = [r for r in annotate([wrong], task="evaluate") if isinstance(r, list)]
    assert bad.verdict is not None and "P0:viewpoint" in bad.verdict.labels
    assert grade(bad.verdict.labels) == "P0"
    # A brightness edit described the wrong way round is a global error (P1), not a P0.
    assert defect_codes(["wrong_direction"], {"brightness"}) == ["P1:global"]
    assert defect_codes(["wrong_direction", "vague_terms"], {"move"}) == [
        "P0:attribute",
        "P2:other",
    ]
