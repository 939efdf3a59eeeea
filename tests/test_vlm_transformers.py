"""The ``vlm`` captioner on the transformers backend, with tiny random models of the real
architectures (Qwen3-VL, Qwen2.5-VL, GLM-4.5V) loaded through ``from_pretrained``.

Random weights write gibberish, so these tests check what the captioner promises whatever the
text: one instruction per candidate and pair, which weights wrote it, failures confined to their
pair, a batch that runs out of memory halved rather than lost, and caching keyed on the weights.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecap.interfaces import PluginContext
from ecap.records import SampleError
from ecap.store import Store
from ecap.store.schema import InstructionRow, SampleFailure
from ecap.testing import run_spec

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart" / "data"
PAIRS = 6


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest, and steadiest, on one thread when the cores are shared."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    shutil.copytree(QUICKSTART, tmp_path / "data")
    return tmp_path / "data" / "pairs.csv"


def caption_spec(tmp_path: Path, pairs: Path, captioner: str = "vlm", **config: Any) -> Path:
    """A spec captioning ``pairs``. Random weights never end an answer, so every answer is cut
    off at max_new_tokens: these specs keep such answers unless told otherwise."""
    import yaml

    config.setdefault("keep_truncated", True)
    spec = {
        "name": "caption",
        "steps": {
            "pairs": {"source": "csv", "with": {"path": str(pairs)}},
            "captions": {"caption": captioner, "from": "pairs", "with": config},
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def instructions(spec: Path) -> list[InstructionRow]:
    store = Store(f"sqlite:///{spec.parent / 'ecap.db'}")
    with Session(store.engine) as session:
        rows = list(session.scalars(select(InstructionRow).where(InstructionRow.origin == "model")))
    store.close()
    return rows


def failures(spec: Path) -> list[SampleFailure]:
    store = Store(f"sqlite:///{spec.parent / 'ecap.db'}")
    with Session(store.engine) as session:
        rows = list(session.scalars(select(SampleFailure)))
    store.close()
    return rows


@pytest.mark.parametrize("architecture", ["qwen3-vl", "qwen2.5-vl", "glm4.5v"])
def test_each_architecture_captions_the_quickstart_pairs_and_names_its_weights(
    architecture: str, tiny_vlm: Any, tmp_path: Path, data: Path
) -> None:
    model = tiny_vlm(architecture)
    spec = caption_spec(tmp_path, data, model=str(model), sampling={"max_new_tokens": 6})

    result = run_spec(spec)

    assert result.status == "complete", result
    rows = instructions(spec)
    assert len(rows) == PAIRS
    assert len({row.pair_id for row in rows}) == PAIRS
    from ecap.models import folder_hash

    weights = folder_hash(model)
    assert all(row.author == f"{model}#{weights}" for row in rows)
    assert all(row.meta["model"]["content_hash"] == weights for row in rows)
    assert all(row.meta["backend"] == "transformers" for row in rows)
    assert all(0 < row.meta["tokens_out"] <= 6 and row.meta["tokens_in"] > 0 for row in rows)
    assert all(row.text.strip() for row in rows)

    again = run_spec(spec)
    assert [s.status for s in again.steps.values()] == ["cached", "cached"]


def test_sampling_n_candidates_gives_n_distinct_candidates_per_pair(
    tiny_qwen3_vl: Path, tmp_path: Path, data: Path
) -> None:
    spec = caption_spec(
        tmp_path,
        data,
        model=str(tiny_qwen3_vl),
        n=3,
        sampling={"max_new_tokens": 8, "temperature": 1.0, "seed": 7},
    )

    assert run_spec(spec).status == "complete"

    rows = instructions(spec)
    assert len(rows) == 3 * PAIRS
    for pair in {row.pair_id for row in rows}:
        candidates = sorted((r.candidate, r.text) for r in rows if r.pair_id == pair)
        assert [c for c, _ in candidates] == [0, 1, 2]
        assert len({text for _, text in candidates}) > 1, "sampled candidates differ"


def test_an_unreadable_missing_or_huge_image_fails_its_pair_and_nothing_else(
    tiny_qwen3_vl: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from ecap.records import ImageRef, Item, Pair
    from ecap_vlm.captioner import VLMCaptioner, VLMCaptionerConfig

    paths = {}
    for name, size in (("ok", 32), ("huge", 600), ("also-ok", 48)):
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (size, size), "teal").save(paths[name])
    paths["corrupt"] = tmp_path / "corrupt.png"
    paths["corrupt"].write_bytes(b"not a png any more")
    paths["missing"] = tmp_path / "missing.png"
    targets = ["ok", "corrupt", "huge", "missing", "also-ok"]

    def ref(path: Path) -> ImageRef:
        data = path.read_bytes() if path.exists() else b""
        return ImageRef(uri=str(path), sha256=hashlib.sha256(data).hexdigest())

    items = [Item(pair=Pair.of(ref(paths["ok"]), ref(paths[name]))) for name in targets]
    config = VLMCaptionerConfig(
        model=str(tiny_qwen3_vl),
        sampling={"max_new_tokens": 4},
        max_input_pixels=200_000,
        keep_truncated=True,
    )
    captioner = VLMCaptioner(
        config, PluginContext(step_id="c", base_dir=tmp_path, work_dir=tmp_path)
    )

    results = asyncio.run(captioner.acaption(items))

    kinds = [r.error_type if isinstance(r, SampleError) else len(r) for r in results]
    assert kinds == [1, "ImageError", "ImageError", "ImageError", 1]
    assert "not a readable image" in results[1].message
    assert "600x600 is over max_input_pixels=200000" in results[2].message
    assert "missing.png" in results[3].message


def test_new_weights_in_the_same_folder_recompute_the_captions(
    tiny_qwen3_vl: Path, tmp_path: Path, data: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen3_vl, model)
    spec = caption_spec(tmp_path, data, model="model", sampling={"max_new_tokens": 4})
    run_spec(spec)
    assert run_spec(spec).steps["captions"].status == "cached"

    config = model / "generation_config.json"
    config.write_text(config.read_text().replace("{", '{\n  "ecap_test_edit": 1,', 1))

    rerun = run_spec(spec)
    assert rerun.steps["captions"].status == "complete"
    assert rerun.steps["captions"].counts["done"] == PAIRS
    authors = {row.author for row in instructions(spec)}
    assert len(authors) == 2, "each instruction names the weights that wrote it"


def test_glm_turns_thinking_off_through_the_chat_template(
    tiny_glm45v: Path, tmp_path: Path, data: Path
) -> None:
    lengths = {}
    for thinking in (False, True):
        folder = tmp_path / str(thinking)
        folder.mkdir()
        spec = caption_spec(
            folder,
            data,
            "glm",
            model=str(tiny_glm45v),
            backend="transformers",
            thinking=thinking,
            sampling={"max_new_tokens": 4},
        )
        assert run_spec(spec).status == "complete"
        lengths[thinking] = {row.pair_id: row.meta["tokens_in"] for row in instructions(spec)}
    # thinking off appends an empty "<think></think>" to the prompt: two special tokens
    assert {p: n - lengths[True][p] for p, n in lengths[False].items()} == dict.fromkeys(
        lengths[True], 2
    )


# -- the local backend's batch handling, on the real model -----------------------------------


def backend_and_requests(model: Path, count: int) -> tuple[Any, list[Any]]:
    from ecap.images import prepare_image
    from ecap.records import ImageRef
    from ecap.vlm import Sampling, VLMRequest, make_backend

    context = PluginContext(step_id="t", base_dir=model.parent, work_dir=model.parent)
    backend = make_backend(
        "transformers", model=str(model), revision=None, options={}, context=context
    )
    images = sorted((QUICKSTART / "images").glob("*.png"))
    requests = []
    for i in range(count):
        paths = [images[(2 * i + k) % len(images)] for k in (0, 1)]
        refs = [
            ImageRef(uri=str(p), sha256=hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths
        ]
        prepared = [prepare_image(r, max_pixels=10**6, max_input_pixels=10**8) for r in refs]
        requests.append(
            VLMRequest(
                prompt=f"request {i}",
                source=prepared[0],
                target=prepared[1],
                sampling=Sampling(max_new_tokens=3),
            )
        )
    return backend, requests


def test_running_out_of_memory_halves_the_batch_and_loses_nothing(tiny_qwen3_vl: Path) -> None:
    import torch

    backend, requests = backend_and_requests(tiny_qwen3_vl, 6)
    model, _ = backend.load()
    real_generate = model.generate
    sizes: list[int] = []

    def generate(**kwargs: Any) -> Any:
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    model.generate = generate
    outcomes = backend.generate_sync(requests)

    assert sizes == [6, 3, 3]
    assert backend.batch_limit == 3
    assert all(not isinstance(o, SampleError) and len(o.texts) == 1 for o in outcomes)

    sizes.clear()
    backend.generate_sync(requests[:4])
    assert sizes == [3, 1], "the smaller batch is kept for later batches"


def test_a_request_that_breaks_its_batch_fails_alone(tiny_qwen3_vl: Path) -> None:
    backend, requests = backend_and_requests(tiny_qwen3_vl, 4)
    model, processor = backend.load()
    poison = processor.tokenizer("request 2", add_special_tokens=False)["input_ids"]
    real_generate = model.generate

    def generate(**kwargs: Any) -> Any:
        for row in kwargs["input_ids"].tolist():
            if any(row[i : i + len(poison)] == poison for i in range(len(row))):
                raise RuntimeError("device-side assert triggered (simulated)")
        return real_generate(**kwargs)

    model.generate = generate
    outcomes = backend.generate_sync(requests)

    assert [isinstance(o, SampleError) for o in outcomes] == [False, False, True, False]
    assert "device-side assert" in outcomes[2].message


def test_answers_cut_off_by_max_new_tokens_fail_their_pair_by_default(
    tiny_qwen3_vl: Path, tmp_path: Path, data: Path
) -> None:
    spec = caption_spec(
        tmp_path,
        data,
        model=str(tiny_qwen3_vl),
        sampling={"max_new_tokens": 3},
        keep_truncated=False,
    )

    result = run_spec(spec, max_error_rate=1.0)

    assert result.steps["captions"].counts["failed"] == PAIRS
    assert instructions(spec) == []
    assert {f.error_type for f in failures(spec)} == {"Truncated"}
    assert all("cut off at max_new_tokens=3" in f.message for f in failures(spec))


def test_sampled_candidates_do_not_depend_on_the_batch_size(
    tiny_qwen3_vl: Path, tmp_path: Path, data: Path
) -> None:
    texts = {}
    for batch_size in (1, 4):
        folder = tmp_path / str(batch_size)
        folder.mkdir()
        spec = caption_spec(
            folder,
            data,
            model=str(tiny_qwen3_vl),
            n=2,
            sampling={"max_new_tokens": 6, "temperature": 1.0, "seed": 3},
        )
        spec_data = yaml_load(spec)
        spec_data["steps"]["captions"]["batch_size"] = batch_size
        spec.write_text(json_dump(spec_data))
        assert run_spec(spec).status == "complete"
        texts[batch_size] = {(r.pair_id, r.candidate): r.text for r in instructions(spec)}
    assert len(texts[1]) == 2 * PAIRS
    assert texts[1] == texts[4]
    assert len(set(texts[1].values())) > PAIRS, "candidates and pairs still differ"


def test_a_model_that_cannot_be_loaded_fails_the_step_once(tmp_path: Path, data: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    spec = caption_spec(tmp_path, data, model="./broken")

    result = run_spec(spec)

    step = result.steps["captions"]
    assert step.status == "failed"
    assert "cannot load model './broken'" in str(step.error)
    assert failures(spec) == [], "no pair carries a copy of the setup error"


def yaml_load(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def json_dump(data: Any) -> str:
    import json

    return json.dumps(data)
