"""Events for programs (JSON lines) and for people (a progress bar, the losses at each validation)."""

from __future__ import annotations

import io
import json

from crossmodal.events import SCHEMA_VERSION, JsonlEvents, TerminalEvents, format_seconds


def test_jsonl_events_follow_the_schema_and_are_flushed_one_per_line():
    stream = io.StringIO()
    events = JsonlEvents(stream)
    events.start("train")
    for done in range(3):
        events.progress("training", done, 2)
    events.metrics("training", 2, {"loss": 0.5, "validation": 0.75})
    events.warning("careful")
    events.result({"bundle": "/x"}, best_step=2)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["type"] for r in records] == ["start", "progress", "progress", "progress", "metrics", "warning", "result"]
    assert all(r["schema"] == SCHEMA_VERSION and r["time"] >= 0 for r in records)
    assert "eta_s" not in records[1] and records[3]["eta_s"] == 0.0  # no rate yet at the first event; done at the last
    assert records[4]["values"] == {"loss": 0.5, "validation": 0.75} and records[-1]["outputs"] == {"bundle": "/x"}


def test_a_person_sees_a_bar_with_an_eta_and_only_the_validation_metrics():
    out, status = io.StringIO(), io.StringIO()
    events = TerminalEvents(out, status)
    for done in range(0, 21):
        events.progress("training", done, 20)
        events.metrics("training", done, {"loss": 1.0 / (done + 1)})
    events.metrics("training", 20, {"loss": 0.05, "validation": 0.8})
    events.result({"bundle": "/x"})
    lines = status.getvalue().splitlines()
    assert lines[-1].startswith("training step 20: loss 0.05  validation 0.8")
    assert sum("loss" in line for line in lines) == 1
    assert "[##############################] 20/20" in status.getvalue() and "ETA" in status.getvalue()
    assert json.loads(out.getvalue()) == {"outputs": {"bundle": "/x"}}
    assert format_seconds(3725) == "1:02:05" and format_seconds(65) == "1:05"
