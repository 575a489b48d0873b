"""What the reproductions share: the schedule choice and a resumable store of finished runs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from crossmodal.devices import DEVICES
from crossmodal.image_io import atomic_output


def add_schedule_arguments(parser: argparse.ArgumentParser, schedules: dict) -> None:
    """``--schedule``, ``--device`` and ``--steps``, as every reproduction takes them."""
    parser.add_argument("--schedule", choices=("auto", *schedules), default="auto", help="auto: full on a GPU, reduced on a CPU")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--steps", type=int, help="override the schedule's training steps")


def chosen_schedule(args: argparse.Namespace, schedules: dict, device: torch.device):
    """The schedule ``args`` ask for (``auto``: full on CUDA, reduced on the CPU), with ``--steps`` applied."""
    schedule = schedules["full" if device.type == "cuda" else "reduced"] if args.schedule == "auto" else schedules[args.schedule]
    return replace(schedule, steps=args.steps) if args.steps else schedule


class RunStore:
    """One JSON file per finished run under ``<folder>/runs``; a rerun skips what is there (resume)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "runs"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, *key: object) -> Path:
        return self.folder / ("-".join(map(str, key)) + ".json")

    def done(self, *key: object) -> bool:
        return self.path(*key).exists()

    def save(self, run: dict, *key: object) -> None:
        with atomic_output(self.path(*key)) as partial:
            partial.write_text(json.dumps(run))

    def all(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]


def write_outputs(folder: Path, name: str, report: dict, markdown: str) -> dict[str, str]:
    """``<name>.json`` and ``<name>.md`` (UTF-8, whatever the locale) beside the runs, each written atomically;
    their paths, as a ``result`` event's outputs."""
    with atomic_output(Path(folder) / f"{name}.json") as partial:
        partial.write_text(json.dumps(report, indent=1))
    with atomic_output(Path(folder) / f"{name}.md") as partial:
        partial.write_text(markdown, encoding="utf-8")
    return {"markdown": str(Path(folder) / f"{name}.md"), "json": str(Path(folder) / f"{name}.json")}
