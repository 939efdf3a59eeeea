"""A key typed into a spec, or known from the environment, never reaches the store, a log or the
terminal, whatever YAML spelling or error message carries it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ecap.hashing import redact_text
from ecap.logs import configure, event
from ecap.secrets import (
    REDACTED,
    forget_secrets,
    register_config,
    register_environment,
    register_secret,
    registered,
    scrub,
    scrub_data,
)

KEY = "sk-live-5f2b9c0d7e"


@pytest.fixture(autouse=True)
def no_secrets_between_tests() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


# Each spelling holds KEY (or its lines) under a secret-looking name, and "keep-me" elsewhere.
SPELLINGS = {
    "plain": f"api_key: {KEY}\nmodel: keep-me\n",
    "double quoted": f'api_key: "{KEY}"\nmodel: keep-me\n',
    "single quoted": f"api_key: '{KEY}'\nmodel: keep-me\n",
    "next line": f"api_key:\n  {KEY}\nmodel: keep-me\n",
    "plain over two lines": f"api_key: {KEY[:7]}\n  {KEY[7:]}\nmodel: keep-me\n",
    "folded block": f"api_key: >\n  {KEY}\nmodel: keep-me\n",
    "literal block": f"api_key: |-\n  {KEY}\nmodel: keep-me\n",
    "flow mapping": f"with: {{api_key: {KEY}, model: keep-me}}\n",
    "flow over lines": f"with: {{\n  api_key: {KEY},\n  model: keep-me\n}}\n",
    "json": json.dumps({"with": {"api_key": KEY, "model": "keep-me"}}),
    "quoted key": f'"api_key": {KEY}\nmodel: keep-me\n',
    "nested object": f"auth:\n  token:\n    value: {KEY}\nmodel: keep-me\n",
    "list under a secret": f"credentials:\n  - {KEY}\nmodel: keep-me\n",
    "deep step config": (
        f"steps:\n  judge:\n    judge: openai\n    with:\n      model: keep-me\n"
        f"      extra_headers: {{Authorization: Bearer {KEY}}}\n"
    ),
    "anchor used under a secret": f"shared: &k {KEY}\napi_key: *k\nmodel: keep-me\n",
    "other secret names": f"db_password: {KEY}\nhf_token: {KEY}\nmodel: keep-me\n",
}


@pytest.mark.parametrize("style", sorted(SPELLINGS))
def test_a_typed_key_is_redacted_in_every_yaml_spelling(style: str) -> None:
    stored = redact_text(SPELLINGS[style])
    assert KEY not in stored and KEY[:7] not in stored and KEY[7:] not in stored
    assert "keep-me" in stored, "only secrets are cut"
    assert REDACTED in stored
    # what is left is still the same document shape: every other key is where it was
    assert "model" in stored


def test_env_references_and_empty_values_are_kept() -> None:
    text = "api_key: ${env:OPENAI_API_KEY}\ntoken: ''\npassword:\nmodel: m\n"
    assert redact_text(text) == text


def test_redaction_keeps_the_lines_around_a_block_scalar() -> None:
    text = f"with:\n  api_key: |\n    {KEY}\n  model: m\nname: x\n"
    stored = redact_text(text)
    assert stored == f"with:\n  api_key: {REDACTED}\n  model: m\nname: x\n"


def test_a_spec_that_does_not_parse_is_not_stored() -> None:
    stored = redact_text(f"api_key: {KEY}\n  bad: [unclosed\n")
    assert KEY not in stored and "not valid YAML" in stored


def test_registered_secrets_are_scrubbed_from_spec_text_anywhere() -> None:
    register_secret(KEY)
    stored = redact_text(f"notes: the old key was {KEY}\nmodel: m\n")
    assert KEY not in stored and "notes: the old key was ***" in stored


def test_scrub_removes_every_known_value_and_its_url_encoded_form() -> None:
    register_secret("pa ss/word+1")
    register_secret(KEY)
    echoed = f'{{"error": "Incorrect API key provided: {KEY}", "url": "?key=pa%20ss%2Fword%2B1"}}'
    assert KEY not in scrub(echoed) and "pa%20ss" not in scrub(echoed)
    assert scrub_data({"body": [echoed], KEY: 1}) == {"body": [scrub(echoed)], REDACTED: 1}


def test_short_values_are_not_secrets_so_messages_stay_readable() -> None:
    register_secret("abc")
    register_secret("")
    register_secret(None)
    assert scrub("abc is fine") == "abc is fine"


def test_secrets_are_found_in_configs_and_the_environment() -> None:
    from pydantic import BaseModel, SecretStr

    class Config(BaseModel):
        api_key: SecretStr
        headers: dict[str, str]
        model: str

    register_config(
        Config(api_key=SecretStr("sk-config-1"), headers={"x-api-key": "hk-123456"}, model="gpt")
    )
    register_config({"with": {"auth": {"password": "pw-raw-999"}, "model": "gpt"}})
    register_environment({"OPENAI_API_KEY": "sk-env-22", "HOME": "/root/home", "PGPASSWORD": ""})
    assert {"sk-config-1", "hk-123456", "pw-raw-999", "sk-env-22"} <= registered()
    assert "gpt" not in registered() and "/root/home" not in registered()


def test_logs_never_carry_a_known_secret(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(KEY)
    for json_lines in (False, True):
        configure(json_lines=json_lines, level=logging.INFO)
        event("call failed", error=f"401: Incorrect API key provided: {KEY}", key=KEY)
        try:
            raise RuntimeError(f"server said {KEY}")
        except RuntimeError:
            logging.getLogger("ecap.plugin").exception("plugin failed")
    logged = capsys.readouterr().err
    assert KEY not in logged
    assert logged.count(REDACTED) >= 6


def test_redacted_text_parses_back_when_the_secret_was_quoted_in_json() -> None:
    stored = redact_text(SPELLINGS["json"])
    # JSON specs stay readable: the value is replaced, the structure is intact
    assert stored.startswith('{"with": {"api_key": ***') and yaml.safe_load(
        stored.replace(REDACTED, '"x"')
    ) == {"with": {"api_key": "x", "model": "keep-me"}}


def test_a_key_a_server_echoes_back_is_stored_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openai")
    from sqlalchemy import select

    from ecap.store.schema import ApiCall, Run, SampleFailure
    from ecap.testing import FakeLLMServer, LLMError, make_pairs, query_store, run_spec

    def echo_the_key(request: object) -> object:
        raise LLMError(400, f"Incorrect API key provided: {KEY}. Find your key at ...")

    make_pairs(tmp_path, 2)
    with FakeLLMServer(echo_the_key) as server:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            json.dumps(
                {
                    "name": "echo",
                    "steps": {
                        "pairs": {"source": "csv", "with": {"path": "pairs.csv"}},
                        "judge": {
                            "judge": "openai",
                            "from": "pairs",
                            "max_error_rate": 1,
                            "with": {
                                "model": "gpt-4.1",
                                "api_key": KEY,
                                "base_url": server.openai_base_url,
                                "max_attempts": 1,
                            },
                        },
                    },
                }
            )
        )
        configure(json_lines=False, level=logging.INFO)
        run_spec(spec, store=f"sqlite:///{tmp_path / 'ecap.db'}")
    store = tmp_path / "ecap.db"
    stored = [
        *query_store(store, select(SampleFailure.message)),
        *map(str, query_store(store, select(ApiCall.error))),
        *map(str, query_store(store, select(ApiCall.response))),
        *query_store(store, select(Run.spec_text)),
    ]
    assert any("Incorrect API key provided" in text for text in stored), "the echo was stored"
    assert not [text for text in stored if KEY in text]
    assert KEY not in capsys.readouterr().err
