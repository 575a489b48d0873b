"""``reproduce`` and ``bench``: the papers' tables and the benchmarks, run by their own modules (arguments passed on)."""

from __future__ import annotations

import argparse
import importlib

from crossmodal.events import Events

REPRODUCTIONS = {"mmsdnet": "crossmodal.reproduce.mmsdnet", "dualstream": "crossmodal.reproduce.dualstream"}
BENCHMARKS = {"data_layer": "crossmodal.benchmarks.data_layer", "mmsdnet": "crossmodal.benchmarks.mmsdnet",
              "dualstream": "crossmodal.benchmarks.dualstream", "ddp_teardown": "crossmodal.benchmarks.ddp_teardown"}


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    for name, table, help_text in (("reproduce", REPRODUCTIONS, "reproduce a paper's tables (resumable; see `crossmodal reproduce NAME --help`)"),
                                   ("bench", BENCHMARKS, "run a benchmark and write JSON (see `crossmodal bench NAME --help`)")):
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.add_argument("which", choices=sorted(table))
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help="passed on to the runner")
        parser.set_defaults(run=lambda args, events, table=table: run_module(table[args.which], args.arguments, events))


def run_module(module: str, arguments: list[str], events: Events) -> int:
    """The runner speaks the command's events itself: progress of its runs, then its result (the files it wrote)."""
    return importlib.import_module(module).main(arguments, events)
