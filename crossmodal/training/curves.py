"""How a training went, as nnU-Net's ``progress.png``: the loss terms per step (with a running mean) and
the validation score, the kept step marked; and the data behind them as CSV. ``train`` writes both into
the bundle, the QA report shows the picture beside the model card's validation scores. A training that
alternates streams (the dual-stream FCN: one modality per step) has each loss drawn per stream: their
levels differ, and one curve over both would zigzag between them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossmodal.image_io import atomic_output

CURVES_PNG, CURVES_CSV = "progress.png", "progress.csv"
NOT_LOSSES = ("step", "validation", "stream", "learning_rate_factor")
"""Event keys that are not loss terms (the learning-rate factor goes to the CSV, not onto the loss axes)."""
SMOOTHING_STEPS = 50
"""Window of the running mean drawn over each (noisy) loss term."""


def history_columns(history: list[dict]) -> list[str]:
    """"step", every loss term in order of first appearance, then the stream, the learning-rate factor and "validation" where there were."""
    keys = list(dict.fromkeys(key for event in history for key in event))
    terms = [k for k in keys if k not in NOT_LOSSES]
    return ["step", *terms, *[k for k in ("stream", "learning_rate_factor", "validation") if k in keys]]


def write_curves(history: list[dict], folder: Path, title: str, best_step: int | None = None, stream_names: Sequence[str] = ()) -> dict[str, Path]:
    """``progress.csv`` always, ``progress.png`` where matplotlib is installed (inside Slicer it may not be)."""
    columns = history_columns(history)
    with atomic_output(folder / CURVES_CSV) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    written = {"curves_csv": folder / CURVES_CSV}
    try:
        import matplotlib
    except ImportError:
        return written
    matplotlib.use("Agg")
    with atomic_output(folder / CURVES_PNG) as partial:
        draw_curves(history, columns, title, best_step, stream_names).savefig(partial, format="png", dpi=100)
    written["curves_png"] = folder / CURVES_PNG
    return written


def draw_curves(history: list[dict], columns: list[str], title: str, best_step: int | None, stream_names: Sequence[str] = ()):
    """The figure: losses on a log scale (faint per step, a running mean on top; per stream where steps
    alternate streams, named by ``stream_names``), validation below it."""
    from matplotlib.figure import Figure

    validated = [e for e in history if "validation" in e]
    figure = Figure(figsize=(10, 6.5 if validated else 4), layout="constrained")
    axes = figure.subplots(2 if validated else 1, 1, sharex=True, squeeze=False)[:, 0]
    steps = np.array([e["step"] for e in history])
    streams = sorted({int(e["stream"]) for e in history if "stream" in e}) or [None]
    for term, stream in ((t, s) for t in columns if t not in NOT_LOSSES for s in streams):
        values = np.array([e.get(term, np.nan) if stream is None or e.get("stream") == stream else np.nan for e in history], float)
        drawn = np.isfinite(values)  # the other stream's steps are gaps, which would break every segment
        line = axes[0].plot(steps[drawn], values[drawn], alpha=0.25, linewidth=0.8)[0]
        window = min(SMOOTHING_STEPS, max(1, len(values) // 10))
        label = term if stream is None else f"{term}, {stream_names[stream] if stream < len(stream_names) else f'stream {stream}'}"
        axes[0].plot(steps, _running_mean(values, window), color=line.get_color(), linewidth=1.8, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the plot, never over a curve
    axes[0].set_title(title)
    if validated:
        axes[1].plot([e["step"] for e in validated], [e["validation"] for e in validated], "o-", color="black", markersize=3, label="validation")
        if best_step is not None:
            axes[1].axvline(best_step, color="tab:green", linestyle="--", label=f"kept: step {best_step}")
        axes[1].set_ylabel("validation (mean Dice)")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values at each step (the first steps average what there is)."""
    finite = np.where(np.isfinite(values), values, 0.0)
    counts = np.cumsum(np.isfinite(values))
    sums = np.cumsum(finite)
    lagged_sums = np.concatenate([np.zeros(window), sums[:-window]]) if len(values) > window else np.zeros_like(sums)
    lagged_counts = np.concatenate([np.zeros(window), counts[:-window]]) if len(values) > window else np.zeros_like(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums - lagged_sums) / (counts - lagged_counts)
