"""A ``crossmodal`` command in a child process, with its JSON-lines events collected as they arrive.

This is how the Slicer modules run long work: the GUI polls :meth:`ChildJob.poll` from a timer and
stays responsive; Cancel sends SIGTERM (the child checkpoints a training and exits with code 3) and,
if the child has not gone after a grace period, kills it. Nothing here needs Qt or Slicer, so it is
tested with real child processes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

STDERR_LINES = 200
"""How much of the child's stderr is kept for the log (the tail of it)."""
STOP_SIGNALS = (signal.SIGTERM, *((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()))
"""What :meth:`ChildJob.cancel` sends and the child treats as "stop": SIGTERM, and on Windows the Ctrl-Break
of the child's own process group (SIGBREAK), which is all a console child can be sent there."""


class ChildJob:
    """``python -m crossmodal <arguments> --events jsonl``, started at once."""

    def __init__(self, arguments: Sequence[str], *, python: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, names: dict[str, str] | None = None) -> None:
        """``names`` maps files the child is given (e.g. a panel's temporary exports) to what the user calls them:
        every message, warning and stderr line of the child is kept in the user's terms."""
        self.names = names or {}
        self.command = [python or sys.executable, "-m", "crossmodal", *arguments, "--events", "jsonl"]
        package_root = str(Path(__file__).resolve().parents[1])
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, environment.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                        env=environment, cwd=cwd,
                                        creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if os.name == "nt" else 0)
        self.events: list[dict] = []
        self.cancelled = False
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._queue: queue.Queue[dict] = queue.Queue()
        self._readers = [threading.Thread(target=self._read_events, daemon=True), threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a stray print in the child: keep it for the log, do not fail
                event = {"type": "log", "message": line}
            if isinstance(event.get("message"), str):
                event["message"] = self.in_user_terms(event["message"])
            if isinstance(event.get("warnings"), list):
                event["warnings"] = [self.in_user_terms(str(w)) for w in event["warnings"]]
            self._queue.put(event)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(self.in_user_terms(line.rstrip("\n")))

    def in_user_terms(self, text: str) -> str:
        """``text`` naming what the user chose instead of the files the child was given (see ``names``)."""
        for path, name in self.names.items():
            text = text.replace(path, name)
        return text

    def poll(self) -> list[dict]:
        """Events that arrived since the last call (never blocks)."""
        new = []
        while True:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.events += new
        return new

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child and for all of its output; returns its exit code."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        self.poll()
        return code

    def cancel(self, grace_seconds: float = 30.0) -> None:
        """Ask the child to stop (SIGTERM); kill it if it is still there after ``grace_seconds``."""
        if not self.running:
            return
        self.cancelled = True
        self.process.send_signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
        timer = threading.Timer(grace_seconds, lambda: self.running and self.process.kill())
        timer.daemon = True
        timer.start()

    def last(self, kind: str) -> dict | None:
        """The latest event of ``kind`` ("result", "error", "progress", ...) seen so far."""
        self.poll()
        return next((e for e in reversed(self.events) if e.get("type") == kind), None)

    def failure(self) -> str | None:
        """Why a finished job failed, in one line for the user (None if it succeeded or is running)."""
        code = self.returncode
        if code in (None, 0):
            return None
        error = self.last("error")
        if error is not None:
            return error["message"]
        if self.cancelled:  # stopped before the child could say so (e.g. while it was still starting)
            return "cancelled; no output was written"
        tail = [line for line in self.stderr if line.strip()]
        return f"the process ended with exit code {code}" + (f": {tail[-1]}" if tail else "")
