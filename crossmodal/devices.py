"""The compute device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import platform

import torch

from crossmodal.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(choice: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA device is available here (use --device auto or cpu)")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"
