"""The abdominal QA page: organs told apart by colour, views through each organ, volumes against adult ranges."""

from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from crossmodal.abdominal_inference import AbdominalResult
from crossmodal.bundles import ModelCard
from crossmodal.labels import ABDOMEN
from crossmodal.phantoms import abdominal_volume
from crossmodal.report import ORGAN_VIEW_PX, abdominal_report, label_colours, organ_views, volume_rows

CARD = ModelCard("v4", "0", "DualStreamFCN", {"streams": ["CT", "MR"]}, ["CT", "MR"], {"spacing_mm": 2.0}, ModelCard.label_entries(ABDOMEN))
NAMES = {label.value: label.name for label in ABDOMEN.labels}


def test_every_organ_has_a_colour_a_reader_tells_from_the_others():
    colours = np.array([label.color for label in ABDOMEN.labels])
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(colours), 1)]
    assert distances.min() > 0.4, distances  # Slicer's own kidney/spleen browns lie ~0.2 from its liver orange


def test_each_organ_gets_views_through_itself_with_its_contour_in_its_colour():
    image, labels = abdominal_volume("CT", seed=3)
    colours = label_colours(CARD)
    views = dict(organ_views(image, labels, colours, NAMES))
    assert list(views) == [f"{organ}: {view}" for organ in NAMES.values() for view in ("axial", "coronal", "sagittal")]
    for value, organ in NAMES.items():
        colour = (np.asarray(colours[value]) * 255).astype(np.uint8)
        for view in ("axial", "coronal", "sagittal"):
            assert (views[f"{organ}: {view}"] == colour).all(axis=-1).any(), f"{organ} not drawn in its own {view} view"


def test_volumes_stand_beside_the_adult_ranges_and_say_where_they_fall():
    rows = volume_rows({"liver": 4100.0, "right kidney": 150.0, "left kidney": 0.0, "spleen": 20.0})
    assert rows == [["liver", "4100", "700-3000", "above the range"], ["right kidney", "150", "60-350", "within"],
                    ["left kidney", "0", "60-350", "not found"], ["spleen", "20", "40-700", "below the range"]]


def test_the_page_has_a_legend_and_large_panels():
    image, labels = abdominal_volume("MR", seed=5)
    array = sitk.GetArrayViewFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000
    result = AbdominalResult(labels, "MR", "given", {name: float((array == v).sum()) * voxel_ml for v, name in NAMES.items()})
    page = abdominal_report(result, CARD, image)
    legend = re.search(r'<p class="legend">(.*?)</p>', page).group(1)
    assert all(name in legend for name in NAMES.values()) and len(set(re.findall(r"background:rgb\(([\d,]+)\)", legend))) == 4
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        import base64
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "panel.png"
            path.write_bytes(base64.b64decode(uri))
            assert min(sitk.ReadImage(str(path)).GetSize()) >= ORGAN_VIEW_PX // 2 and max(sitk.ReadImage(str(path)).GetSize()) >= ORGAN_VIEW_PX
    assert page.count("<figure>") == 12
