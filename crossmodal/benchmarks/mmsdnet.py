"""Benchmark of MMSDNet: inference on one paired 16-slice stack, and the cost of a training step.

    python -m crossmodal.benchmarks.mmsdnet --out bench/mmsdnet.json [--bundle Resources/Models/mmsdnet-mscmrseg]

* inference: the network on 16 paired slices (pair forward for the fused masks + LGE-only forward),
  best of several runs after a warm-up, at the bundle's configuration; also the whole
  ``segment_cardiac`` on a synthetic pair (pairing, normalisation, write-back onto both grids).
  Targets: <= 2 s on a 2-core CPU, <= 50 ms on a GPU.
* training: seconds per MMSDNet step (float32, and with the forward pass in bfloat16 autocast, the
  recipes' ``"bfloat16": true``, where the device computes bfloat16 natively: emulated it took 35x the
  float32 step and recipes ignore it there) against a plain MONAI U-Net with the same encoder widths
  trained on the same images (both modalities of the batch), in the same run. Target ratio <= 3 (float32).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet

from crossmodal.benchmarks import write_report
from crossmodal.bundles import ModelCard, load_bundle
from crossmodal.cardiac_inference import segment_cardiac
from crossmodal.devices import fast_bfloat16
from crossmodal.events import Events, make_events
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.mmsdnet import MMSDNet, MMSDNetConfig
from crossmodal.phantoms import cardiac_pair
from crossmodal.training.cardiac_data import SampleSet
from crossmodal.training.losses import dice_loss
from crossmodal.training.methods import MMSDNetMethod


def _best_seconds(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up (allocations, cuDNN autotuning)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def inference(network: MMSDNet, card: ModelCard, device: torch.device, repeats: int) -> dict:
    size = card.preprocessing["size"]
    cine, lge = torch.rand(16, 1, size, size, device=device), torch.rand(16, 1, size, size, device=device)
    network = network.to(device).eval()

    @torch.no_grad()
    def forward():
        network(cine, lge)
        network(None, lge)

    pair = cardiac_pair(seed=2)
    start = time.perf_counter()
    result = segment_cardiac(network, card, lge=pair.lge, cine=pair.cine, device=device)
    return {
        "network_seconds_16_slices": _best_seconds(forward, repeats, device),
        "segment_cardiac_seconds": time.perf_counter() - start,
        "segment_cardiac_slices": len(result.stack.slices),
    }


def training(config: MMSDNetConfig, size: int, batch: int, device: torch.device, repeats: int) -> dict:
    def samples(n: int) -> SampleSet:
        images = lambda: torch.rand(n, 1, size, size)  # noqa: E731
        masks = lambda: torch.randint(0, 3, (n, size, size))  # noqa: E731
        return SampleSet(images(), images(), masks(), masks(), torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))

    batch_samples = samples(batch)

    def step_seconds(bfloat16: bool) -> float:
        torch.manual_seed(0)
        method, generator = MMSDNetMethod(config, device, bfloat16=bfloat16), torch.Generator().manual_seed(0)
        return _best_seconds(lambda: method.train_step(batch_samples, generator), repeats, device)

    mmsdnet = step_seconds(False)
    mmsdnet_bf16 = step_seconds(True) if fast_bfloat16(device) else None

    widths = [config.filters * 2**level for level in range(config.depth + 1)]
    unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=config.classes, features=(*widths, config.filters)).to(device)
    optimiser = torch.optim.Adam(unet.parameters(), lr=1e-4)
    images = torch.cat([batch_samples.cine, batch_samples.lge]).to(device)
    masks = torch.cat([batch_samples.cine_mask, batch_samples.lge_mask]).to(device)

    def unet_step():
        optimiser.zero_grad(set_to_none=True)
        dice_loss(unet(images), masks).backward()
        optimiser.step()

    reference = _best_seconds(unet_step, repeats, device)
    return {
        "batch_pairs": batch, "size": size,
        "mmsdnet_seconds_per_step": mmsdnet,
        "bfloat16_native": mmsdnet_bf16 is not None,
        "mmsdnet_bfloat16_seconds_per_step": mmsdnet_bf16,
        "bfloat16_speedup": mmsdnet / mmsdnet_bf16 if mmsdnet_bf16 else None,
        "reference": f"MONAI BasicUNet features {widths}, same {2 * batch} images per step",
        "reference_seconds_per_step": reference,
        "ratio_to_reference": mmsdnet / reference,
        "mmsdnet_steps_per_second": 1 / mmsdnet,
    }


def default_card(filters: int, size: int, spacing: float) -> ModelCard:
    return ModelCard("benchmark", "0", "MMSDNet", MMSDNetConfig(filters=filters).as_dict(), ["cine", "LGE"],
                     {"size": size, "spacing_mm": spacing}, ModelCard.label_entries(CARDIAC_MYO_LV))


def main(argv: list[str] | None = None, events: Events | None = None) -> int:
    events = events or make_events(None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bundle", type=Path, help="model bundle whose configuration (and weights) to time")
    parser.add_argument("--filters", type=int, default=16, help="without --bundle")
    parser.add_argument("--size", type=int, default=96, help="without --bundle")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    if args.bundle:
        card, network = load_bundle(args.bundle)
    else:
        card = default_card(args.filters, args.size, 2.0)
        network = MMSDNet(MMSDNetConfig(**{**card.hyperparameters, "modalities": tuple(card.hyperparameters["modalities"])}))
    config = network.config
    report = {
        "benchmark": "mmsdnet",
        "bundle": str(args.bundle) if args.bundle else None,
        "config": config.as_dict(), "size": card.preprocessing["size"],
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "inference": inference(network, card, device, args.repeats),
        "training": training(config, card.preprocessing["size"], args.batch, device, args.repeats),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    target = 0.05 if device.type == "cuda" else 2.0
    report["targets"] = {
        "inference_seconds": target, "inference_met": report["inference"]["network_seconds_16_slices"] <= target,
        "training_ratio": 3.0, "training_met": report["training"]["ratio_to_reference"] <= 3.0,
    }
    write_report(report, args.out, events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
