"""Label definitions: file values, model class indices, names, colours and terminology codes.

Datasets store labels with their own values (MS-CMRSeg: 200/500/600); models work with contiguous
class indices. A :class:`LabelSet` converts between the two and refuses masks with values it does
not know, since a silently ignored label is a silently wrong ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossmodal.errors import InputError

MAX_UNEXPECTED_LABELS = 8
"""More unknown values than this in a mask, and it is an intensity image given where a label map belongs."""


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM style): scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str


ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")


@dataclass(frozen=True)
class Label:
    """One structure: its value in files, display name, RGB colour in [0, 1] and SNOMED-CT type; for an organ,
    the side of the body it lies on and the range of volumes adult organs rarely leave (what a result is
    checked against: a warning outside it, since disease moves an organ towards either end)."""

    name: str
    value: int
    color: tuple[float, float, float]
    code: Code
    modifier: Code | None = None
    side: str | None = None
    """"right" or "left" (the patient's) for an organ that lies on one side of the body."""
    adult_ml: tuple[float, float] | None = None


@dataclass(frozen=True)
class LabelSet:
    """Ordered foreground labels; class index i + 1 is ``labels[i]``, class 0 is background."""

    name: str
    labels: tuple[Label, ...]

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(label.value for label in self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def subset(self, *names: str) -> LabelSet:
        """The same labels restricted to ``names`` (e.g. the MYO/LV pair that MMSDNet segments)."""
        by_name = {label.name: label for label in self.labels}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"{self.name} has no label(s) {missing}; it has {list(by_name)}")
        return LabelSet(self.name, tuple(by_name[n] for n in names))

    def mirrored_classes(self) -> np.ndarray:
        """Class index -> the class it becomes when the body is flipped left-right: an organ on one side whose
        twin is on the other (the same code: the kidneys) takes its twin's class; every other class keeps its own."""
        mirrored = np.arange(len(self.labels) + 1)
        for i, label in enumerate(self.labels, start=1):
            for j, twin in enumerate(self.labels, start=1):
                if twin.code == label.code and None not in (label.side, twin.side) and twin.side != label.side:
                    mirrored[i] = j
        return mirrored

    def check(self, mask: np.ndarray, source: str, allow_unlisted: tuple[int, ...] = ()) -> None:
        """Raise :class:`InputError` if ``mask`` holds values that are neither 0 nor known labels."""
        found = np.unique(mask)
        if not np.issubdtype(found.dtype, np.integer) and not np.all(np.mod(found, 1) == 0):
            raise InputError(source, "mask has non-integer values; a label map holds whole numbers")
        allowed = {0, *self.values, *allow_unlisted}
        unexpected = [int(v) for v in found if int(v) not in allowed]
        expected = f"expected 0 and {', '.join(f'{lab.value} ({lab.name})' for lab in self.labels)}"
        if len(unexpected) > MAX_UNEXPECTED_LABELS:
            raise InputError(source, f"has {len(found)} distinct values ({unexpected[0]} .. {unexpected[-1]}): an intensity image, "
                                     f"not a label map; {expected}")
        if unexpected:
            raise InputError(source, f"mask has unexpected label value(s) {unexpected}; {expected}")

    def to_classes(self, mask: np.ndarray, source: str = "mask", ignore: tuple[int, ...] = ()) -> np.ndarray:
        """File values -> class indices (uint8). Values in ``ignore`` (e.g. RV 600) become background."""
        self.check(mask, source, allow_unlisted=ignore)
        lut_in = np.array(self.values)
        classes = np.zeros(mask.shape, dtype=np.uint8)
        for index, value in enumerate(lut_in, start=1):
            classes[mask == value] = index
        return classes

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> file values, in the smallest integer type that holds them."""
        if classes.size and int(classes.max()) > len(self.labels):
            raise ValueError(f"class index {int(classes.max())} exceeds the {len(self.labels)} labels of {self.name}")
        lut = np.array((0, *self.values), dtype=np.min_scalar_type(max(self.values)))
        return lut[classes]


def _sct(value: str, meaning: str) -> Code:
    return Code("SCT", value, meaning)


MSCMRSEG = LabelSet(
    "MS-CMRSeg",
    (
        Label("myocardium", 200, (0.87, 0.51, 0.34), _sct("74281007", "Myocardium"), _sct("7771000", "Left")),
        Label("left ventricle", 500, (0.87, 0.26, 0.30), _sct("87878005", "Left ventricle")),
        Label("right ventricle", 600, (0.35, 0.51, 0.86), _sct("53085002", "Right ventricle")),
    ),
)
"""MS-CMRSeg 2019 challenge values: 200 LV myocardium, 500 LV blood pool, 600 RV."""

CARDIAC_MYO_LV = MSCMRSEG.subset("myocardium", "left ventricle")
"""What MMSDNet segments (as in its paper): myocardium and LV blood pool."""

ABDOMEN = LabelSet(
    "abdomen",
    (
        Label("liver", 1, (0.87, 0.51, 0.39), _sct("10200004", "Liver"), side="right", adult_ml=(700, 3000)),
        Label("right kidney", 2, (1.00, 0.95, 0.15), _sct("64033007", "Kidney"), _sct("24028007", "Right"), side="right", adult_ml=(60, 350)),
        Label("left kidney", 3, (0.20, 0.75, 0.90), _sct("64033007", "Kidney"), _sct("7771000", "Left"), side="left", adult_ml=(60, 350)),
        Label("spleen", 4, (0.70, 0.25, 0.90), _sct("78961009", "Spleen"), side="left", adult_ml=(40, 700)),
    ),
)
"""Abdominal organs as in the shared CHAOS T2 and BTCV CT copies (1 liver, 2/3 right/left kidney, 4 spleen).

Colours: Slicer's liver, and for the others hues that a reader tells apart at a glance on a grey image
(Slicer's own kidney and spleen colours are browns and a dark red next to the liver's orange).

Adult ranges, wider than normal values (liver about 1.2-1.8 L, each kidney 120-200 mL, spleen 100-250 mL in
CT volumetry): a volume outside them is either disease or a wrong segmentation, and worth a look either way."""
