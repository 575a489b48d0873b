"""Benchmarks that write JSON and compare against a reference measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, out: Path | None) -> None:
    """Print the report as JSON and, with ``out``, write it there too (folders created)."""
    text = json.dumps(report, indent=2, default=float)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
