"""Dataset layouts: MS-CMRSeg (paired cardiac cine + LGE) and the nnU-Net v2 raw layout.

Discovery only finds files and checks that the layout is whole; images are read on demand with
:mod:`crossmodal.image_io`, so listing a large dataset costs nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from crossmodal.errors import InputError
from crossmodal.image_io import PathLike, read_image
from crossmodal.labels import MSCMRSEG

MSCMRSEG_MODALITIES = {"C0": "cine", "DE": "LGE", "T2": "T2"}
_MSCMRSEG_FILE = re.compile(r"^patient(\d+)_(C0|DE|T2)(?:_(manual|scribble))?\.nii(?:\.gz)?$")


@dataclass
class CardiacCase:
    """One MS-CMRSeg patient: for each modality (C0, DE, T2), its image, full mask and scribbles."""

    patient: int
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    scribbles: dict[str, Path] = field(default_factory=dict)

    @property
    def is_pair(self) -> bool:
        """Both cine and LGE images exist, so the case can feed a multi-input model."""
        return {"C0", "DE"} <= self.images.keys()

    def has_mask(self, modality: str) -> bool:
        return modality in self.masks

    def read(self, modality: str) -> sitk.Image:
        return read_image(self._path(self.images, modality, "image"))

    def read_mask(self, modality: str, *, scribble: bool = False) -> sitk.Image:
        """A mask with its values checked against the MS-CMRSeg label set (200, 500, 600)."""
        files = self.scribbles if scribble else self.masks
        path = self._path(files, modality, "scribble" if scribble else "mask")
        mask = read_image(path)
        MSCMRSEG.check(sitk.GetArrayViewFromImage(mask), str(path))
        return mask

    def _path(self, files: dict[str, Path], modality: str, kind: str) -> Path:
        if modality not in files:
            raise InputError(f"patient{self.patient}", f"has no {MSCMRSEG_MODALITIES.get(modality, modality)} {kind}")
        return files[modality]


def discover_mscmrseg(folder: PathLike) -> list[CardiacCase]:
    """All patients of an MS-CMRSeg folder (``patient{N}_{C0,DE,T2}[_manual|_scribble].nii.gz``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    cases: dict[int, CardiacCase] = {}
    for path in sorted(folder.iterdir()):
        match = _MSCMRSEG_FILE.match(path.name)
        if not match:
            continue
        patient, modality, kind = int(match[1]), match[2], match[3]
        case = cases.setdefault(patient, CardiacCase(patient))
        {None: case.images, "manual": case.masks, "scribble": case.scribbles}[kind][modality] = path
    if not cases:
        raise InputError(folder, "holds no MS-CMRSeg files (patient{N}_C0/DE/T2[_manual|_scribble].nii.gz)")
    orphans = [f"patient{c.patient}_{m}" for c in cases.values() for m in {*c.masks, *c.scribbles} - c.images.keys()]
    if orphans:
        raise InputError(folder, f"has masks without their image: {', '.join(sorted(orphans))}")
    return [cases[p] for p in sorted(cases)]


@dataclass(frozen=True)
class NnUNetCase:
    """One case: its channel files in channel order, and its label file if the dataset has one."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class NnUNetDataset:
    """An nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``)."""

    root: Path
    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    cases: tuple[NnUNetCase, ...]

    def read_label(self, case: NnUNetCase) -> sitk.Image:
        """The label image, with its values checked against ``dataset.json``'s labels."""
        if case.label is None:
            raise InputError(case.case_id, "has no label in labelsTr/")
        label = read_image(case.label)
        found = np.unique(sitk.GetArrayViewFromImage(label))
        unexpected = sorted(set(found.tolist()) - set(self.labels.values()))
        if unexpected:
            raise InputError(case.label, f"has label value(s) {unexpected} that dataset.json does not list ({self.labels})")
        return label


def read_nnunet_dataset(folder: PathLike, *, require_labels: bool = True) -> NnUNetDataset:
    """Parse and check an nnU-Net v2 raw dataset folder.

    With ``require_labels`` (training), every case in imagesTr/ must have its label in labelsTr/.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    meta = _read_dataset_json(root / "dataset.json")
    channels = _channel_names(meta, root / "dataset.json")
    ending = meta["file_ending"]
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(images_dir, "no such folder (the nnU-Net layout needs imagesTr/)")

    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    by_case: dict[str, dict[int, Path]] = {}
    for path in sorted(images_dir.iterdir()):
        match = pattern.match(path.name)
        if match:
            by_case.setdefault(match[1], {})[int(match[2])] = path
    if not by_case:
        raise InputError(images_dir, f"holds no images named CASE_0000{ending}")

    cases = []
    for case_id, files in sorted(by_case.items()):
        missing = [f"_{c:04d}" for c in range(len(channels)) if c not in files]
        if missing:
            raise InputError(images_dir / f"{case_id}_0000{ending}", f"case {case_id} lacks channel file(s) {missing}")
        label = labels_dir / f"{case_id}{ending}"
        if not label.exists():
            if require_labels:
                raise InputError(label, f"missing: image {files[0].name} has no label")
            label = None
        cases.append(NnUNetCase(case_id, tuple(files[c] for c in range(len(channels))), label))

    expected = meta.get("numTraining")
    if expected is not None and expected != len(cases):
        raise InputError(root / "dataset.json", f"numTraining is {expected} but imagesTr/ holds {len(cases)} case(s)")
    return NnUNetDataset(root, str(meta.get("name", root.name)), channels, dict(meta["labels"]), ending, tuple(cases))


def _read_dataset_json(path: Path) -> dict:
    if not path.exists():
        raise InputError(path, "missing (an nnU-Net raw dataset needs dataset.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if not isinstance(meta, dict):
        raise InputError(path, "must hold a JSON object")
    missing = [key for key in ("channel_names", "labels", "file_ending") if key not in meta]
    if missing:
        raise InputError(path, f"lacks required key(s) {missing}")
    labels = meta["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) for v in labels.values()):
        raise InputError(path, "'labels' must map names to integer values (region-based labels are not supported)")
    if labels.get("background") != 0:
        raise InputError(path, "'labels' must have background: 0")
    return meta


def _channel_names(meta: dict, path: Path) -> tuple[str, ...]:
    names = meta["channel_names"]
    if not isinstance(names, dict) or not names or set(names) != {str(i) for i in range(len(names))}:
        raise InputError(path, "'channel_names' must map '0', '1', ... to channel names")
    return tuple(names[str(i)] for i in range(len(names)))
