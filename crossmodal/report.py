"""Visual QA reports: one self-contained HTML page (PNG panels embedded) per segmentation.

Cardiac (a cine + LGE pair), per LGE slice: the cine, the LGE, the LGE with the fused mask, the LGE with
the LGE-only mask, the cine warped by the TPS over the LGE, and the TPS deformation grid; the 8 anatomy
factors as a montage; Dice and HD95 against a reference when one is given; and a flag on slices where
the LGE-only and the fused masks disagree strongly (a cue to look). Abdominal (CT or MR): axial,
coronal and sagittal views through each organ with every organ's contour in its own colour and a
legend, and the organ volumes beside the adult ranges they are checked against.

Every overlay is made by resampling the written-back masks (on the input's own grid) onto the panel's
plane in physical space, so a report that looks right also shows that the geometry is right.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.abdominal_inference import AbdominalResult
from crossmodal.bundles import ModelCard
from crossmodal.cardiac_inference import CardiacResult, displacement_transform
from crossmodal.geometry import Grid, resample
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV, LabelSet
from crossmodal.qa import MaskScores, disagreeing_slices, reference_rows
from crossmodal.scoring import foreground_dice, score_images
from crossmodal.training.curves import CURVES_PNG

GRID_STEP_PX = 8

Colours = dict[int, tuple[float, float, float]]


# --- drawing ------------------------------------------------------------------------------------


def grey(array: np.ndarray) -> np.ndarray:
    """A 2-D image as RGB uint8, windowed to its 1st..99th percentile."""
    low, high = np.percentile(array, (1, 99)) if array.size else (0.0, 1.0)
    scaled = np.clip((array - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def contours(rgb: np.ndarray, labels: np.ndarray, colours: Colours) -> np.ndarray:
    """Draw each label's 1-pixel outline in its colour."""
    out = rgb.copy()
    for value, colour in colours.items():
        mask = (labels == value).astype(np.uint8)
        if mask.any():
            edge = sitk.GetArrayFromImage(sitk.BinaryContour(sitk.GetImageFromArray(mask), fullyConnected=True)) > 0
            out[edge] = (np.asarray(colour) * 255).astype(np.uint8)
    return out


