"""``ecap report``: every report section's tables from the store, in one of the formats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..cli_api import handle_errors, json_option, open_store, store_option

if TYPE_CHECKING:
    from .sections import HumanPolicy


@click.command("report")
@store_option
@click.option(
    "--judge",
    default=None,
    help="Judge whose verdicts to report: its full name (gemini:gemini-2.5-pro) or plugin "
    "(gemini). Needed when the selection holds verdicts from several judges.",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    metavar="[LABEL=]RUN",
    help="Only judge verdicts written by this run (an id or id prefix). Repeat for several; two "
    "or more runs are also compared side by side in the ablation table.",
)
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="[LABEL=]STEP",
    help="Only judge verdicts written by this step id. Repeat to compare steps in the ablation "
    "table (within the --run runs, if given).",
)
@click.option(
    "--human-run",
    "human_runs",
    multiple=True,
    metavar="RUN",
    help="Only human verdicts written by this run (default: every human verdict).",
)
@click.option(
    "--human-step",
    "human_steps",
    multiple=True,
    metavar="STEP",
    help="Only human verdicts written by this step id.",
)
@click.option(
    "--humans",
    "human_policy",
    type=click.Choice(["latest", "worst"]),
    default="latest",
    show_default=True,
    help="With several human verdicts for one instruction: the latest, or the most severe.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "html", "terminal"]),
    default="md",
    show_default=True,
    help="Markdown tables, tidy CSV, a self-contained HTML page with charts, or boxed tables.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
@json_option
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--resamples",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@handle_errors
def report_command(
    store_ref: str | None,
    judge: str | None,
    runs: tuple[str, ...],
    steps: tuple[str, ...],
    human_runs: tuple[str, ...],
    human_steps: tuple[str, ...],
    human_policy: HumanPolicy,
    fmt: str,
    output: Path | None,
    as_json: bool,
    seed: int,
    resamples: int,
) -> None:
    """Tables from the store, with 95% bootstrap intervals and n in every cell: judge scores per
    model and benchmark, human defect grades, an ablation of runs or steps, judge-human
    agreement, and the sections installed plugins add.

    Runs and steps may be labelled for the ablation table: --run "SFT only=01J9Z...".
    """
    from .render import RENDERERS, render_json
    from .sections import ReportOptions, build_report

    if fmt == "html" and output is None and not as_json and sys.stdout.isatty():
        raise click.UsageError("an HTML report needs -o FILE (or redirect standard output)")
    options = ReportOptions(
        judge=judge,
        runs=runs,
        steps=steps,
        human_runs=human_runs,
        human_steps=human_steps,
        human=human_policy,
        seed=seed,
        resamples=resamples,
    )
    store = open_store(store_ref)
    try:
        report = build_report(store, options)
    finally:
        store.close()
    text = render_json(report) + "\n" if as_json else RENDERERS[fmt](report)
    for note in report.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
