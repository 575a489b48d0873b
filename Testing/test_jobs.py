"""Training as a background job: cancel (SIGINT/SIGTERM), SIGKILL, resume, and data-parallel runs, with real child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from crossmodal.cli import EXIT_CANCELLED
from crossmodal.training.trainer import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"architecture": "MMSDNet", "id": "job", "size": 32, "spacing_mm": 6.0, "filters": 4, "steps": 500,
          "batch_size": 4, "validate_every": 1000, "checkpoint_every": 4, "validation": [1]}
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def start_training(config: Path, data: Path, out: Path, *extra: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [sys.executable, *(launcher or ("-m",)), "crossmodal", "train", "--config", str(config), "--data", str(data),
               "--out", str(out), "--events", "jsonl", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENVIRONMENT)


def read_until_step(process: subprocess.Popen, step: int) -> list[dict]:
    """Events up to the first training progress at ``step`` (the child keeps running)."""
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "progress" and events[-1]["stage"] == "training" and events[-1]["done"] >= step:
            return events
    raise AssertionError(f"training ended before step {step}: {process.stderr.read()}")


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(RECIPE))
    return path


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_cancelled_training_checkpoints_exits_3_and_resumes(config, phantom_mscmrseg, tmp_path, stop):
    out = tmp_path / "model"
    child = start_training(config, phantom_mscmrseg, out)
    read_until_step(child, 6)
    child.send_signal(stop)
    rest, _ = child.communicate(timeout=120)
    last = json.loads(rest.splitlines()[-1])
    assert child.returncode == EXIT_CANCELLED and last["type"] == "error" and "--resume" in last["message"]
    stopped_at = load_checkpoint(out / "checkpoint.pt")["step"]
    assert stopped_at >= 6 and not (out / "card.json").exists()
    resumed = start_training(config, phantom_mscmrseg, out, "--resume", "--steps", str(stopped_at + 3))
    output, errors = resumed.communicate(timeout=300)
    events = [json.loads(line) for line in output.splitlines()]
    assert resumed.returncode == 0, errors
    steps = [e["done"] for e in events if e["type"] == "progress" and e["stage"] == "training"]
    assert steps == list(range(stopped_at + 1, stopped_at + 4))  # on from the checkpoint, not from the start
    assert events[-1]["type"] == "result" and (out / "card.json").exists() and not (out / "checkpoint.pt").exists()


def test_a_killed_training_leaves_a_readable_checkpoint_and_no_output(config, phantom_mscmrseg, tmp_path):
    out = tmp_path / "model"
    child = start_training(config, phantom_mscmrseg, out)
    read_until_step(child, 11)
    child.kill()
    child.wait(timeout=60)
    state = load_checkpoint(out / "checkpoint.pt")  # whole: atomic replace, never half-written
    assert 8 <= state["step"] <= 12 and set(state["parts"]) == {"network", "optimiser", "discriminator", "discriminator_optimiser"}
    assert not (out / "card.json").exists() and not (out / "model.pt").exists()
    resumed = start_training(config, phantom_mscmrseg, out, "--resume", "--steps", str(state["step"] + 1))
    _, errors = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errors
    assert (out / "card.json").exists() and not list(out.glob("partial-*"))


def test_resume_refuses_a_changed_recipe(config, phantom_mscmrseg, tmp_path):
    out = tmp_path / "model"
    child = start_training(config, phantom_mscmrseg, out)
    read_until_step(child, 5)
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=120)
    config.write_text(json.dumps({**RECIPE, "filters": 8}))
    resumed = start_training(config, phantom_mscmrseg, out, "--resume")
    output, errors = resumed.communicate(timeout=120)
    error = json.loads(output.splitlines()[-1])
    assert resumed.returncode == error["exit_code"] == 2 and "different recipe (changed: filters)" in error["message"]
    assert "Traceback" not in errors


def test_torchrun_trains_with_two_processes_into_one_bundle(config, phantom_mscmrseg, tmp_path):
    config.write_text(json.dumps({**RECIPE, "steps": 3}))
    out = tmp_path / "model"
    child = start_training(config, phantom_mscmrseg, out, launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"))
    output, errors = child.communicate(timeout=300)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert child.returncode == 0, errors
    assert [e["type"] for e in events].count("result") == 1 and [e["type"] for e in events].count("start") == 1  # rank 0 speaks for all
    assert json.loads((out / "card.json").read_text())["training"]["steps"] == 3


def _replica(rank: int, world: int, address: str, results: dict) -> None:
    from crossmodal.nets.residual_fcn import ResidualFCNConfig
    from crossmodal.training import distributed
    from crossmodal.training.abdominal_training import DualStreamTrainer, PatchBatch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=address, RANK=str(rank), WORLD_SIZE=str(world))
    with distributed.session(torch.device("cpu")) as (r, device):
        torch.manual_seed(0)  # same initial weights; DDP would broadcast rank 0's anyway
        trainer = DualStreamTrainer(ResidualFCNConfig(variant="V4", filters=(2, 4, 4, 8, 8), units_per_scale=1), device)
        distributed.wrap(trainer)
        generator = torch.Generator().manual_seed(100 + r)  # each process sees other patches
        for step in range(3):
            images = torch.randn(1, 1, 16, 16, 16, generator=generator)
            labels = torch.randint(0, 5, (1, 16, 16, 16), generator=generator)
            trainer.train_step(PatchBatch(step % 2, images, labels), generator)
        distributed.unwrap(trainer)
        results[r] = torch.cat([p.detach().flatten() for p in trainer.network.parameters()])


def test_data_parallel_replicas_stay_identical_while_seeing_different_data():
    results = mp.Manager().dict()
    port = str(29500 + os.getpid() % 1000)
    mp.spawn(_replica, args=(2, port, results), nprocs=2, join=True)
    assert torch.equal(results[0], results[1])  # gradients were averaged across the two processes
    assert not torch.equal(results[0], results[0] * 0)


def test_the_teardown_loop_reports_its_runs_as_events(tmp_path, capsys):
    """The benchmark that counts unclean two-process runs (a long loop outside make test), here for one run."""
    from crossmodal.cli import main

    assert main(["bench", "--events", "jsonl", "ddp_teardown", "--runs", "1", "--out", str(tmp_path / "teardown.json")]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["type"] == "result" and events[-1]["outputs"] == {"report": str(tmp_path / "teardown.json")}
    assert events[-1]["runs"] == 1 and events[-1]["failed"] == 0, events[-1]["failures"]
    assert json.loads((tmp_path / "teardown.json").read_text())["runs"] == 1
