"""``segment`` and ``report``: a cine + LGE pair (or either alone) with MMSDNet, or a CT/MR volume with the dual-stream FCN."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.abdominal import MODALITIES, looks_like
from crossmodal.abdominal_inference import AbdominalResult, segment_abdominal
from crossmodal.bundles import ModelCard, load_bundle, read_card
from crossmodal.cardiac_inference import OUTPUTS, CardiacResult, pair_inputs, segment_cardiac
from crossmodal.catalog import find_model
from crossmodal.devices import DEVICES, pick_device
from crossmodal.errors import InputError
from crossmodal.events import Events
from crossmodal.image_io import atomic_output, read_cine_frame, read_image, require_signal, writable_folder, write_image
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV
from crossmodal.output_set import OutputSet
from crossmodal.plausibility import abdominal_warnings, acquisition_warnings, cardiac_warnings
from crossmodal.qa import disagreeing_slices, require_reference
from crossmodal.report import abdominal_report, cardiac_report, reference_scores, slice_agreement
from crossmodal.segment_outputs import (
    ALIGNMENT_FILE,
    DICOM_SEG_FILE,
    MAIN_MASKS,
    ORGANS_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    SegmentOutput,
    anatomy_file,
    main_mask,
    mask_file,
)


@dataclass
class Segmentation:
    task: str
    card: ModelCard
    result: CardiacResult | AbdominalResult
    images: dict[str, sitk.Image]
    inputs: dict[str, Path]
    """Role ("lge", "cine", "reference", "image") -> the file given: never overwritten, and recorded in ``segment.json``."""
    reference: sitk.Image | None = None
    model_folder: Path | None = None
    """The bundle the model came from (its training curves go into the QA report)."""


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    segment = commands.add_parser("segment", parents=[common], help="segment a cine + LGE pair, a cine or an LGE, or a CT/MR volume",
                                  description="Segment images and write the masks as files on each input's own voxel grid.")
    add_input_arguments(segment)
    segment.add_argument("--batch", type=Path, metavar="FOLDER",
                         help="segment every case of a folder (MS-CMRSeg, nnU-Net raw, or plain images) into --out/<case>, with a summary table")
    segment.add_argument("--out", required=True, type=Path, help="output folder (created); inputs are never overwritten")
    segment.add_argument("--report", action="store_true", help="also write the visual QA report (" + REPORT_FILE + ")")
    segment.add_argument("--format", choices=FORMATS, default="auto",
                         help=f"besides the NIfTI masks, a DICOM Segmentation ({DICOM_SEG_FILE}) referencing the segmented DICOM series: "
                              "auto (when that input is a DICOM series folder; default), dicom-seg (required), nifti (never)")
    segment.set_defaults(run=run_segment)
    report = commands.add_parser("report", parents=[common], help="write the visual QA report (HTML) of inputs, or of a segment output folder",
                                 description="Segment the inputs (or read what `segment` wrote, with --from) and write a self-contained HTML "
                                             "page of QA panels.")
    add_input_arguments(report)
    report.add_argument("--from", dest="segmented", type=Path, metavar="FOLDER",
                        help="a folder `segment` wrote: report on its outputs and inputs instead of segmenting again")
    report.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    report.set_defaults(run=run_report)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    cardiac = parser.add_argument_group("cardiac MR (MMSDNet)")
    cardiac.add_argument("--lge", type=Path, help="LGE volume (NIfTI, NRRD, MHA or a DICOM folder)")
    cardiac.add_argument("--cine", type=Path, help="cine volume: one 3-D frame, or a 4-D cine with --cine-frame")
    cardiac.add_argument("--cine-frame", type=int, default=0, help="frame of a 4-D cine (default 0, end-diastole in MS-CMRSeg)")
    cardiac.add_argument("--reference", type=Path, help="reference LGE mask (200 myocardium, 500 LV): Dice and HD95 in the result and the report")
    abdominal = parser.add_argument_group("abdominal CT or MR (dual-stream FCN)")
    abdominal.add_argument("--image", type=Path, help="CT or MR volume")
    abdominal.add_argument("--modality", choices=MODALITIES, help="the volume's modality (default: from DICOM tags or intensities)")
    abdominal.add_argument("--mirror", action="store_true",
                           help="test-time mirroring: average with the prediction for the volume flipped left-right (twice the time; "
                                "for models trained on mirrored patches, see the card's validation)")
    parser.add_argument("--model", help="model id (see `crossmodal models`) or bundle folder; default: the bundled model for the task")
    parser.add_argument("--device", choices=DEVICES, default="auto")


def inference_progress(events: Events):
    """Progress events of the network's passes (slices of a cardiac stack, windows of a 3-D volume), from 0."""
    events.progress("inference", 0, 1)
    return lambda done, total: events.progress("inference", done, total)


