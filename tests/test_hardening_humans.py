"""Human text that carries nothing is never an instruction or a preference, and human text is
stored in one Unicode form (NFC)."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from ecap.store.schema import SampleFailure
from ecap.testing import query_store, run_spec
from ecap_labelstudio.annotations import Annotation, Rejected, decide

LABELSTUDIO_DATA = Path(__file__).resolve().parent / "data" / "labelstudio"

#: Texts that look filled in but say nothing: whitespace of every kind, zero-width space and
#: joiners, word joiner, BOM, soft hyphen, a lone combining accent, Hangul filler, blank Braille.
NOTHING = [
    "",
    "   ",
    "\t\n",
    "\u00a0\u3000",
    "\u200b",
    "\u200c\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    " \u200b \ufeff ",
    "\u0301",
    "\u3164",
    "\u2800",
]


def answer(**values: list[str]) -> Annotation:
    return Annotation(
        id="1", annotator="ann", created_at=None, updated_at=None, lead_time=None, values=values
    )


@pytest.mark.parametrize("blank", NOTHING)
def test_an_empty_or_invisible_refinement_is_rejected_with_the_reason(blank: str) -> None:
    with pytest.raises(Rejected, match="no corrected instruction") as caught:
        decide("refine", answer(quality=["needs_fix"], refined=[blank]), ["Make it pink."])
    if blank.strip(" \t\r\n"):  # something was typed: the message says what
        assert "invisible characters (U+" in str(caught.value)


@pytest.mark.parametrize("blank", NOTHING)
def test_an_empty_or_invisible_rewrite_never_becomes_a_preference(blank: str) -> None:
    with pytest.raises(Rejected, match="no better instruction was written"):
        decide("prefer", answer(best=["none"], rewrite=[blank]), ["A", "B"])
    with pytest.raises(Rejected, match="no candidate chosen and no instruction written"):
        decide("prefer", answer(rewrite=[blank]), ["A", "B"])


@pytest.mark.parametrize("blank", NOTHING)
def test_a_blank_rewrite_beside_a_pick_is_just_the_pick(blank: str) -> None:
    decision = decide("prefer", answer(best=["B"], rewrite=[blank]), ["A", "B"])
    assert decision.pick == 1 and decision.text is None


def test_an_accurate_refinement_left_blank_keeps_the_shown_instruction() -> None:
    decision = decide("refine", answer(quality=["accurate"], refined=["\u200b"]), ["Keep it."])
    assert decision.text == "Keep it."


def test_human_text_is_stored_in_nfc_without_meaningless_invisibles() -> None:
    typed = "Paint the cafe\u0301 sign\u200b red,\ufeff  then add a cre\u0300me awning."
    decision = decide("refine", answer(quality=["needs_fix"], refined=[typed]), ["x"])
    assert decision.text == "Paint the caf\u00e9 sign red, then add a cr\u00e8me awning."
    assert decision.text is not None and unicodedata.is_normalized("NFC", decision.text)

    rewrite = decide("prefer", answer(rewrite=["Cafe\u0301 in blue."]), ["A", "B"])
    assert rewrite.text == "Caf\u00e9 in blue."
    graded = decide("evaluate", answer(verdict=["correct"], comment=["nai\u0308ve"]), ["x"])
    assert graded.comment == "na\u00efve"


def test_joiners_inside_real_text_are_kept() -> None:
    family = "Add the \U0001f468\u200d\U0001f469\u200d\U0001f467 emoji sticker."
    decision = decide("refine", answer(quality=["needs_fix"], refined=[family]), ["x"])
    assert decision.text == family


def test_an_unreadable_image_is_reported_without_python_object_reprs(
    tmp_path: Path, write_spec: Callable[[str], Path]
) -> None:
    data = tmp_path / "labelstudio"
    shutil.copytree(LABELSTUDIO_DATA, data)
    (data / "images" / "0-target.png").write_bytes(b"this is not a PNG")
    settings = {
        "task": "refine",
        "export_file": str(data / "refine.json"),
        "document_root": str(tmp_path),
        "images_root": str(data / "images"),
    }
    spec = write_spec(
        f"name: images\nsteps:\n  old:\n    source: label-studio\n    max_error_rate: 1\n"
        f"    with: {json.dumps(settings)}\n"
    )
    run_spec(spec, store=f"sqlite:///{tmp_path / 'ecap.db'}")
    (message,) = query_store(tmp_path / "ecap.db", select(SampleFailure.message))
    assert "0-target.png is not an image" in message
    assert not re.search(r"object at 0x[0-9a-f]+", message), message