def fusion(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two aligned greyscale images as one: ``first`` magenta, ``second`` green; where they agree, grey."""
    a, b = grey(first)[..., 0], grey(second)[..., 0]
    return np.stack([a, b, a], axis=-1)


def enlarge(rgb: np.ndarray, minimum: int = 192) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor, so small panels stay legible."""
    factor = max(1, int(np.ceil(minimum / max(rgb.shape[:2]))))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def png_uri(rgb: np.ndarray, minimum: int = 192) -> str:
    """A data: URI of the RGB array, enlarged to ``minimum`` pixels at least, as PNG (SimpleITK writes it; no imaging library needed)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(enlarge(rgb, minimum)), isVector=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "panel.png"
        sitk.WriteImage(image, str(path))
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def figure(rgb: np.ndarray, caption: str, minimum: int = 192) -> str:
    return f'<figure><img src="{png_uri(rgb, minimum)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def model_section(card: ModelCard, folder: Path | None) -> str:
    """The model card's own figures, so a reader judges the result against what the model reached on its
    validation cases: what it was trained on and for how long, its validation Dice, its training curves."""
    training = card.training
    trained_on = training.get("data", "")
    facts = [f"{html.escape(card.id)} {html.escape(card.version)} ({html.escape(card.network_name)})",
             f"trained on {html.escape(json.dumps(trained_on) if isinstance(trained_on, dict) else str(trained_on))}"]
    for member in training.get("members", [training]):
        if "steps" in member:
            seed = f"seed {member['recipe']['seed']}: " if "members" in training and "recipe" in member else ""
            facts.append(f"{seed}{member['steps']} steps, the weights of step {member.get('best_step', '?')} kept, "
                         f"{member.get('seconds', '?')} s on {member.get('device', '?')}")
    scores = next((v for k, v in card.validation.items() if k.startswith("dice") and isinstance(v, dict)), {})
    flat = []
    for case, value in scores.items():
        nested = all(isinstance(v, dict) for v in value.values())
        flat += [(f"{case} {name}", cells) for name, cells in value.items()] if nested else [(case, value)]
    columns = list(dict.fromkeys(k for _, cells in flat for k in cells))
    rows = [[case, *(cells.get(c, "") for c in columns)] for case, cells in flat]
    parts = ["<h2>The model</h2>", f"<p>{'; '.join(facts)}.</p>"]
    if rows:
        parts += ["<h3>Its validation Dice (cases it never trained on)</h3>", table(["case", *columns], rows)]
    curves = None if folder is None else Path(folder) / CURVES_PNG
    if curves is not None and curves.is_file():
        parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(curves.read_bytes()).decode()}" '
                     'style="image-rendering:auto;max-width:100%"><figcaption>How its training went (progress.png of the bundle)</figcaption></figure>')
    return "".join(parts)


def page(title: str, sections: Sequence[str], warnings: Sequence[str] = ()) -> str:
    """The self-contained HTML page; ``warnings`` (of the plausibility checks) stand first, where no reader misses them."""
    box = ('<div class="warnings"><strong>Check before use:</strong><ul>' + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
           + "</ul></div>") if warnings else ""
    style = ("body{font-family:sans-serif;margin:1.5em;color:#222}figure{display:inline-block;margin:4px;text-align:center}"
             "figcaption{font-size:12px}img{image-rendering:pixelated}table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}.flag{color:#b00;font-weight:bold}"
             ".slice{border-top:1px solid #ddd;padding-top:0.5em}.warnings{background:#fff3cd;border:1px solid #e0b000;padding:0.5em 1em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{box}{''.join(sections)}</body></html>\n")


def on_plane(image: sitk.Image, plane: Grid, *, label: bool, transform: sitk.Transform | None = None) -> np.ndarray:
    """``image`` sampled on a one-slice ``plane`` in physical space (optionally through ``transform``), as 2-D."""
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = image.GetPixelID() if label else sitk.sitkFloat32
    sampled = sitk.Resample(image, plane.image(), transform or sitk.Transform(), interpolator, 0.0, pixel)
    return sitk.GetArrayFromImage(sampled)[0]


# --- cardiac ------------------------------------------------------------------------------------


def label_colours(card: ModelCard) -> Colours:
    return {entry["value"]: tuple(entry["color"]) for entry in card.labels}


def deformation_grid(result: CardiacResult, index: int, background: np.ndarray) -> np.ndarray:
    """Lines of a regular cine-plane grid, drawn where the TPS maps them onto the LGE plane."""
    plane, cine_plane = result.stack.slices[index].grids["LGE"], result.stack.slices[index].grids["cine"]
    field = sitk.GetArrayFromImage(result.displacement)[index]  # (rows, cols, 3) mm
    rows, cols = np.meshgrid(np.arange(field.shape[0]), np.arange(field.shape[1]), indexing="ij")
    points = plane.index_to_point(np.stack([cols, rows, np.zeros_like(rows)], -1)) + field
    source = cine_plane.point_to_index(points)[..., :2]
    lines = np.zeros(rows.shape, bool)
    for axis in (0, 1):
        v = source[..., axis]
        offset = np.abs((v + GRID_STEP_PX / 2) % GRID_STEP_PX - GRID_STEP_PX / 2)
        slope = np.hypot(*np.gradient(v))  # cine pixels per LGE pixel: keeps lines one pixel wide where the warp stretches
        lines |= offset < 0.5 * np.maximum(slope, 1e-3)
    out = (background * 0.5).astype(np.uint8)
    out[lines] = (255, 220, 0)
    return out


def slice_agreement(result: CardiacResult) -> list[float | None]:
    """Per LGE slice: Dice of the LGE-only and fused foregrounds (None where no cine slice was paired)."""
    if "fused LGE" not in result.masks:
        return [None] * len(result.stack.slices)
    return [foreground_dice(on_plane(result.masks["LGE"], s.grids["LGE"], label=True), on_plane(result.masks["fused LGE"], s.grids["LGE"], label=True))
            if s.paired else None for s in result.stack.slices]


def reference_scores(result: CardiacResult, reference: sitk.Image) -> MaskScores:
    """Per LGE-grid mask (and the cine mask copied onto the LGE without alignment): Dice and HD95 per structure."""
    masks = {name: result.masks[name] for name in ("fused LGE", "LGE", "cine aligned to LGE") if name in result.masks}
    if "cine" in result.masks:
        masks["cine copied to LGE"] = resample(result.masks["cine"], Grid.of(reference), label=True)
    return {name: score_images(mask, reference, CARDIAC_MYO_LV, name) for name, mask in masks.items()}


def reference_table(scores: MaskScores) -> str:
    return "<h2>Against the reference</h2>" + table(*reference_rows(scores))


def cardiac_report(result: CardiacResult, card: ModelCard, *, lge: sitk.Image, cine: sitk.Image | None = None,
                   reference: sitk.Image | None = None, scores: dict | None = None, agreement: list[float | None] | None = None,
                   warnings: Sequence[str] = (), title: str = "MultiModalSeg QA", model_folder: Path | None = None) -> tuple[str, list[int]]:
    """The QA page, and the flagged slice indices (LGE-only and fused masks disagree).

    ``scores`` (:func:`reference_scores` against ``reference``) and ``agreement`` (:func:`slice_agreement`)
    are computed here unless the caller already has them.
    """
    colours = label_colours(card)
    stack = result.stack
    warp = displacement_transform(result) if result.displacement is not None else None
    cine_float = sitk.Cast(cine, sitk.sitkFloat32) if cine is not None else None
    if scores is None and reference is not None:
        scores = reference_scores(result, reference)
    sections = [reference_table(scores)] if scores is not None else []
    agreement = slice_agreement(result) if agreement is None else agreement
    flagged = disagreeing_slices(agreement)
    slices = []
    for i, sample in enumerate(stack.slices):
        plane = sample.grids["LGE"]
        lge_rgb = grey(stack.images["LGE"][i])
        panels = []
        if "cine" in stack.images and sample.paired:
            panels.append(figure(grey(stack.images["cine"][i]), "cine (nearest slice" + (", moved onto the LGE's heart)" if result.prealigned else ")")))
        panels.append(figure(lge_rgb, "LGE"))
        single = on_plane(result.masks["LGE"], plane, label=True)
        note = ""
        if agreement[i] is not None:
            panels.append(figure(contours(lge_rgb, on_plane(result.masks["fused LGE"], plane, label=True), colours), "LGE + fused mask"))
            if i in flagged:
                note = f' <span class="flag">LGE-only and fused masks disagree (Dice {agreement[i]:.2f}): look at this slice</span>'
        panels.append(figure(contours(lge_rgb, single, colours), "LGE + LGE-only mask"))
        if warp is not None and sample.paired:
            warped = on_plane(cine_float, plane, label=False, transform=warp)
            panels.append(figure(fusion(stack.images["LGE"][i], warped), "cine warped by the TPS (green) over the LGE (magenta)"))
            panels.append(figure(deformation_grid(result, i, lge_rgb), "TPS deformation grid"))
        slices.append(f'<div class="slice"><h3>LGE slice {i}{note}</h3>{"".join(panels)}</div>')
    summary = f"<p>{len(stack.slices)} LGE slices, {int(stack.paired.sum())} paired with a cine slice. Model {html.escape(card.id)} {html.escape(card.version)}.</p>"
    if result.prealigned:
        summary += (f"<p>The cine's left ventricle lay {np.linalg.norm(result.cine_shift_mm):.0f} mm from the LGE's in the LGE's slice plane; "
                    "the cine was moved onto the LGE's heart before alignment and fusion.</p>")
    if flagged:
        summary += f'<p class="flag">Flagged slices: {", ".join(map(str, flagged))}</p>'
    sections = [summary, *sections, anatomy_montage(result, card.hyperparameters["anatomy_channels"]), "<h2>Slices</h2>", *slices,
                model_section(card, model_folder)]
    return page(title, sections, warnings), flagged


def anatomy_montage(result: CardiacResult, channels: int) -> str:
    """The binary anatomy channels (8 in the paper) of the middle LGE (and cine) slice."""
    middle = len(result.stack.slices) // 2
    rows = []
    for modality, anatomy in result.anatomy.items():
        plane = result.stack.slices[middle].grids[modality]
        labels = on_plane(anatomy, plane, label=True)
        panels = [figure(grey((labels == c).astype(float)), f"{modality} channel {c}") for c in range(1, channels + 1)]
        rows.append(f"<div>{''.join(panels)}</div>")
    return f"<h2>Anatomy factors (slice {middle})</h2>" + "".join(rows)


# --- abdominal ----------------------------------------------------------------------------------

VIEW_SPACING_MM = 1.5
ORGAN_VIEW_PX = 480
"""Abdominal panels are enlarged to at least this many pixels: a boundary must be judged, not guessed."""


def organ_views(image: sitk.Image, labels: sitk.Image, colours: Colours, names: dict[int, str]) -> list[tuple[str, np.ndarray]]:
    """Axial, coronal and sagittal views through the centre of each organ found (each organ's own slices, all
    organs' contours on them), in radiological display convention; through the volume's centre if none is found."""
    grid = Grid.of(image).axis_aligned(VIEW_SPACING_MM)  # axes run to patient left, posterior, superior
    volume = sitk.GetArrayFromImage(resample(image, grid, default=float(np.min(sitk.GetArrayViewFromImage(image)))))
    organs = sitk.GetArrayFromImage(resample(labels, grid, label=True))
    centres = {name: np.argwhere(organs == value).mean(axis=0).astype(int) for value, name in names.items() if (organs == value).any()}
    views = []
    for name, (z, y, x) in (centres or {"volume centre": np.array(organs.shape) // 2}).items():
        views += [
            (f"{name}: axial", volume[z], organs[z]),  # patient right on the left, anterior at the top
            (f"{name}: coronal", volume[::-1, y], organs[::-1, y]),  # superior at the top
            (f"{name}: sagittal", volume[::-1, :, x], organs[::-1, :, x]),  # anterior on the left
        ]
    return [(caption, contours(grey(v), o, colours)) for caption, v, o in views]


def legend(card: ModelCard) -> str:
    """Each label's colour swatch and name, as the contours draw them."""
    swatch = '<span style="display:inline-block;width:1em;height:1em;background:rgb({});border:1px solid #555;vertical-align:middle"></span>'
    items = [f'{swatch.format(",".join(str(round(255 * c)) for c in entry["color"]))} {html.escape(entry["name"])}' for entry in card.labels]
    return f'<p class="legend">{" &nbsp; ".join(items)}</p>'


def volume_rows(volumes_ml: dict[str, float], labels: LabelSet = ABDOMEN) -> list[list]:
    """Per organ: its volume, the adult range it is checked against, and where it falls."""
    ranges = {label.name: label.adult_ml for label in labels.labels}
    rows = []
    for name, ml in volumes_ml.items():
        low, high = ranges.get(name) or (None, None)
        where = "not found" if ml == 0 else "" if low is None else "below the range" if ml < low else "above the range" if ml > high else "within"
        rows.append([name, f"{ml:.0f}", "" if low is None else f"{low:.0f}-{high:.0f}", where])
    return rows


def abdominal_report(result: AbdominalResult, card: ModelCard, image: sitk.Image, *, warnings: Sequence[str] = (), title: str = "DualStreamSeg QA",
                     model_folder: Path | None = None) -> str:
    colours = label_colours(card)
    volumes = table(["organ", "volume (mL)", "adult range (mL)", ""], volume_rows(result.volumes_ml))
    names = {entry["value"]: entry["name"] for entry in card.labels}
    panels = "".join(figure(rgb, caption, ORGAN_VIEW_PX) for caption, rgb in organ_views(image, result.labels, colours, names))
    summary = (f"<p>Modality {result.modality} ({html.escape(result.modality_from)}). Model {html.escape(card.id)} {html.escape(card.version)}, "
               f"stream {result.modality}.</p>")
    return page(title, [summary, "<h2>Organ volumes</h2>", volumes, "<h2>Views through each organ</h2>", legend(card), panels,
                        model_section(card, model_folder)], warnings)
