"""``train``: a recipe (JSON config) and dataset folders -> a model bundle, with checkpoints, cancel and resume.

The output folder holds, while training runs, ``recipe.json`` (the resolved recipe) and
``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps and on SIGINT/SIGTERM); when
training ends, the bundle (``model.pt`` + ``card.json``, and how training went: ``progress.png`` and
``progress.csv``) is written and the checkpoint removed.
``--resume`` continues from the checkpoint with the same recipe. Under ``torchrun`` every process
trains one replica with DistributedDataParallel; only the first writes checkpoints and the bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from crossmodal.bundles import CARD, RECIPE, save_bundle
from crossmodal.catalog import recipe_of, user_models_folder
from crossmodal.devices import DEVICES, pick_device
from crossmodal.errors import InputError
from crossmodal.events import Events
from crossmodal.image_io import atomic_output, writable_folder
from crossmodal.jobs import STOP_SIGNALS
from crossmodal.training import distributed
from crossmodal.training.curves import write_curves
from crossmodal.training.recipes import read_recipe
from crossmodal.training.trainer import Checkpointing, train

CHECKPOINT = "checkpoint.pt"
METRIC_EVENTS = 200
"""About this many loss events per run (plus every validation), however long it is."""


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("train", parents=[common], help="train MMSDNet or a dual-stream FCN into a model bundle",
                                 description=__doc__.split("\n\n")[0] + ". Every bundle keeps the recipe it was trained with (recipe.json).")
    parser.add_argument("--config", required=True, type=Path,
                        help="JSON recipe (architecture, hyper-parameters, data), or a model (id or bundle folder) whose recipe to train again")
    parser.add_argument("--data", help="MS-CMRSeg folder (MMSDNet); overrides the config's data.mscmrseg")
    parser.add_argument("--ct", help="nnU-Net-layout CT dataset (dual-stream); overrides data.CT")
    parser.add_argument("--mr", help="nnU-Net-layout MR dataset (dual-stream); overrides data.MR")
    parser.add_argument("--out", type=Path, help="bundle folder (default: <user models folder>/<id>)")
    parser.add_argument("--id", help="model id (overrides the config's)")
    parser.add_argument("--steps", type=int, help="training steps (overrides the config's)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished training in --out")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.set_defaults(run=run_train)


class StopRequest:
    """Set by SIGINT/SIGTERM; training asks it after every step, then checkpoints and stops."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, step: int) -> bool:
        return distributed.any_rank(self.requested)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        def request(signum: int, frame: object) -> None:
            self.requested = True

        previous = {s: signal.signal(s, request) for s in (signal.SIGINT, *STOP_SIGNALS)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def prepare_output(out: Path, recipe: dict, resume: bool) -> None:
    """Refuse to overwrite a finished bundle or an unfinished run; on resume, insist on the same recipe."""
    saved = out / RECIPE
    for leftover in out.glob("partial-*"):  # an atomic write cut short by SIGKILL: never a file anyone reads
        leftover.unlink()
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise InputError(out, "has no unfinished training to resume (no checkpoint.pt)")
        before = json.loads(saved.read_text()) if saved.is_file() else {}
        changed = sorted(k for k in set(before) | set(recipe) if before.get(k) != recipe.get(k) and k != "steps")
        if changed:
            raise InputError(out, f"was started with a different recipe (changed: {', '.join(changed)}); resume with the same config")
        return
    if (out / CARD).exists():
        raise InputError(out, "already holds a model bundle; choose another --out (nothing was overwritten)")
    if (out / CHECKPOINT).exists():
        raise InputError(out, "holds an unfinished training; continue it with --resume, or choose another --out")
    writable_folder(out)
    with atomic_output(saved) as partial:
        partial.write_text(json.dumps(recipe, indent=1) + "\n")


def run_train(args: argparse.Namespace, events: Events) -> int:
    data = {k: v for k, v in (("mscmrseg", args.data), ("CT", args.ct), ("MR", args.mr)) if v}
    config = args.config if args.config.is_file() or args.config.suffix == ".json" else recipe_of(args.config)
    recipe = read_recipe(config, data, id=args.id, steps=args.steps)
    out = args.out or user_models_folder() / recipe.id
    with distributed.session(pick_device(args.device)) as (rank, device):
        if rank == 0:
            prepare_output(out, {"architecture": recipe.architecture, **asdict(recipe)}, args.resume)
        distributed.barrier()
        job = recipe.prepare(device, events.progress if rank == 0 else lambda *a: None)
        distributed.wrap(job.trainable)
        every = max(1, job.schedule.steps // METRIC_EVENTS)

        def log(event: dict) -> None:
            if rank != 0:
                return
            events.progress("training", event["step"], job.schedule.steps)
            if event["step"] % every == 0 or "validation" in event:
                events.metrics("training", event["step"], {k: v for k, v in event.items() if k != "step"})

        stop = StopRequest()
        with stop.installed():
            result = train(job.trainable, job.batches, job.schedule, seed=recipe.seed + rank,
                           validate=job.validate if rank == 0 else None, log=log,
                           checkpointing=Checkpointing(out / CHECKPOINT, recipe.checkpoint_every, write=rank == 0),
                           resume=args.resume, should_stop=stop)
        distributed.unwrap(job.trainable)
        if rank != 0:
            return 0
        card = save_bundle(out, job.network, job.card(result))
        curves = write_curves(result.history, out, f"{card.id} ({card.architecture}, {result.last_step} steps)", result.best_step,
                             card.modalities)
        (out / CHECKPOINT).unlink(missing_ok=True)
    outputs = {"bundle": str(out), **{name: str(path) for name, path in curves.items()}}
    events.result(outputs, id=card.id, best_step=result.best_step, seconds=round(result.seconds, 1), validation=card.validation)
    return 0
