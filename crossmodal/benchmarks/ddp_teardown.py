"""A loop of two-process ``torchrun`` trainings, counting the runs that do not end cleanly.

Rare teardown faults (one run in tens) cannot be shown by one test; this runs the real command many
times and reports every run that failed, with the process whose log shows the fault (each worker's
output and the launcher's are kept apart with ``--log-dir``/``--redirects``). Not part of ``make test``.

    python -m crossmodal.benchmarks.ddp_teardown --runs 100 --out bench/ddp_teardown.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossmodal.benchmarks import write_report
from crossmodal.events import Events, make_events
from crossmodal.phantoms import write_mscmrseg_phantoms

RECIPE = {"architecture": "MMSDNet", "id": "teardown", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 3, "batch_size": 4,
          "validate_every": 1000, "checkpoint_every": 2, "validation": [1]}
"""As small as a real training gets: the teardown, not the training, is under test."""
FAULTS = ("terminate called", "Aborted", "core dumped", "Segmentation fault", "Fatal Python error", "Traceback")
"""Signs of a fault in a log; with PYTHONFAULTHANDLER an abort also dumps where each thread of the process was."""


def one_run(folder: Path, config: Path, data: Path, index: int) -> dict:
    """One torchrun training; its exit code, time, and which logs (launcher, rank 0, rank 1) show a fault."""
    logs = folder / f"logs-{index}"
    out = folder / f"model-{index}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--log-dir", str(logs), "--redirects", "3",
               "-m", "crossmodal", "train", "--config", str(config), "--data", str(data), "--out", str(out), "--events", "jsonl"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}, timeout=600)
    seconds = time.perf_counter() - start
    faults = {}
    for name, text in [("launcher", done.stderr), *((str(p.relative_to(logs)), p.read_text(errors="replace")) for p in sorted(logs.rglob("*.log")))]:
        found = [f for f in FAULTS if f in text]
        if found:
            faults[name] = {"signs": found, "tail": text[-1500:]}
    return {"run": index, "returncode": done.returncode, "seconds": round(seconds, 1), "bundle": (out / "card.json").exists(), "faults": faults}


def failed(run: dict) -> bool:
    return run["returncode"] != 0 or bool(run["faults"]) or not run["bundle"]


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crossmodal-ddp-teardown-") as name:
        folder = Path(name)
        data = write_mscmrseg_phantoms(folder / "data", labelled=2)
        config = folder / "recipe.json"
        config.write_text(json.dumps(RECIPE))
        runs = []
        for index in range(args.runs):
            runs.append(one_run(folder, config, data, index))
            events.progress("runs", index + 1, args.runs)
            if failed(runs[-1]):
                events.warning(f"run {index + 1} did not end cleanly: exit {runs[-1]['returncode']}, faults in {sorted(runs[-1]['faults']) or 'no log'}")
    failures = [r for r in runs if failed(r)]
    write_report({"benchmark": "ddp_teardown", "runs": len(runs), "failed": len(failures), "failures": failures,
                  "median_seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2]}, args.out, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
