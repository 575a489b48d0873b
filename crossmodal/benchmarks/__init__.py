"""Benchmarks that write JSON and compare against a reference measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path

from crossmodal.events import Events


def write_report(report: dict, out: Path | None, events: Events) -> None:
    """Write the report as JSON to ``out`` (folders created) and say it as the command's ``result`` event
    (its fields, and ``outputs``: {"report": path})."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    events.result({"report": str(out)} if out else {}, **json.loads(json.dumps(report, default=float)))
