"""A result as a DICOM Segmentation object that references the series it was made from: what a PACS
accepts, and what Slicer, OHIF and dcmqi read back onto the source images.

Built with highdicom from the source series' own files, so the SEG shares their study, patient, frame of
reference and slice geometry (oblique stacks included); each structure is one segment, with the same
SNOMED-CT type, modifier, name and colour as the Slicer segments of :mod:`crossmodal.labels`.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from crossmodal.errors import InputError
from crossmodal.image_io import dicom_series_files
from crossmodal.labels import ANATOMICAL_STRUCTURE, Code, LabelSet

MANUFACTURER = "CrossModalSeg"


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_descriptions(label_set: LabelSet, model: str, version: str) -> list[hd.seg.SegmentDescription]:
    """One automatic segment per label (numbered as the label set's classes), coded as the Slicer segments are."""
    algorithm = hd.AlgorithmIdentificationSequence(name=model, version=version, family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, label in enumerate(label_set.labels, 1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=label.name, segmented_property_category=_coded(ANATOMICAL_STRUCTURE),
            segmented_property_type=_coded(label.code), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in label.color)))
        if label.modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_coded(label.modifier)]
        descriptions.append(description)
    return descriptions


def dicom_seg(labels: sitk.Image, label_set: LabelSet, series: Path, *, model: str, version: str, series_id: str | None = None) -> hd.seg.Segmentation | None:
    """``labels`` (file values of ``label_set``, on the grid of the volume read from ``series``) as a DICOM SEG
    referencing that series (``save_as`` writes it); None when no structure was found (a SEG holds at least
    one segment). A series highdicom cannot reference (e.g. without a frame of reference) is refused.

    Every source slice gets a frame, empty or not, so readers rebuild the whole volume on the source geometry.
    """
    files = dicom_series_files(series, series_id)
    classes = label_set.to_classes(sitk.GetArrayFromImage(labels), "segmentation")
    if len(files) != classes.shape[0]:
        raise InputError(series, f"has {len(files)} slices but the segmentation {classes.shape[0]}: it is not on this series' grid")
    found = [c for c in range(1, len(label_set.labels) + 1) if (classes == c).any()]
    if not found:
        return None
    renumbered = np.zeros_like(classes)
    for number, c in enumerate(found, 1):  # segments are numbered 1..n without gaps
        renumbered[classes == c] = number
    present = LabelSet(label_set.name, tuple(label_set.labels[c - 1] for c in found))
    try:
        seg = hd.seg.Segmentation(
            source_images=[pydicom.dcmread(name) for name in files], pixel_array=renumbered, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(present, model, version), series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=model,
            software_versions=version, device_serial_number="none", content_label="CROSSMODAL", omit_empty_frames=False,
            series_description=f"{model} segmentation")
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        raise InputError(series, f"cannot be referenced by a DICOM SEG ({error})") from None
    # highdicom copies the source's Spacing Between Slices, which exports often get wrong (ITK's writer puts 1 mm
    # in every slice): readers such as dcmqi would stack the frames that far apart. The volume's own spacing is right.
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices = pydicom.valuerep.format_number_as_ds(labels.GetSpacing()[2])
    return seg