def read_intensity_image(path: Path, frame: int | None = None) -> sitk.Image:
    """An image to segment (one frame of a cine when ``frame`` is given), refused when blank."""
    image = read_image(path) if frame is None else read_cine_frame(path, frame)
    require_signal(image, path)
    return image


def segment_inputs(args: argparse.Namespace, events: Events) -> Segmentation:
    """Read and check every input (the reference too), pick and verify the model, run it."""
    if args.image is not None and (args.lge is not None or args.cine is not None):
        raise InputError("--image", "segments a CT/MR volume; it cannot be combined with --lge or --cine")
    if args.image is None and args.lge is None and args.cine is None:
        raise InputError("inputs", "give --lge and/or --cine (cardiac MR), or --image (abdominal CT/MR)")
    if args.mirror and args.image is None:
        raise InputError("--mirror", "is test-time mirroring of an abdominal --image; MMSDNet's cardiac inference has none")
    if args.reference is not None and args.lge is None:
        raise InputError("--reference", "is a reference LGE mask, but no --lge was given")
    device = pick_device(args.device)
    if args.image is not None:
        image = read_intensity_image(args.image)
        folder = find_model(args.model, "abdominal")
        card, network = load_bundle(folder, device)
        result = segment_abdominal(network, card, image, args.modality, device=device, source=str(args.image), progress=inference_progress(events),
                                   mirror=args.mirror)
        for warning in abdominal_warnings(image, result.labels, ABDOMEN, result.volumes_ml, str(args.image)):
            events.warning(warning)
        return Segmentation("abdominal", card, result, {"image": image}, {"image": args.image}, model_folder=folder)
    images = {}
    if args.lge is not None:
        images["LGE"] = read_intensity_image(args.lge)
    if args.cine is not None:
        images["cine"] = read_intensity_image(args.cine, args.cine_frame)
    for role, image in images.items():
        if looks_like(sitk.GetArrayViewFromImage(image)) == "CT":
            raise InputError(getattr(args, role.lower()), f"has intensities below -50, as a CT in HU; the {role} must be a cardiac MR image")
    reference = require_reference(read_image(args.reference), args.reference, images["LGE"]) if args.reference is not None else None
    for warning in acquisition_warnings(images, {role: str(getattr(args, role.lower())) for role in images}):
        events.warning(warning)
    folder = find_model(args.model, "cardiac")
    card, network = load_bundle(folder, device)
    result = segment_cardiac(network, card, lge=images.get("LGE"), cine=images.get("cine"), device=device, progress=inference_progress(events))
    for warning in cardiac_warnings(result.masks.get("LGE"), result.masks.get("cine"), prealigned=result.prealigned):
        events.warning(warning)
    inputs = {role: path for role, path in (("lge", args.lge), ("cine", args.cine), ("reference", args.reference)) if path is not None}
    return Segmentation("cardiac", card, result, images, inputs, reference, folder)


FORMATS = ("auto", "dicom-seg", "nifti")
CINE_OFFSET = "cine_left_ventricle_offset_mm"
"""``segment.json``'s record of where the cine's left ventricle lay from the LGE's, and whether the cine was moved."""


def dicom_seg_source(args: argparse.Namespace, result: CardiacResult | AbdominalResult | None = None) -> tuple[Path, str] | None:
    """The DICOM series folder a DICOM SEG of this run would reference and the result it would hold (the fused LGE
    mask, else the LGE's, else the cine's; the organs), or None when none is wanted or possible. Before any work
    (``result`` None), a SEG required of a non-DICOM input is refused."""
    if args.format == "nifti":
        return None
    if args.image is not None:
        role, name = "image", ORGANS_FILE
    else:
        name = MAIN_MASKS[0] if result is None else main_mask(result.masks)
        role = "cine" if name == "cine" or args.lge is None else "lge"
    source = getattr(args, role)
    if not source.is_dir() or (role == "cine" and args.cine_frame != 0):
        if args.format == "dicom-seg":
            raise InputError("--format dicom-seg", f"a DICOM SEG references the DICOM series it segments, and --{role} {source} is "
                                                   f"{'one frame of a cine' if source.is_dir() else 'not a DICOM series folder'}")
        return None
    return source, name


