"""The training loop shared by every method: seeded steps, periodic validation, best-checkpoint keeping."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class Trainable(Protocol):
    """What the loop needs of a method: a name, one optimisation step, and its weights."""

    name: str

    def train_step(self, batch: Any, generator: torch.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class Schedule:
    """How long a method trains and how often it is validated."""

    steps: int
    validate_every: int = 50


@dataclass
class TrainingResult:
    best_step: int
    best_score: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def train(
    method: Trainable,
    next_batch: Callable[[torch.Generator], object],
    schedule: Schedule,
    *,
    seed: int = 0,
    validate: Callable[[Trainable], float] | None = None,
    log: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """Train ``method`` for ``schedule.steps`` steps on the batches ``next_batch`` draws.

    With ``validate`` (higher is better), the network is scored every ``validate_every`` steps and
    at the end, and the best-scoring weights are restored before returning. A non-finite loss
    stops training with the step and the loss terms.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    best = TrainingResult(best_step=0, best_score=float("-inf"), seconds=0.0)
    best_state = None
    start = time.perf_counter()
    for step in range(1, schedule.steps + 1):
        losses = method.train_step(next_batch(generator), generator)
        if not all(map(math.isfinite, losses.values())):
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
