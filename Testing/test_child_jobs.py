"""Running `crossmodal` as a child process and reading its events, as the Slicer modules do."""

from __future__ import annotations

import json
import time

from crossmodal.cli import EXIT_CANCELLED, EXIT_INPUT_ERROR
from crossmodal.jobs import ChildJob


def wait_for(job: ChildJob, predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(predicate(e) for e in job.poll()) or not job.running:
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the child")


def test_events_arrive_while_the_child_runs_and_cancel_stops_it(phantom_mscmrseg, tmp_path):
    recipe = {"architecture": "MMSDNet", "id": "c", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 1000,
              "batch_size": 4, "validate_every": 1000, "checkpoint_every": 5, "validation": [1]}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    job = ChildJob(["train", "--config", str(tmp_path / "r.json"), "--data", str(phantom_mscmrseg), "--out", str(tmp_path / "m")],
                   env={"OMP_NUM_THREADS": "1"})
    wait_for(job, lambda e: e.get("type") == "progress" and e.get("stage") == "training" and e["done"] >= 3)
    assert job.running and job.events[0]["type"] == "start"
    job.cancel()
    assert job.wait(timeout=120) == EXIT_CANCELLED
    assert "cancelled at step" in job.failure() and (tmp_path / "m" / "checkpoint.pt").exists()


def test_a_failed_child_explains_itself_in_one_line(tmp_path):
    job = ChildJob(["segment", "--lge", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "out")])
    assert job.wait(timeout=120) == EXIT_INPUT_ERROR
    assert job.failure().endswith("missing.nii.gz: no such file or folder")
    assert job.last("result") is None and job.last("error")["exit_code"] == EXIT_INPUT_ERROR


def test_the_childs_messages_name_what_the_user_chose(tmp_path):
    """A panel gives the child temporary exports; its failure speaks of the volume the user selected."""
    export = tmp_path / "crossmodal-run" / "LGE.nrrd"
    job = ChildJob(["segment", "--lge", str(export), "--out", str(tmp_path / "out")], names={str(export): "patient 7 LGE"})
    assert job.wait(timeout=120) == EXIT_INPUT_ERROR
    assert job.failure() == "patient 7 LGE: no such file or folder" and all(str(export) not in line for line in job.stderr)