def check_output_folder(folder: Path, planned: list[Path], inputs: dict[str, Path]) -> None:
    """Create ``folder`` and make sure it is writable and that no planned output is an input."""
    writable_folder(folder)
    given = {p.resolve() for p in inputs.values()}
    clash = [p for p in planned if p.resolve() in given]
    if clash:
        raise InputError(clash[0], "is an input; writing the output there would overwrite it. Choose another --out")


def html_report(segmentation: Segmentation, warnings: list[str], summary: dict | None = None) -> str:
    """The QA page, ``warnings`` at its top; ``summary`` (of ``segment``) supplies the Dice and slice agreement already computed."""
    if segmentation.task == "abdominal":
        return abdominal_report(segmentation.result, segmentation.card, segmentation.images["image"], warnings=warnings,
                                model_folder=segmentation.model_folder)
    summary = summary or {}
    text, _ = cardiac_report(segmentation.result, segmentation.card, lge=segmentation.images.get("LGE"), cine=segmentation.images.get("cine"),
                             reference=segmentation.reference, scores=summary.get("dice"), agreement=summary.get("slice_agreement"),
                             warnings=warnings, model_folder=segmentation.model_folder)
    return text


def require_report_inputs(args: argparse.Namespace) -> None:
    """Before any work: the inputs a QA report is made from."""
    if args.image is None and args.lge is None:
        raise InputError("--lge", "the cardiac QA report shows the LGE; give --lge (with or without --cine)")


def run_segment(args: argparse.Namespace, events: Events) -> int:
    if args.batch is not None:
        from crossmodal.cli.batch import run_batch  # it segments each case with segment_one below

        return run_batch(args, events, segment_one)
    return segment_one(args, events)


def segment_one(args: argparse.Namespace, events: Events) -> int:
    if args.report:
        require_report_inputs(args)
    dicom_seg_source(args)
    segmentation = segment_inputs(args, events)
    files: dict[str, sitk.Image] = {}
    summary: dict = {"task": segmentation.task, "model": segmentation.card.id, "model_version": segmentation.card.version,
                     "inputs": {role: str(path.resolve()) for role, path in segmentation.inputs.items()}}
    if args.cine is not None:
        summary["inputs"]["cine_frame"] = args.cine_frame
    result = segmentation.result
    if isinstance(result, CardiacResult):
        for name in OUTPUTS:
            if name in result.masks:
                files[mask_file(name)] = result.masks[name]
        for modality, anatomy in result.anatomy.items():
            files[anatomy_file(modality)] = anatomy
        summary["anatomy_channels"] = segmentation.card.hyperparameters["anatomy_channels"]
        if result.displacement is not None:
            files[ALIGNMENT_FILE] = result.displacement  # NRRD, not ITK's HDF5 transform: its writer crashes the process on a full disk
        summary["slices"] = {"LGE" if "LGE" in segmentation.images else "cine": len(result.stack.slices), "paired": int(result.stack.paired.sum())}
        if result.cine_shift_mm is not None:
            summary[CINE_OFFSET] = {"lps": [float(v) for v in result.cine_shift_mm],  # unrounded: `report --from` samples the cine there again
                                                        "in_plane": round(float(np.linalg.norm(result.cine_shift_mm)), 1),
                                                        "cine_moved_before_fusion": result.prealigned}
        if "LGE" in segmentation.images:
            agreement = slice_agreement(result)
            summary["slice_agreement"] = agreement
            summary["disagreeing_slices"] = disagreeing_slices(agreement)
        if segmentation.reference is not None:
            summary["dice"] = reference_scores(result, segmentation.reference)
    else:
        files[ORGANS_FILE] = result.labels
        summary.update(modality=result.modality, modality_from=result.modality_from, test_time_mirroring=args.mirror, volumes_ml=result.volumes_ml)
    seg = dicom_seg_export(args, segmentation, files, events)
    names = [*files, *([DICOM_SEG_FILE] if seg else []), SUMMARY_FILE, *([REPORT_FILE] if args.report else [])]
    check_output_folder(args.out, [args.out / n for n in names], segmentation.inputs)
    summary["warnings"] = list(events.warnings)
    with OutputSet(args.out, SUMMARY_FILE) as out:
        for name, image in files.items():
            out.write(name, lambda path, image=image: write_image(image, path))
        if seg:
            out.write(DICOM_SEG_FILE, seg)
        if args.report:
            out.write_text(REPORT_FILE, html_report(segmentation, events.warnings, summary))
        outputs = out.commit(summary)
    events.result(outputs, **summary)
    return 0


