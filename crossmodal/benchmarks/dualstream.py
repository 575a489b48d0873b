"""Benchmark of the dual-stream FCN: whole-volume inference and training throughput, against MONAI in the same run.

    python -m crossmodal.benchmarks.dualstream --out bench/dualstream.json [--bundle Resources/Models/dualstream-v4-abdomen]

* inference: ``segment_abdominal`` on a 256 x 256 x 100 CT volume at 2 mm (a phantom body in air), all of
  it: preparation (resampling, body crop, normalisation), sliding-window inference, organs back on the
  input grid. Reference: MONAI's ``sliding_window_inference`` (same window, overlap and Gaussian
  blending) with a MONAI ``BasicUNet`` of similar size on the same prepared volume, network only.
  Each side runs in its own process, so that its peak RSS is its own. Targets: at most half the
  reference's time and 1.2 GB, post-processing included; <= 30 s on a 2-core CPU, <= 1 s on a GPU.
  ``mirrored``: the same with test-time mirroring (``segment --mirror``), its cost against the plain run.
* training: patches per second of one dual-stream step (batch of 48^3 patches, Dice loss, Adam)
  against the same step of the MONAI reference network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet

from crossmodal.abdominal import prepare_volume
from crossmodal.abdominal_inference import INFERENCE_WINDOW, segment_abdominal
from crossmodal.benchmarks import write_report
from crossmodal.bundles import MIRRORED_PATCHES, ModelCard, load_bundle
from crossmodal.devices import DEVICES, describe_device, pick_device
from crossmodal.events import Events, make_events
from crossmodal.geometry import Grid, resample
from crossmodal.labels import ABDOMEN
from crossmodal.nets.residual_fcn import DualStreamFCN, ResidualFCNConfig
from crossmodal.phantoms import abdominal_volume
from crossmodal.training.abdominal_training import DualStreamTrainer, PatchBatch
from crossmodal.training.losses import dice_loss

VOLUME_SIZE, VOLUME_SPACING = (256, 256, 100), 2.0
DEFAULT_CONFIG = ResidualFCNConfig(variant="V4", filters=(16, 32, 64, 128, 256), units_per_scale=1)
RATIO_TARGET = 0.5
"""Whole-volume inference, post-processing included, against MONAI's sliding window with BasicUNet."""
PEAK_RSS_TARGET_MB = 1228.8  # 1.2 GB
PIPELINE_SIDES = ("pipeline", "mirrored")


def benchmark_volume() -> sitk.Image:
    """A CT phantom body placed in air on a 256 x 256 x 100 grid of 2 mm voxels."""
    body, _ = abdominal_volume("CT", seed=0)
    centre = Grid.of(body).centre
    grid = Grid(VOLUME_SIZE, tuple(centre - (np.asarray(VOLUME_SIZE) - 1) / 2 * VOLUME_SPACING), (VOLUME_SPACING,) * 3, tuple(np.eye(3).ravel()))
    return sitk.Cast(resample(body, grid, default=-1000.0), sitk.sitkInt16)


def reference_network(classes: int) -> torch.nn.Module:
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=classes, features=(16, 32, 64, 128, 256, 16))


def parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def synchronised(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def inference_side(side: str, bundle: Path | None, device: torch.device, repeats: int) -> dict:
    image = benchmark_volume()
    if side in PIPELINE_SIDES:
        card, network = load_bundle(bundle, device) if bundle else (default_card(), DualStreamFCN(DEFAULT_CONFIG).to(device).eval())
        mirror = side == "mirrored"
        if mirror:  # timing only: the cost does not depend on how the weights were trained
            card = replace(card, training={**card.training, MIRRORED_PATCHES: True})
        run = lambda: segment_abdominal(network, card, image, "CT", device=device, mirror=mirror)  # noqa: E731
        size = parameters(network)
    else:
        prepared = prepare_volume(image, "CT")
        network = reference_network(len(ABDOMEN.labels) + 1).to(device).eval()
        volume = torch.from_numpy(prepared.image)[None, None].to(device)

        @torch.no_grad()
        def run():
            logits = sliding_window_inference(volume, (INFERENCE_WINDOW,) * 3, 1, network, overlap=0.5, mode="gaussian")
            return torch.softmax(logits, 1).cpu()

        size = parameters(network)
    times = []
    for _ in range(repeats + 1):  # the first run warms up (allocations, cuDNN autotuning)
        synchronised(device)
        start = time.perf_counter()
        run()
        synchronised(device)
        times.append(time.perf_counter() - start)
    result = {"seconds": min(times[1:]), "all_seconds": [round(t, 3) for t in times], "parameters": size,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def default_card() -> ModelCard:
    return ModelCard("benchmark", "0", "DualStreamFCN", DEFAULT_CONFIG.as_dict(), ["MR", "CT"], {"spacing_mm": 2.0}, ModelCard.label_entries(ABDOMEN))


def training(config: ResidualFCNConfig, device: torch.device, batch: int, patch: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, patch, patch, patch, generator=generator)
    labels = torch.randint(0, config.classes, (batch, patch, patch, patch), generator=generator)
    trainer = DualStreamTrainer(config, device)
    reference = reference_network(config.classes).to(device)
    optimiser = torch.optim.Adam(reference.parameters(), lr=1e-3)

    def reference_step():
        optimiser.zero_grad(set_to_none=True)
        dice_loss(reference(images.to(device)), labels.to(device)).backward()
        optimiser.step()

    def seconds(step) -> float:
        step()
        times = []
        for _ in range(repeats):
            synchronised(device)
            start = time.perf_counter()
            step()
            synchronised(device)
            times.append(time.perf_counter() - start)
        return min(times)

    ours = seconds(lambda: trainer.train_step(PatchBatch(1, images, labels), generator))
    theirs = seconds(reference_step)
    return {"batch": batch, "patch": patch, "seconds_per_step": ours, "patches_per_second": batch / ours,
            "reference": "MONAI BasicUNet features (16, 32, 64, 128, 256, 16)", "reference_seconds_per_step": theirs,
            "reference_patches_per_second": batch / theirs, "ratio_to_reference": ours / theirs}


def run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", __spec__.name, "--side", side, "--device", args.device, "--repeats", str(args.repeats)]
    if args.bundle:
        command += ["--bundle", str(args.bundle)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bundle", type=Path, help="dual-stream model bundle to time (default: an untrained V4 of the bundled width)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--side", choices=(*PIPELINE_SIDES, "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.side:
        print(json.dumps(inference_side(args.side, args.bundle, device, args.repeats)))
        return 0
    sides = {side: run_side(side, args) for side in ("reference", *PIPELINE_SIDES)}
    config = load_bundle(args.bundle)[1].config if args.bundle else DEFAULT_CONFIG
    target_seconds = 1.0 if device.type == "cuda" else 30.0
    report = {
        "benchmark": "dualstream",
        "bundle": str(args.bundle) if args.bundle else None,
        "volume": {"size": VOLUME_SIZE, "spacing_mm": VOLUME_SPACING},
        "device": describe_device(device),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "inference": {**sides["pipeline"], "reference": sides["reference"], "ratio_to_reference": sides["pipeline"]["seconds"] / sides["reference"]["seconds"],
                      "mirrored": {**sides["mirrored"], "ratio_to_plain": sides["mirrored"]["seconds"] / sides["pipeline"]["seconds"]}},
        "training": training(config, device, args.batch, args.patch, max(args.repeats, 3)),
    }
    inference = report["inference"]
    report["targets"] = {"inference_seconds": target_seconds, "inference_met": inference["seconds"] <= target_seconds,
                         "ratio_to_reference": RATIO_TARGET, "ratio_met": inference["ratio_to_reference"] <= RATIO_TARGET,
                         "peak_rss_mb": PEAK_RSS_TARGET_MB, "memory_met": inference["peak_rss_mb"] <= PEAK_RSS_TARGET_MB}
    write_report(report, args.out, events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
