"""Reports over the store: ``ecap report`` and the API its sections are written in.

The layers, each readable alone:

- :mod:`ecap.report.query`: the store as reports read it, plain rows (:class:`VerdictFact`,
  :class:`ScoreFact`, step runs and their metrics), never the store's tables: a plugin's
  section keeps working when a table changes;
- :mod:`ecap.report.stats`: bootstrap intervals and rank correlation (numpy, scipy);
- :mod:`ecap.report.table`: the one table model (:class:`Table` of :class:`Row`) sections return;
- :mod:`ecap.report.render`: Markdown, CSV, JSON, terminal and HTML (with matplotlib charts);
- :mod:`ecap.report.sections`: the :class:`ReportSection` contract, the :class:`ReportContext`
  sections read, and :func:`build_report`;
- :mod:`ecap.report.command`: the ``ecap report`` command.

ecap's own sections are the human defect grades (:mod:`ecap.report.human`) and the filters
(:mod:`ecap.report.filters`: kept and dropped rows, keep rate per rule, score histograms); the
judges plugin adds judge scores, the ablation and judge-human agreement, the trl plugin training
curves, the shapes plugin failure-mode rates; any plugin adds more with the
``register_report_sections(register)`` hook. The statistics need the ``report`` extra
(``pip install 'editcaption[report]'``: numpy, scipy, matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .query import UNKNOWN, Rubric, ScoreFact, VerdictFact
    from .sections import (
        ReportContext,
        ReportOptions,
        ReportSection,
        build_report,
        split_label,
    )
    from .stats import Stat
    from .table import Chart, Column, Report, Row, Table

#: Where each public name lives. They are imported on first use (PEP 562), so that importing
#: :mod:`ecap.report.command` to build the ``ecap`` command line loads no statistics.
_HOMES = {
    "UNKNOWN": "query",
    "Rubric": "query",
    "ScoreFact": "query",
    "VerdictFact": "query",
    "ReportContext": "sections",
    "ReportOptions": "sections",
    "ReportSection": "sections",
    "build_report": "sections",
    "split_label": "sections",
    "Stat": "stats",
    "Chart": "table",
    "Column": "table",
    "Report": "table",
    "Row": "table",
    "Table": "table",
}


__getattr__ = lazy_attributes(__name__, _HOMES)


__all__ = [
    "UNKNOWN",
    "Chart",
    "Column",
    "Report",
    "ReportContext",
    "ReportOptions",
    "ReportSection",
    "Row",
    "Rubric",
    "ScoreFact",
    "Stat",
    "Table",
    "VerdictFact",
    "build_report",
    "split_label",
]