def dicom_seg_export(args: argparse.Namespace, segmentation: Segmentation, files: dict[str, sitk.Image], events: Events):
    """This run's DICOM SEG as a writer of a path, or None where there is none; where one was possible but cannot be
    made (nothing found, a series highdicom cannot reference), a warning says why, or, when required, a refusal."""
    source = dicom_seg_source(args, segmentation.result)
    if source is None:
        return None
    from crossmodal.dicom_seg import dicom_seg  # highdicom only where a DICOM SEG is written (not needed inside Slicer)

    series, name = source
    labels = files[ORGANS_FILE] if name == ORGANS_FILE else files[mask_file(name)]
    try:
        seg = dicom_seg(labels, ABDOMEN if name == ORGANS_FILE else CARDIAC_MYO_LV, series, model=segmentation.card.id, version=segmentation.card.version)
    except InputError as error:
        if args.format == "dicom-seg":
            raise
        events.warning(f"no {DICOM_SEG_FILE} was written: {error}")
        return None
    if seg is None:
        events.warning(f"no {DICOM_SEG_FILE} was written: nothing was found to put in it")
        return None
    return lambda path: seg.save_as(path)


def run_report(args: argparse.Namespace, events: Events) -> int:
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise InputError(args.out, "the report is an HTML page; give a path ending in .html")
    if args.segmented is not None:
        if any(getattr(args, role) is not None for role in ("lge", "cine", "reference", "image")):
            raise InputError("--from", "reports on what `segment` wrote, with its own inputs; give no --lge, --cine, --reference or --image")
        segmentation, summary = read_segmentation(args.segmented)
        warnings = summary.get("warnings", [])
    else:
        require_report_inputs(args)
        segmentation, summary = segment_inputs(args, events), None
        warnings = events.warnings
    check_output_folder(args.out.parent, [args.out], segmentation.inputs)
    with atomic_output(args.out) as partial:
        partial.write_text(html_report(segmentation, warnings, summary), encoding="utf-8")
    extra = {"volumes_ml": segmentation.result.volumes_ml} if isinstance(segmentation.result, AbdominalResult) else {}
    events.result({"report": str(args.out)}, task=segmentation.task, warnings=list(warnings), **extra)
    return 0


def read_segmentation(folder: Path) -> tuple[Segmentation, dict]:
    """What ``segment`` wrote to ``folder``, with the inputs its summary names, as a :class:`Segmentation` (no model run)."""
    written = SegmentOutput.read(folder)
    summary, task = written.summary, written.summary["task"]
    inputs = summary.get("inputs", {})
    model_folder = find_model(summary["model"], task)
    card = read_card(model_folder)

    def output(name: str, components: int = 1) -> sitk.Image:
        path = written.path(name)
        if path is None:
            raise InputError(folder, f"{SUMMARY_FILE} lists no {name}")
        return read_image(path, components=components)

    paths = {role: Path(p) for role, p in inputs.items() if role != "cine_frame"}
    if task == "abdominal":
        image = read_image(inputs["image"])
        result = AbdominalResult(output(ORGANS_FILE), summary["modality"], summary["modality_from"], summary["volumes_ml"])
        return Segmentation(task, card, result, {"image": image}, paths, model_folder=model_folder), summary
    images = {"LGE": read_image(inputs["lge"])} if "lge" in inputs else {}
    if "cine" in inputs:
        images["cine"] = read_cine_frame(inputs["cine"], inputs.get("cine_frame", 0))
    offset = summary.get(CINE_OFFSET, {})
    shift = np.asarray(offset["lps"]) if offset.get("cine_moved_before_fusion") else None
    result = CardiacResult(pair_inputs(card, lge=images.get("LGE"), cine=images.get("cine"), cine_shift_mm=shift),
                           cine_shift_mm=np.asarray(offset["lps"]) if offset else None, prealigned=shift is not None)
    result.masks = {name: output(mask_file(name)) for name in OUTPUTS if written.mask(name) is not None}
    result.anatomy = {modality: output(anatomy_file(modality)) for modality in ("cine", "LGE")  # the order segment_cardiac makes them in
                      if written.anatomy(modality) is not None}
    if written.path(ALIGNMENT_FILE) is not None:
        result.displacement = output(ALIGNMENT_FILE, components=3)
    reference = read_image(inputs["reference"]) if "reference" in inputs else None
    return Segmentation(task, card, result, images, paths, reference, model_folder), summary
