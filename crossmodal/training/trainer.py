"""The training loop shared by every method: seeded batches, periodic validation, best-checkpoint keeping."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from crossmodal.training.cardiac_data import SampleSet
from crossmodal.training.methods import Method


@dataclass(frozen=True)
class Schedule:
    """How long and how a method trains."""

    steps: int
    batch_size: int = 8
    validate_every: int = 50


@dataclass
class TrainingResult:
    best_step: int
    best_score: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def train(
    method: Method,
    samples: SampleSet,
    schedule: Schedule,
    *,
    seed: int = 0,
    validate: Callable[[Method], float] | None = None,
    log: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """Train ``method`` for ``schedule.steps`` steps on random batches of the samples it can use.

    With ``validate`` (higher is better), the network is scored every ``validate_every`` steps and
    at the end, and the best-scoring weights are restored before returning.
    """
    usable = torch.nonzero(method.usable(samples)).flatten()
    if len(usable) == 0:
        raise ValueError(f"{method.name}: no training sample has the masks this method learns from")
    labelled = usable[samples.has_lge_mask[usable]]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    best = TrainingResult(best_step=0, best_score=float("-inf"), seconds=0.0)
    best_state = None
    start = time.perf_counter()
    for step in range(1, schedule.steps + 1):
        pick = draw_batch(usable, labelled, schedule.batch_size, generator)
        losses = method.train_step(samples.batch(pick), generator)
        if not all(torch.isfinite(torch.tensor(list(losses.values())))):
            raise FloatingPointError(f"{method.name}: loss became non-finite at step {step}: {losses}")
        event = {"step": step, **losses}
        if validate is not None and (step % schedule.validate_every == 0 or step == schedule.steps):
            event["validation"] = score = validate(method)
            if score > best.best_score:
                best.best_step, best.best_score = step, score
                best_state = copy.deepcopy(method.state_dict())
        best.history.append(event)
        if log is not None:
            log(event)
    if best_state is not None:
        method.load_state_dict(best_state)
    best.seconds = time.perf_counter() - start
    return best


def draw_batch(usable: torch.Tensor, labelled: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random sample indices, half of them LGE-labelled whenever some but not all samples are.

    With few labelled patients (25 % is one or two of ~25) a uniform draw would put an LGE mask in
    a batch only now and then; balancing gives every step some LGE supervision, for every method alike.
    """
    if 0 < len(labelled) < len(usable):
        half = size // 2
        return torch.cat([labelled[torch.randint(len(labelled), (half,), generator=generator)],
                          usable[torch.randint(len(usable), (size - half,), generator=generator)]])
    return usable[torch.randint(len(usable), (size,), generator=generator)]
