"""A command's outputs written into a folder as one set: all or nothing, one writer at a time.

Each output is first written in full into a hidden staging folder inside the output folder (same file
system, so moving it is a rename); only when every one is there are they moved into place, the summary
(e.g. ``segment.json``) last, and the outputs of the previous run that this one does not replace are
removed. So:

- a failure while writing (a full disk, a cancel) leaves no partial output and the earlier results untouched;
- two runs writing to the same folder at once take turns (an exclusive lock on ``.crossmodal.lock``), so
  the folder holds one run's complete set, never a mix;
- a run killed outright (SIGKILL, power loss) while writing leaves only its staging folder; killed in the
  few milliseconds of moving its outputs into place, it leaves a folder without a summary (the earlier
  summary is removed first, so no reader trusts a mix) and a journal of what it was moving
  (``.crossmodal-commit.json``). The next run removes both kinds of leftovers.

The summary lists the outputs (``outputs``: name -> path); readers trust a set through it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crossmodal.errors import InputError
from crossmodal.image_io import error_line

LOCK = ".crossmodal.lock"
STAGING_PREFIX = ".crossmodal-staging-"
JOURNAL = ".crossmodal-commit.json"


def output_key(name: str) -> str:
    """How a summary names an output file: its name without suffixes (``seg_fused_lge.nii.gz`` -> ``seg_fused_lge``)."""
    return Path(name).name.split(".")[0]


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold the folder's lock (waits while another run holds it); released when the block ends or the process dies."""
    with open(folder / LOCK, "a+b") as handle:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises: try again
                    break
                except OSError:
                    continue
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if os.name == "nt":
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class OutputSet:
    """Stage outputs with :meth:`write`, then :meth:`commit` the set with its summary; see the module docstring.

    Use as a context manager around the writing: leaving it without a commit (an error, a cancel) removes
    what was staged. An output that cannot be written (no space left, no permission) is an
    :class:`InputError` naming the folder and the output.
    """

    def __init__(self, folder: Path, summary_name: str) -> None:
        self.folder, self.summary_name = Path(folder), summary_name
        self.staged: dict[str, Path] = {}
        self.staging: Path | None = None

    def __enter__(self) -> OutputSet:
        self._lock = exclusive(self.folder)
        self._lock.__enter__()
        try:
            for stale in self.folder.glob(f"{STAGING_PREFIX}*"):  # left by a killed run: no run holds the lock now
                shutil.rmtree(stale, ignore_errors=True)
            self._finish_interrupted_commit()
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def write(self, name: str, writer: Callable[[Path], object]) -> Path:
        """Stage output ``name`` with ``writer(path)``; returns where it will be once committed."""
        self.staged[name] = self.staging / name
        try:
            writer(self.staged[name])
        except (OSError, RuntimeError) as error:  # SimpleITK's writers raise RuntimeError (e.g. on a full disk)
            raise InputError(self.folder, f"{name} could not be written ({error_line(error)}); nothing was written, earlier results "
                                          "are untouched") from None
        return self.folder / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda path: path.write_text(text, encoding="utf-8"))

    def commit(self, summary: dict) -> dict[str, str]:
        """Move every staged output into place, remove the previous run's outputs this one does not replace,
        and write ``summary`` with ``outputs`` (output key -> final path, see :func:`output_key`) last; returns those outputs."""
        previous = self._previous_outputs()
        outputs = {output_key(name): str(self.folder / name) for name in self.staged}
        self.write_text(self.summary_name, json.dumps({**summary, "outputs": outputs}, indent=1) + "\n")
        journal = self.staging / JOURNAL
        journal.write_text(json.dumps(sorted(self.staged)))
        os.replace(journal, self.folder / JOURNAL)
        (self.folder / self.summary_name).unlink(missing_ok=True)  # from here until the new one lands, no set is trusted
        for name, path in self.staged.items():
            if name != self.summary_name:
                os.replace(path, self.folder / name)
        for path in previous - {self.folder / name for name in self.staged}:
            path.unlink(missing_ok=True)
        os.replace(self.staged[self.summary_name], self.folder / self.summary_name)
        (self.folder / JOURNAL).unlink()
        return outputs

    def _finish_interrupted_commit(self) -> None:
        """After a run killed while moving its outputs: its summary landed (the set is complete, only the journal
        remains), or it did not, and the files it moved are a partial set no summary lists: removed."""
        journal = self.folder / JOURNAL
        if not journal.exists():
            return
        if not (self.folder / self.summary_name).exists():
            for name in json.loads(journal.read_text()):
                (self.folder / Path(name).name).unlink(missing_ok=True)
        journal.unlink()

    def _previous_outputs(self) -> set[Path]:
        """The outputs the folder's current summary lists, inside the folder (never anything else of the user's)."""
        try:
            listed = json.loads((self.folder / self.summary_name).read_text())["outputs"].values()
        except (OSError, ValueError, KeyError, AttributeError):
            return set()
        return {Path(p) for p in listed if Path(p).parent.resolve() == self.folder.resolve()}

    def __exit__(self, kind, error, trace) -> bool:
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.__exit__(None, None, None)
        return False
