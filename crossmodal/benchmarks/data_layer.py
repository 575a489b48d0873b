"""Benchmark of the data layer: read, pair and normalise every MS-CMRSeg cine + LGE pair.

Each side runs in its own child process so that its peak RSS is its own. The reference is the
least any pairing must do: read the same files with SimpleITK and resample the cine (image and
mask) once onto the LGE grid. Machines here are noisy, so the figure to watch is the ratio.

    python -m crossmodal.benchmarks.data_layer --data ../shared/data/mscmrseg --out bench/data_layer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from crossmodal.benchmarks import write_report
from crossmodal.datasets import discover_mscmrseg
from crossmodal.events import Events, make_events
from crossmodal.intensity import normalise_mr
from crossmodal.pairing import PairingConfig, pair_volumes


def run_pipeline(folder: Path, config: PairingConfig) -> dict:
    """The engine's path: checked reads, physical-space pairing with crop, per-slice MR normalisation."""
    timings = {"read": 0.0, "pair": 0.0, "normalise": 0.0}
    samples = 0
    for case in (c for c in discover_mscmrseg(folder) if c.is_pair):
        start = time.perf_counter()
        lge, cine = case.read("DE"), case.read("C0")
        lge_mask = case.read_mask("DE") if case.has_mask("DE") else None
        cine_mask = case.read_mask("C0") if case.has_mask("C0") else None
        timings["read"] += time.perf_counter() - start
        start = time.perf_counter()
        stack = pair_volumes(lge, cine, config, reference_mask=lge_mask, other_mask=cine_mask)
        timings["pair"] += time.perf_counter() - start
        start = time.perf_counter()
        for name, images in stack.images.items():
            stack.images[name] = normalise_mr(images, per_slice=True, mask=images != 0)
        timings["normalise"] += time.perf_counter() - start
        samples += len(stack.slices)
    return {"seconds": timings, "total_seconds": sum(timings.values()), "samples": samples}


def run_reference(folder: Path) -> dict:
    """Plain SimpleITK: read the same files, resample cine and its mask onto the LGE grid."""
    start = time.perf_counter()
    samples = 0
    for case in (c for c in discover_mscmrseg(folder) if c.is_pair):
        lge = sitk.ReadImage(str(case.images["DE"]))
        for path, interpolator in [(case.images["C0"], sitk.sitkLinear), (case.masks.get("C0"), sitk.sitkNearestNeighbor)]:
            if path is not None:
                sitk.Resample(sitk.ReadImage(str(path)), lge, sitk.Transform(), interpolator, 0)
        if "DE" in case.masks:
            sitk.ReadImage(str(case.masks["DE"]))
        samples += lge.GetDepth()
    return {"total_seconds": time.perf_counter() - start, "samples": samples}


def _child(side: str, folder: Path, config: PairingConfig) -> dict:
    result = run_pipeline(folder, config) if side == "pipeline" else run_reference(folder)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", __spec__.name, "--data", str(args.data), "--side", side,
               "--spacing", str(args.spacing), "--size", str(args.size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="MS-CMRSeg folder")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--spacing", type=float, default=PairingConfig.spacing_mm)
    parser.add_argument("--size", type=int, default=PairingConfig.size)
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the fastest counts")
    parser.add_argument("--side", choices=["pipeline", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = PairingConfig(spacing_mm=args.spacing, size=args.size)
    if args.side:
        print(json.dumps(_child(args.side, args.data, config)))
        return 0

    runs = {side: [_run_side(side, args) for _ in range(args.repeats)] for side in ("reference", "pipeline")}
    best = {side: min(r, key=lambda x: x["total_seconds"]) for side, r in runs.items()}
    report = {
        "benchmark": "data_layer",
        "data": str(args.data.resolve()),
        "pairs": sum(c.is_pair for c in discover_mscmrseg(args.data)),
        "config": {"spacing_mm": config.spacing_mm, "size": config.size},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine()},
        "pipeline": best["pipeline"],
        "reference": best["reference"],
        "ratio_to_reference": best["pipeline"]["total_seconds"] / best["reference"]["total_seconds"],
        "all_runs_seconds": {side: [round(r["total_seconds"], 3) for r in rs] for side, rs in runs.items()},
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["pipeline"]),
        "samples_per_second": best["pipeline"]["samples"] / best["pipeline"]["total_seconds"],
    }
    write_report(report, args.out, events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
