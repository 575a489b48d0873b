"""What the radiologist sees: MultiModalSeg's results laid out by its logic, drawn by Slicer's own slice logic
and displayable managers offscreen (:mod:`slice_views`), checked on the pixels.

``CROSSMODAL_SLICE_VIEWS=<folder>`` keeps the PNGs (``make slicer-views`` writes them for the README).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

slicer = pytest.importorskip("slicer", reason="the Slicer core libraries (pip install -e '.[dev]') are not installed")

from slice_views import SliceViews  # noqa: E402
from slicer_python import modules_on_newest_release  # noqa: E402

from crossmodal.labels import CARDIAC_MYO_LV  # noqa: E402
from crossmodal.phantoms import cardiac_pair  # noqa: E402
from crossmodal_slicer import conversion  # noqa: E402

MultiModalSegLib, _ = modules_on_newest_release()


def ras_of(image: sitk.Image, kji) -> np.ndarray:
    return (conversion.ijk_to_ras(image) @ [*map(float, kji[::-1]), 1.0])[:3]


def test_the_fused_myocardium_the_aligned_cine_and_an_anatomy_channel_show_where_they_are(tmp_path):
    out = Path(os.environ.get("CROSSMODAL_SLICE_VIEWS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    scene = slicer.vtkMRMLScene()
    views = SliceViews(scene)
    pair = cardiac_pair(seed=7)
    lge = conversion.image_to_volume_node(pair.lge, scene, "LGE")
    cine = conversion.image_to_volume_node(pair.cine, scene, "cine")
    logic = MultiModalSegLib.MultiModalSegLogic()
    run = logic.segment(lge, cine, device="cpu")  # the bundled model
    assert run.job.wait(timeout=300) == 0, run.job.failure()
    outputs = logic.load_results(run, scene)
    logic.discard(run)

    fused = sitk.GetArrayFromImage(conversion.segmentation_node_to_labelmap(outputs.main_segmentation, CARDIAC_MYO_LV, pair.lge))
    myocardium = CARDIAC_MYO_LV.labels[0]
    inside = ndimage.binary_erosion(fused == myocardium.value, iterations=1)
    k = int(np.argmax(inside.sum(axis=(1, 2))))
    voxels = np.argwhere(inside[k])
    point = ras_of(pair.lge, [k, *voxels[len(voxels) // 2]])
    far = ndimage.distance_transform_edt(fused == 0, sampling=pair.lge.GetSpacing()[::-1])
    far_point = ras_of(pair.lge, [k, *np.argwhere(far[k] > 25)[0]])

    def render(name, **layout):
        logic.show_results(outputs, scene, **layout)
        return views.render(name, out / f"{name}-{'-'.join(f'{k}={v}' for k, v in layout.items())}.png").astype(float)

    views.fit_through(point)
    for name in ("Red", "Yellow", "Green"):
        shown = render(name, aligned_cine=True, anatomy_channel=1)
        row, column, distance = views.pixel(name, point)
        assert abs(distance) < 0.5
        outputs.main_segmentation.GetDisplayNode().SetVisibility(False)
        bare = views.render(name).astype(float)
        colour = np.array(myocardium.color) * 255
        change = shown[row, column] - bare[row, column]
        assert np.dot(change, colour - bare[row, column]) > 0.25 * np.dot(colour - bare[row, column], colour - bare[row, column]), name
        r, c, _ = views.pixel(name, far_point)
        if 0 <= r < 400 and 0 <= c < 400:
            assert np.allclose(shown[r, c], bare[r, c], atol=1), name  # no segment colour far from the myocardium
    without_cine = render("Red", aligned_cine=False, anatomy_channel=1)
    with_cine = render("Red", aligned_cine=True, anatomy_channel=1)
    assert (np.abs(with_cine - without_cine).max(axis=2) > 10).mean() > 0.05  # the cine is blended over the LGE
    no_channel = render("Red", aligned_cine=False, anatomy_channel=None)
    changed = [c for c in range(1, 9) if (np.abs(render("Red", aligned_cine=False, anatomy_channel=c) - no_channel).max(axis=2) > 10).any()]
    assert changed, "no anatomy channel shows as the label layer"
    render("Red", aligned_cine=True, anatomy_channel=changed[0])
