"""``models``: the bundled and user-trained models, each verified against the sha256 in its card."""

from __future__ import annotations

import argparse
import sys

from crossmodal.catalog import bundled_models_folder, list_models, user_models_folder
from crossmodal.errors import InputError
from crossmodal.events import Events, JsonlEvents


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("models", parents=[common], help="list the bundled and user models and verify their hashes",
                                 description=f"Bundled models: {bundled_models_folder()}. User models: {user_models_folder()} "
                                 "($CROSSMODAL_MODELS). Exits with 2 if any model fails its check.")
    parser.add_argument("--no-verify", action="store_true", help="skip hashing the weights (faster)")
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace, events: Events) -> int:
    entries = list_models(verify=not args.no_verify)
    if not isinstance(events, JsonlEvents):
        for e in entries:
            what = f"{e.card.network_name} ({', '.join(e.card.modalities)})" if e.card else "?"
            sys.stderr.write(f"{e.id:<28} {e.source:<8} {what:<30} {e.status}\n    {e.path}\n")
        if not entries:
            sys.stderr.write(f"no models in {bundled_models_folder()} or {user_models_folder()}\n")
    events.result({e.id: str(e.path) for e in entries}, models=[e.summary() for e in entries])
    broken = [e for e in entries if e.status != "ok"]
    if broken:
        raise InputError(broken[0].path, f"model {broken[0].id!r} failed its check: {broken[0].status}")
    return 0
