"""Progress, metrics, warnings, results and errors of a command, for a person or for a program.

``crossmodal ... --events jsonl`` writes one JSON object per line on stdout, flushed as it goes; this
is what the Slicer modules parse. Schema (version :data:`SCHEMA_VERSION`), every object has
``schema``, ``type`` and ``time`` (seconds since the command started), then by type:

============ ==================================================================================
``start``    ``command``: the subcommand; ``pid``
``progress`` ``stage`` (e.g. "training", "inference"), ``done``, ``total``; optional ``eta_s``
``metrics``  ``stage``, ``step``, ``values``: {name: number} (losses, validation Dice)
``warning``  ``message`` (every warning of a command is also kept in :attr:`Events.warnings`)
``result``   ``outputs``: {name: path}, plus command-specific fields (e.g. ``dice``)
``error``    ``message``, ``exit_code``
============ ==================================================================================

Without ``--events`` a person gets a progress bar with an ETA on stderr, the losses at each validation,
warnings as text, and the result as indented JSON on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any, TextIO

SCHEMA_VERSION = 1


class Events:
    """Base: keeps the clock and an ETA per stage; subclasses decide how each event is shown."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.started = time.monotonic()
        self._stage_start: dict[str, tuple[float, int]] = {}
        self.warnings: list[str] = []
        """Every warning so far, for the summary a command writes (``segment.json``) and its QA report."""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self, stage: str, done: int, total: int) -> float | None:
        """Seconds left in ``stage``, from its rate since the first progress event of the stage."""
        first_time, first_done = self._stage_start.setdefault(stage, (time.monotonic(), done))
        if done <= first_done or total <= done:
            return 0.0 if total <= done else None
        return (time.monotonic() - first_time) / (done - first_done) * (total - done)

    def start(self, command: str) -> None:
        self.emit("start", command=command, pid=os.getpid())

    def progress(self, stage: str, done: int, total: int) -> None:
        eta = self.eta(stage, done, total)
        self.emit("progress", stage=stage, done=done, total=total, **({"eta_s": round(eta, 1)} if eta is not None else {}))

    def metrics(self, stage: str, step: int, values: dict[str, float]) -> None:
        self.emit("metrics", stage=stage, step=step, values={k: round(float(v), 5) for k, v in values.items()})

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.emit("warning", message=message)

    def result(self, outputs: dict[str, str], **fields: Any) -> None:
        self.emit("result", outputs=outputs, **fields)

    def error(self, message: str, exit_code: int) -> None:
        self.emit("error", message=message, exit_code=exit_code)

    def emit(self, kind: str, **fields: Any) -> None:
        raise NotImplementedError

    def capture_warnings(self) -> None:
        """Route Python warnings (e.g. "looks like CT, but was given as MR") through :meth:`warning`."""
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: self.warning(str(message))


class JsonlEvents(Events):
    """One JSON object per line, flushed at once (a parent process reads them as they come)."""

    def emit(self, kind: str, **fields: Any) -> None:
        record = {"schema": SCHEMA_VERSION, "type": kind, "time": round(self.elapsed(), 3), **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


class TerminalEvents(Events):
    """A progress bar with ETA on stderr (redrawn in place on a terminal), text warnings, a JSON result on stdout."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, status: TextIO | None = None) -> None:
        super().__init__(stream)
        self.status = status if status is not None else sys.stderr
        self._bar_open = False

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self._bar(fields["stage"], fields["done"], fields["total"], fields.get("eta_s"))
            return
        if kind == "metrics" and "validation" not in fields["values"]:
            return  # a person reads the losses at each validation; programs get every metrics event
        self._close_bar()
        if kind == "metrics":
            values = "  ".join(f"{k} {v:.4g}" for k, v in fields["values"].items())
            self.status.write(f"{fields['stage']} step {fields['step']}: {values}\n")
        elif kind == "warning":
            self.status.write(f"warning: {fields['message']}\n")
        elif kind == "error":
            self.status.write(f"error: {fields['message']}\n")
        elif kind == "result":
            self.stream.write(json.dumps(fields, indent=1, default=str) + "\n")
            self.stream.flush()
        self.status.flush()

    def _bar(self, stage: str, done: int, total: int, eta: float | None) -> None:
        filled = int(self.WIDTH * done / max(total, 1))
        left = f"ETA {format_seconds(eta)}" if eta is not None else "ETA --"
        line = f"{stage:<12} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}  {format_seconds(self.elapsed())} elapsed, {left}"
        if self.status.isatty():
            self.status.write("\r" + line)
            self._bar_open = done < total
            if not self._bar_open:
                self.status.write("\n")
        elif done == total or done % max(1, total // 20) == 0:  # a log file gets every 5 %, not every step
            self.status.write(line + "\n")
        self.status.flush()

    def _close_bar(self) -> None:
        if self._bar_open:
            self.status.write("\n")
            self._bar_open = False


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class SilentEvents(Events):
    """For the other processes of a distributed run: rank 0 speaks for all."""

    def emit(self, kind: str, **fields: Any) -> None:
        pass


def make_events(kind: str | None) -> Events:
    """``"jsonl"`` for programs, anything else (``None``) for a person at a terminal; silent on torchrun ranks other than 0."""
    if int(os.environ.get("RANK", "0")) > 0:
        return SilentEvents()
    return JsonlEvents() if kind == "jsonl" else TerminalEvents()
