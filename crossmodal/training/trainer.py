"""The training loop shared by every method: seeded steps, periodic validation, best-checkpoint keeping,
and checkpoints that let a stopped or killed run resume.

A checkpoint holds everything the loop needs to go on: the step, every part of the method (network,
optimisers, discriminator), the random generators, the best weights so far and the history. It is
written atomically (a temporary file renamed over the old one), so a run killed at any moment leaves
either the previous checkpoint or the new one, never a broken file; it is read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from crossmodal.errors import InputError
from crossmodal.image_io import atomic_output
from crossmodal.training.distributed import bare


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainable(Protocol):
    """What the loop needs of a method: a name, one optimisation step, its weights and its resumable parts."""

    name: str

    def train_step(self, batch: Any, generator: torch.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def parts(self) -> dict[str, Stateful]:
        """Everything whose state a resumed run needs: networks and optimisers, by name."""
        ...


class NetworkTraining:
    """One network and its Adam on a device, with what the loop needs to save and resume them.

    ``self.network`` may be replaced by its DDP replica while training is distributed (see
    :mod:`crossmodal.training.distributed`); weights and states are always those of the network itself.
    """

    name: str

    def __init__(self, network: nn.Module, learning_rate: float, device: torch.device, adam_eps: float = 1e-8) -> None:
        self.device = device
        self.network = network.to(device)
        self.optimiser = torch.optim.Adam(self.network.parameters(), lr=learning_rate, eps=adam_eps)

    @staticmethod
    def _apply(loss: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    @property
    def module(self) -> nn.Module:
        """The network itself (``self.network`` may be its DDP replica while training distributed)."""
        return bare(self.network)

    @property
    def delivered(self) -> nn.Module:
        """The weights validation scores, the best checkpoint keeps and a bundle stores: the network itself, unless a
        method delivers another (a moving average of it)."""
        return self.module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.delivered.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.delivered.load_state_dict(state)

    def parts(self) -> dict[str, Stateful]:
        return {"network": self.module, "optimiser": self.optimiser}


@dataclass(frozen=True)
class Schedule:
    """How long a method trains, how often it is validated, and how its learning rate moves."""

    steps: int
    validate_every: int = 50
    warmup_steps: int = 0
    """Linear warm-up from 1/warmup_steps of each optimiser's learning rate (calms the first steps of Adam and the critic)."""
    final_learning_rate: float = 1.0
    """After warm-up, cosine decay to this fraction of each optimiser's learning rate; 1: constant."""

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of each optimiser's own learning rate at ``step`` (1-based); a function of the step
        alone, so that a resumed run goes on with the rate it would have had."""
        if step <= self.warmup_steps:
            return step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.final_learning_rate + (1 - self.final_learning_rate) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often (in steps) the loop saves a resumable checkpoint."""

    path: Path
    every: int = 100
    write: bool = True
    """False on the other processes of a distributed run: they read the checkpoint to resume, rank 0 writes it."""


@dataclass
class TrainingResult:
    best_step: int
    best_score: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    last_step: int = 0


class TrainingStopped(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after writing a checkpoint it can resume from."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"training stopped at step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def train(
    method: Trainable,
    next_batch: Callable[[torch.Generator], object],
    schedule: Schedule,
    *,
    seed: int = 0,
    validate: Callable[[Trainable], float] | None = None,
    log: Callable[[dict], None] | None = None,
    checkpointing: Checkpointing | None = None,
    resume: bool = False,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainingResult:
    """Train ``method`` for ``schedule.steps`` steps on the batches ``next_batch`` draws.

    With ``validate`` (higher is better), the network is scored every ``validate_every`` steps and
    at the end, and the best-scoring weights are restored before returning. A non-finite loss
    stops training with the step and the loss terms. With ``checkpointing``, a checkpoint is written
    every ``every`` steps; ``resume`` continues from it. ``should_stop(step)`` is asked after every
    step: when it says yes, a checkpoint is written and :class:`TrainingStopped` raised.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    best = TrainingResult(best_step=0, best_score=float("-inf"), seconds=0.0)
    best_state = None
    first = 1
    if resume:
        if checkpointing is None or not checkpointing.path.is_file():
            raise InputError(checkpointing.path if checkpointing else "--resume", "no checkpoint to resume from")
        state = load_checkpoint(checkpointing.path)
        restore(method, generator, state, seed)
        best.best_step, best.best_score, best.history = state["best_step"], state["best_score"], state["history"]
        best_state, first = state["best_state"], state["step"] + 1
    groups = [g for part in method.parts().values() if isinstance(part, torch.optim.Optimizer) for g in part.param_groups]
    for group in groups:
        group.setdefault("initial_lr", group["lr"])  # kept in the optimiser's state, so a resumed run has it too
    start = time.perf_counter()

    def save(step: int) -> None:
        if checkpointing is not None and checkpointing.write:
            save_checkpoint(checkpointing.path, snapshot(method, generator, seed, step, best, best_state))

    for step in range(first, schedule.steps + 1):
        factor = schedule.learning_rate_factor(step)
        for group in groups:
            group["lr"] = group["initial_lr"] * factor
        losses = method.train_step(next_batch(generator), generator)
        if not all(map(math.isfinite, losses.values())):
            raise FloatingPointError(f"{method.name}: loss became non-finite at step {step}: {losses}")
        event = {"step": step, **losses, "learning_rate_factor": factor}
        if validate is not None and (step % schedule.validate_every == 0 or step == schedule.steps):
            event["validation"] = score = validate(method)
            if score > best.best_score:
                best.best_step, best.best_score = step, score
                best_state = copy.deepcopy(method.state_dict())
        best.history.append(event)
        best.last_step = step
        if log is not None:
            log(event)
        if should_stop is not None and should_stop(step):
            save(step)
            raise TrainingStopped(step, checkpointing.path if checkpointing else Path("(none)"))
        if checkpointing is not None and step % checkpointing.every == 0 and step < schedule.steps:
            save(step)
    if best_state is not None:
        method.load_state_dict(best_state)
    best.seconds = time.perf_counter() - start
    return best


def snapshot(method: Trainable, generator: torch.Generator, seed: int, step: int, best: TrainingResult, best_state: dict | None) -> dict:
    return {
        "step": step,
        "seed": seed,
        "parts": {name: part.state_dict() for name, part in method.parts().items()},
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "best_step": best.best_step,
        "best_score": best.best_score,
        "best_state": best_state,
        "history": best.history,
    }


def restore(method: Trainable, generator: torch.Generator, state: dict, seed: int) -> None:
    """Load every part; the random streams continue where they were, or, for another seed (another
    process of a distributed run), start afresh from (seed, step) so that processes keep drawing differently."""
    parts = method.parts()
    if set(parts) != set(state["parts"]):
        raise InputError("checkpoint", f"holds parts {sorted(state['parts'])}, but {method.name} has {sorted(parts)}")
    for name, part in parts.items():
        part.load_state_dict(state["parts"][name])
    if state["seed"] == seed:
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    else:
        generator.manual_seed(seed * 1_000_003 + state["step"])
        torch.manual_seed(seed * 1_000_003 + state["step"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (the old checkpoint stays until the new one is complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as partial:
        torch.save(state, partial)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(path, f"is not a readable checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})") from None
