"""``ecap testing serve-llm``: the fake LLM server, for trying specs offline.

Judge and captioner specs that talk to Gemini or an OpenAI-compatible endpoint run unchanged
against it: point their base URLs at it through the environment. Every answer is a valid instance
of the schema the request sends (a judge's structured answer), or a fixed text; nothing is billed
and nothing leaves the machine. It is the server ecap's own tests use.
"""

from __future__ import annotations

import shlex
import signal
import threading
from types import FrameType

import click


@click.group("testing")
def group() -> None:
    """Tools for trying specs without a network or a GPU."""


@group.command("serve-llm")
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds every model call waits before answering.",
)
@click.option(
    "--api-key",
    default=None,
    help="Refuse calls without this key, as real APIs do (default: any key is accepted).",
)
@click.option(
    "--batch-polls",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Status reads a batch job reports unfinished before it completes.",
)
def serve_llm(latency: float, api_key: str | None, batch_polls: int) -> None:
    """Serve the Gemini and OpenAI APIs on 127.0.0.1 until Ctrl-C, with made-up answers."""
    from ..testing.servers import FakeLLMServer

    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = FakeLLMServer(latency=latency, api_key=api_key, batch_polls=batch_polls)
    try:
        server.start()
        variables = {
            **server.env(api_key or "fake-key"),
            "GEMINI_BASE_URL": server.url,
            "OPEN_JUDGE_URL": server.openai_base_url,
        }
        click.echo(f"fake Gemini and OpenAI APIs at {server.url}")
        click.echo("Point specs at it, in another shell:")
        for name, value in variables.items():
            click.echo(f"  export {name}={shlex.quote(value)}")
        click.echo("Ctrl-C stops it.", err=True)
        while not stop.wait(0.2):
            pass
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"served {server.count()} model calls", err=True)
