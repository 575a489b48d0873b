"""``crossmodal``: segment, train, evaluate, reproduce, report, models, bench.

Every subcommand takes ``--events jsonl`` (machine-readable progress on stdout, see
:mod:`crossmodal.events`) and exits with one of the codes below. Bad input is reported in one line
naming the input and the problem, with nothing written or overwritten; only an internal error prints
a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Callable

from crossmodal import __version__
from crossmodal.errors import InputError
from crossmodal.events import Events, make_events
from crossmodal.jobs import STOP_SIGNALS
from crossmodal.training.trainer import TrainingStopped

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_INPUT_ERROR = 2
"""Bad input or usage (also argparse's own code)."""
EXIT_CANCELLED = 3
"""Stopped by SIGINT/SIGTERM; a training wrote its checkpoint first (continue it with ``--resume``)."""
EXIT_SOME_FAILED = 4
"""``segment --batch`` ran every case, but some failed (named in warnings and in its summary)."""

EPILOG = """exit codes: 0 done, 1 internal error, 2 bad input or usage, 3 cancelled (SIGINT/SIGTERM; training checkpointed),
  4 segment --batch: some cases failed (the others are done; see its summary)

examples:
  crossmodal segment --lge patient1_DE.nii.gz --cine patient1_C0.nii.gz --out results/patient1 --report
  crossmodal segment --image ct.nii.gz --out results/ct1
  crossmodal segment --batch /data/MS-CMRSeg --out results/all --report
  crossmodal train --config mmsdnet-mscmrseg --id my-mmsdnet --data /data/MS-CMRSeg
  crossmodal evaluate --predictions results/preds --references /data/labels
  crossmodal models"""


class Cancelled(Exception):
    """SIGTERM outside training (SIGINT raises KeyboardInterrupt)."""


def _terminate(signum: int, frame: object) -> None:
    raise Cancelled()


def build_parser() -> argparse.ArgumentParser:
    from crossmodal.cli import evaluate, models, passthrough, segment, train

    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"crossmodal {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--events", choices=("jsonl",), help="one JSON object per line on stdout (for programs) instead of a progress bar")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (segment, train, evaluate, passthrough, models):
        module.add_commands(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    events = make_events(args.events)
    events.capture_warnings()
    events.start(args.command)
    run: Callable[[argparse.Namespace, Events], int] = args.run
    previous = {s: signal.signal(s, _terminate) for s in STOP_SIGNALS}
    try:
        return run(args, events)
    except InputError as error:
        events.error(str(error), EXIT_INPUT_ERROR)
        return EXIT_INPUT_ERROR
    except TrainingStopped as stopped:
        events.error(f"cancelled at step {stopped.step}; the checkpoint {stopped.checkpoint} resumes it (--resume)", EXIT_CANCELLED)
        return EXIT_CANCELLED
    except (KeyboardInterrupt, Cancelled):
        events.error("cancelled; no output was written", EXIT_CANCELLED)
        return EXIT_CANCELLED
    except Exception as error:  # noqa: BLE001 - the last resort: say what happened, keep the traceback for a bug report
        traceback.print_exc(file=sys.stderr)
        events.error(f"internal error: {type(error).__name__}: {error}", EXIT_INTERNAL_ERROR)
        return EXIT_INTERNAL_ERROR
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
