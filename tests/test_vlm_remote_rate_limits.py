"""An API captioner stays within the server's requests a minute, through the same pacer as the
judges (:class:`ecap.remote.RemoteCaller`): told a limit below the server's, it is never refused
(no burst at the start, as a bucket that starts full would send); told nothing, it learns the
limit from the answers and refusals and every pair still gets its caption. Counts at the fake
server, never timings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ecap.images import PreparedImage
from ecap.interfaces import PluginContext
from ecap.records import SampleError
from ecap.testing import FakeLLMServer, LLMRequest, count_api_calls, run_spec
from ecap.testing.servers import RateLimit
from ecap.vlm import Generation, Sampling, VLMRequest, make_backend
from ecap_vlm.backends.remote import RemoteBackend

pytest.importorskip("openai")
pytest.importorskip("google.genai")

REPO = Path(__file__).resolve().parent.parent
PAIRS = 6  # examples/quickstart/data/pairs.csv
CANDIDATES = 4  # each its own call: 24 calls, more than the server admits in a second
BACKENDS = ["openai-compatible", "gemini"]


def caption(request: LLMRequest) -> str:
    return "Make the sky orange."


def server_url(server: FakeLLMServer, backend: str) -> str:
    return server.url if backend == "gemini" else server.openai_base_url


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_captioner_configured_below_the_servers_limit_is_never_refused(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    shutil.copytree(REPO / "examples" / "quickstart" / "data", tmp_path / "data")
    # At most 10 calls in any second; the captioner is told 480 a minute, i.e. 8 a second, with
    # 16 calls allowed in flight: a limiter that let the first 16 go at once would be refused.
    with FakeLLMServer(caption, rate_limit=RateLimit(600, window=1)) as server:
        options = {
            "base_url": server_url(server, backend),
            "api_key": "${env:FAKE_LLM_KEY}",
            "max_concurrent_calls": 16,
            "requests_per_minute": 480,
        }
        step = {
            "backend": backend,
            "model": "tiny-captioner",
            "n": CANDIDATES,
            "sampling": {"temperature": 0.8, "seed": 1},
            "options": options,
        }
        spec = {
            "name": "paced-captions",
            "store": f"sqlite:///{tmp_path / 'ecap.db'}",
            "steps": {
                "pairs": {"source": "csv", "with": {"path": "data/pairs.csv"}},
                "captions": {"caption": "vlm", "from": "pairs", "with": step},
            },
        }
        (tmp_path / "spec.yaml").write_text(json.dumps(spec))  # JSON is YAML
        result = run_spec(tmp_path / "spec.yaml")
        assert result.status == "complete"
        assert server.rate_limited() == 0
        assert server.count() == PAIRS * CANDIDATES
    assert count_api_calls(tmp_path / "ecap.db", "ok") == PAIRS * CANDIDATES


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_captioner_told_no_limit_learns_it_and_every_pair_gets_its_captions(
    backend: str, tmp_path: Path
) -> None:
    image = (REPO / "examples" / "quickstart" / "data" / "images").glob("*.png").__next__()
    data = image.read_bytes()
    prepared = PreparedImage(data, "image/png", hashlib.sha256(data).hexdigest())
    requests = [
        VLMRequest(
            prompt=f"What changed in pair {i}?",
            source=prepared,
            target=prepared,
            sampling=Sampling(temperature=0.8, seed=1),
            n=CANDIDATES,
        )
        for i in range(PAIRS)
    ]
    # 16 calls go out at once against 10 allowed in any second: some must be refused.
    with FakeLLMServer(caption, rate_limit=RateLimit(600, window=1)) as server:
        options: dict[str, Any] = {
            "base_url": server_url(server, backend),
            "api_key": "sk-fake",
            "max_concurrent_calls": 16,
            "backoff": 0.01,
            "max_backoff": 0.05,
        }
        captioner = make_backend(
            backend,
            model="tiny-captioner",
            revision=None,
            options=options,
            context=PluginContext(step_id="s", base_dir=tmp_path, work_dir=tmp_path),
        )
        assert isinstance(captioner, RemoteBackend)
        outcomes = asyncio.run(captioner.generate(requests))
        captioner.close()
        refused = server.rate_limited()
        assert refused > 0
        assert server.count() == PAIRS * CANDIDATES, "each call answered once, after its refusals"

    assert not [o for o in outcomes if isinstance(o, SampleError)]
    assert [len(o.texts) for o in outcomes if isinstance(o, Generation)] == [CANDIDATES] * PAIRS
    assert captioner.pacer.refusals == refused, "the captioner's pacer saw every refusal"
    assert captioner.pacer.pace is not None and captioner.pacer.pace <= 600, "and kept to the limit"
