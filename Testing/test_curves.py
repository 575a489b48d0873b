"""Training curves: the picture and the data behind it, as nnU-Net's progress.png."""

from __future__ import annotations

import csv

import numpy as np
import SimpleITK as sitk

from crossmodal.training.curves import CURVES_CSV, CURVES_PNG, draw_curves, history_columns, write_curves


def history(steps: int = 300) -> list[dict]:
    rng = np.random.default_rng(0)
    events = []
    for step in range(1, steps + 1):
        event = {"step": step, "dice": 0.9 * np.exp(-step / 80) + 0.05 + 0.03 * rng.random(), "kl": 0.02 + 0.01 * rng.random(), "stream": step % 2}
        if step % 50 == 0:
            event["validation"] = 0.85 - 0.6 * np.exp(-step / 90) - (0.02 if step == 300 else 0)
        events.append(event)
    return events


def test_the_curves_keep_every_step_and_draw_losses_and_validation(tmp_path):
    events = history()
    written = write_curves(events, tmp_path, "tiny (MMSDNet, 300 steps)", best_step=250)
    assert written == {"curves_csv": tmp_path / CURVES_CSV, "curves_png": tmp_path / CURVES_PNG}
    rows = list(csv.DictReader(open(tmp_path / CURVES_CSV, encoding="utf-8")))
    assert history_columns(events) == ["step", "dice", "kl", "stream", "validation"]
    assert len(rows) == 300 and rows[49]["validation"] and not rows[48]["validation"]
    assert float(rows[-1]["dice"]) == events[-1]["dice"]
    picture = sitk.ReadImage(str(tmp_path / CURVES_PNG))
    assert picture.GetSize() == (1000, 650)
    pixels = sitk.GetArrayFromImage(picture)[..., :3].astype(int)
    assert (np.abs(pixels - 255).sum(axis=-1) > 100).mean() > 0.02  # something drawn on the white page


def test_a_training_without_validation_draws_the_losses_alone(tmp_path):
    write_curves([{k: v for k, v in e.items() if k != "validation"} for e in history(40)], tmp_path, "t")
    assert sitk.ReadImage(str(tmp_path / CURVES_PNG)).GetSize() == (1000, 400)


def test_a_training_that_alternates_streams_has_each_loss_drawn_per_stream():
    """The dual-stream FCN trains MR on one step and CT on the next: one curve over both zigzags between two levels."""
    events = history(60)
    figure = draw_curves(events, history_columns(events), "t", None, stream_names=("MR", "CT"))
    assert figure.axes[0].get_legend_handles_labels()[1] == ["dice, MR", "dice, CT", "kl, MR", "kl, CT"]
    faint = figure.axes[0].get_lines()[0]  # each step's value, drawn as one unbroken line per stream
    assert len(faint.get_xdata()) == 30 and np.isfinite(faint.get_ydata()).all()
    alone = [{k: v for k, v in e.items() if k != "stream"} for e in events]
    assert draw_curves(alone, history_columns(alone), "t", None).axes[0].get_legend_handles_labels()[1] == ["dice", "kl"]
