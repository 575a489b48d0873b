"""Data-parallel training on PyTorch's own engine: ``torchrun --nproc_per_node=N -m crossmodal train ...``.

Each process holds one replica (one GPU each with NCCL, or CPU processes with gloo), draws its own
batches (seed + rank), and DistributedDataParallel averages the gradients, so N processes train with
N times the batch. Outside torchrun (no ``WORLD_SIZE`` > 1) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

REPLICATED = ("network", "discriminator")
"""Attributes of a trainable method that are modules to replicate (those it has)."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[tuple[int, torch.device]]:
    """(rank, this process's device); joins the process group when started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), device
        dist.barrier()  # leave together: a process that tears gloo down while a peer still talks to it aborts
    finally:
        release_replicas()
        dist.destroy_process_group()


_wrapped: list[object] = []
"""Methods whose modules :func:`wrap` replaced by DDP replicas in this session."""


def release_replicas() -> None:
    """Drop every DDP replica of the session and collect it now, before the process group is destroyed.

    A replica's reducer holds the process group and its last pending work. Dropped only by reference
    (unwrap), a replica lives on in reference cycles until a later garbage collection, possibly during
    interpreter shutdown, when freeing gloo's work and threads can abort the process ("terminate called
    without an active exception"). Also on an error, whose traceback would otherwise keep it alive.
    """
    for method in _wrapped:
        unwrap(method)
    _wrapped.clear()
    gc.collect()


def barrier() -> None:
    if active():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every process if it is true on any (so that all of them stop at the same step)."""
    if not active():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def wrap(method: object) -> None:
    """Replace the method's modules by DDP replicas (parameters are broadcast from rank 0 here)."""
    if not active():
        return
    _wrapped.append(method)
    for name in REPLICATED:
        module = getattr(method, name, None)
        if isinstance(module, nn.Module) and not isinstance(module, DistributedDataParallel):
            # Per-stream layers sit out every other step, so unused parameters are expected;
            # BatchNorm statistics stay per process (rank 0's are saved).
            setattr(method, name, DistributedDataParallel(module, find_unused_parameters=True, broadcast_buffers=False))


def unwrap(method: object) -> None:
    for name in REPLICATED:
        module = getattr(method, name, None)
        if isinstance(module, DistributedDataParallel):
            setattr(method, name, module.module)


def bare(module: nn.Module) -> nn.Module:
    """The module itself, whether or not it is wrapped for DDP."""
    return module.module if isinstance(module, DistributedDataParallel) else module
