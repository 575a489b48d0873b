"""Training recipes: a JSON config plus dataset folders become a training job, and its result a model bundle.

A config names the architecture and whatever differs from the defaults below, e.g.::

    {"architecture": "MMSDNet", "id": "my-mmsdnet", "steps": 2000, "lge_fraction": 0.5,
     "data": {"mscmrseg": "/data/MS-CMRSeg"}}

    {"architecture": "DualStreamFCN", "id": "my-v4", "variant": "V4",
     "data": {"CT": "/data/Dataset001_CT", "MR": "/data/Dataset002_MR"}}

Unknown keys are refused (a typo would otherwise be silently ignored). Every bundle keeps the recipe it
was trained with as ``recipe.json`` (the bundled models' under ``Resources/Models``); ``crossmodal train
--config <model>`` trains again from it, and the panels' trainings start from the bundled models' ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from crossmodal.abdominal import DEFAULT_BODY_THRESHOLD, MODALITIES, SPACING_MM, Preparation, PreparedVolume, prepare_volume, require_body_threshold
from crossmodal.abdominal_inference import delivered_classes, predict_probabilities
from crossmodal.bundles import MIRRORED_PATCHES, ModelCard
from crossmodal.datasets import discover_mscmrseg, read_nnunet_dataset
from crossmodal.devices import fast_bfloat16
from crossmodal.errors import InputError
from crossmodal.labels import ABDOMEN, CARDIAC_MYO_LV
from crossmodal.nets.mmsdnet import PAPER_SEGMENTOR, MMSDNetConfig
from crossmodal.nets.residual_fcn import VARIANTS, ResidualFCNConfig
from crossmodal.pairing import PairingConfig
from crossmodal.scoring import structure_dice
from crossmodal.training.abdominal_training import DualStreamTrainer, IntensityAugmentation, PatchSampler, SpatialAugmentation, alternating_batches
from crossmodal.training.cardiac_data import CardiacPatient, build_samples, load_patient
from crossmodal.training.evaluation import predict_patient, score_native, validation_score
from crossmodal.training.methods import MMSDNetMethod
from crossmodal.training.trainer import Schedule, Trainable, TrainingResult

Progress = Callable[[str, int, int], None]


@dataclass
class Job:
    """Everything :func:`crossmodal.training.trainer.train` needs, and how to describe the result."""

    trainable: Trainable
    network: torch.nn.Module
    """What the bundle stores."""
    batches: Callable[[torch.Generator], Any]
    schedule: Schedule
    validate: Callable[[Trainable], float] | None
    card: Callable[[TrainingResult], ModelCard]
    """The bundle's card, from the finished training (validation scores are computed here)."""


@dataclass
class Recipe:
    """Fields every recipe has."""

    id: str = "model"
    version: str = "1.0.0"
    steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    final_learning_rate: float = 1.0
    """Fraction of ``learning_rate`` the cosine decay ends at (1: constant); see :class:`Schedule`."""
    validate_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    data: dict = field(default_factory=dict)
    bfloat16: bool = False
    """The training forward pass in bfloat16 autocast (losses stay float32), where the device computes bfloat16
    natively: about 1.3x faster MMSDNet steps with AVX512-BF16 and on GPUs. Ignored elsewhere: emulated, an
    MMSDNet step took 35x longer than in float32 (143 s against 4.1 s, 2-core AMD EPYC without it)."""

    architecture = ""

    def prepare(self, device: torch.device, progress: Progress) -> Job:
        raise NotImplementedError

    def autocast_bfloat16(self, device: torch.device) -> bool:
        """Whether this training runs its forward pass in bfloat16 on ``device`` (see :attr:`bfloat16`)."""
        return self.bfloat16 and fast_bfloat16(device)

    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.validate_every, self.warmup_steps, self.final_learning_rate)

    def data_folder(self, key: str) -> Path:
        if key not in self.data:
            raise InputError("config", f"needs data folder {key!r} (in the config's \"data\" or on the command line)")
        folder = Path(self.data[key])
        if not folder.is_dir():
            raise InputError(folder, f"data folder for {key!r} does not exist")
        return folder

    def training_record(self, result: TrainingResult, device: torch.device) -> dict:
        return {"recipe": {"architecture": self.architecture, **asdict(self)}, "best_step": result.best_step,
                "steps": result.last_step, "seconds": round(result.seconds), "device": str(device), "torch": torch.__version__}


@dataclass
class CardiacSplit:
    """A cardiac recipe's data: training patients, validation patients, who gives LGE masks."""

    folder: Path
    training: list[CardiacPatient]
    validation: list[CardiacPatient]
    lge_labelled: set[int]


@dataclass
class MMSDNetRecipe(Recipe):
    """MMSDNet on MS-CMRSeg-layout paired cine + LGE; ``validation`` fully labelled patients choose the checkpoint."""

    size: int = 96
    spacing_mm: float = 2.0
    filters: int = 16
    lge_fraction: float = 1.0
    """Share of the labelled training patients whose LGE masks are used (semi-supervised below 1)."""
    max_offset: float | None = 0.3
    """Soft bound on the TPS control-point offsets (0.3 of the half field of view); None: unbounded, as the paper.
    Short trainings without it can fling control points far outside the image."""
    validation: list[int] | int = 2
    """Fully labelled patients that choose the checkpoint: their numbers, or how many (the highest-numbered)."""
    segmentor: str = PAPER_SEGMENTOR
    """What MMSDNet's segmentor sees (see :attr:`MMSDNetConfig.segmentor`)."""

    architecture = "MMSDNet"

    def validation_patients(self, patients: dict[int, CardiacPatient], folder: Path) -> list[int]:
        labelled = sorted(p for p, patient in patients.items() if patient.lge_mask is not None and patient.paired.any())
        if isinstance(self.validation, int):
            if len(labelled) <= self.validation:
                raise InputError(folder, f"holds {len(labelled)} fully labelled cine + LGE pairs; training needs more than the {self.validation} that validate")
            return labelled[len(labelled) - self.validation :]
        missing = [p for p in self.validation if p not in labelled]
        if missing:
            raise InputError(folder, f"validation patient(s) {missing} are not fully labelled pairs there")
        return list(self.validation)

    def split(self, progress: Progress) -> CardiacSplit:
        """Read the data folder and split it as this recipe trains: what a baseline on the same data uses too."""
        folder = self.data_folder("mscmrseg")
        found = discover_mscmrseg(folder)
        if not any(c.is_pair and c.has_mask("C0") for c in found):
            raise InputError(folder, "holds no paired cine + LGE patients with cine masks (MS-CMRSeg layout)")
        # Pairs with cine masks, and LGE-only patients with LGE masks (they train the LGE branch alone).
        cases = [c for c in found if (c.has_mask("C0") if c.is_pair else c.has_mask("DE"))]
        pairing = PairingConfig(spacing_mm=self.spacing_mm, size=self.size)
        patients: dict[int, CardiacPatient] = {}
        for i, case in enumerate(cases, 1):
            patients[case.patient] = load_patient(case, pairing)
            progress("loading", i, len(cases))
        chosen = self.validation_patients(patients, folder)
        training = [p for p in patients if p not in chosen]
        labelled = sorted(p for p in training if patients[p].lge_mask is not None)
        lge_labelled = set(labelled[: round(self.lge_fraction * len(labelled))])
        return CardiacSplit(folder, [patients[p] for p in training], [patients[p] for p in chosen], lge_labelled)

    def prepare(self, device: torch.device, progress: Progress) -> Job:
        split = self.split(progress)
        folder, lge_labelled, validation = split.folder, split.lge_labelled, split.validation
        training, chosen = sorted(p.patient for p in split.training), [p.patient for p in validation]
        samples = build_samples(split.training, lge_labelled)
        torch.manual_seed(self.seed)  # the initial weights belong to the recipe: a training is reproducible
        method = MMSDNetMethod(MMSDNetConfig(filters=self.filters, max_offset=self.max_offset, segmentor=self.segmentor), device, learning_rate=self.learning_rate,
                               bfloat16=self.autocast_bfloat16(device))

        def card(result: TrainingResult) -> ModelCard:
            native = {str(p.patient): {name: score_native(p, probs)["volume"] for name, probs in predict_patient(method, p).items()} for p in validation}
            return ModelCard(
                id=self.id, version=self.version, architecture="MMSDNet", hyperparameters=method.config.as_dict(), modalities=["cine", "LGE"],
                preprocessing={"size": self.size, "spacing_mm": self.spacing_mm,
                               "normalisation": "percentile 0.5-99.5 to 0..1, per slice", "pairing": "nearest cine slice per LGE slice"},
                labels=ModelCard.label_entries(CARDIAC_MYO_LV),
                training={"data": str(folder), "patients": sorted(training), "lge_labelled": sorted(lge_labelled), **self.training_record(result, device)},
                validation={"patients": chosen, "dice_native_lge": native},
            )

        return Job(method, method.network, method.batches(samples, self.batch_size),
                   self.schedule(), (lambda m: validation_score(m, validation)) if validation else None, card)


@dataclass
class Subject:
    case_id: str
    modality: str
    prepared: PreparedVolume
    """Prepared with its labels (the training target)."""
    reference: np.ndarray
    """Manual labels on the subject's own grid."""


def load_subjects(folder: Path, modality: str, preparation: Preparation, progress: Progress | None = None) -> list[Subject]:
    """Every labelled case of an nnU-Net-layout ``folder``, prepared for the dual-stream FCN."""
    dataset = read_nnunet_dataset(folder)
    subjects = []
    for i, case in enumerate(dataset.cases, 1):
        image, labels = sitk.ReadImage(str(case.images[0])), dataset.read_label(case)
        prepared = prepare_volume(image, modality, labels, preparation=preparation, source=str(case.images[0]))
        subjects.append(Subject(case.case_id, modality, prepared, sitk.GetArrayFromImage(labels)))
        if progress:
            progress(f"loading {modality}", i, len(dataset.cases))
    return subjects


def subject_dice(network: torch.nn.Module, subject: Subject, device: torch.device, mirror: bool = False) -> dict[str, float]:
    """Dice per organ, on the subject's own grid, of what ``segment`` delivers for ``subject`` (each organ's
    largest piece, each kidney named by its side; ``mirror``: with test-time mirroring): validation, cards and
    tables grade the product's output."""
    probabilities = predict_probabilities(network, network.config.streams.index(subject.modality), subject.prepared, device=device,
                                          mirror=ABDOMEN.mirrored_classes() if mirror else None)
    return structure_dice(sitk.GetArrayFromImage(delivered_classes(subject.prepared, probabilities)), subject.reference, ABDOMEN)


def modality_means(scores: dict[str, dict[str, float]], subjects: list[Subject]) -> dict[str, float]:
    """Per modality, the mean over its subjects of each subject's mean Dice over the organs."""
    return {m: float(np.mean([np.mean(list(scores[s.case_id].values())) for s in subjects if s.modality == m])) for m in {s.modality for s in subjects}}


@dataclass
class DualStreamRecipe(Recipe):
    """A dual-stream FCN variant on nnU-Net-layout CT and MR; ``validation`` subjects per modality choose the checkpoint."""

    variant: str = "V4"
    filters: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    units_per_scale: int = 1
    patch: int = 48
    batch_size: int = 2
    validate_every: int = 250
    validation: dict = field(default_factory=lambda: {"CT": 1, "MR": 3})
    validation_seed: int | None = None
    """Seed of the validation split (the recipe's ``seed`` when unset): another ``seed`` on the same split trains the
    same subjects anew, which sizes the noise of a one-training comparison."""
    ct_window: list[float] | None = None
    """HU window of the training CT (BTCV's copy: [-125, 275]); inputs are clipped to it at inference too."""
    body_threshold: str = DEFAULT_BODY_THRESHOLD
    """How the body is found for the crop and the z-score (:data:`crossmodal.abdominal.BODY_THRESHOLDS`); the card
    records it and inference uses it too."""
    trim_blank_borders: bool = False
    """Treat border slabs of one value as outside the field of view (:func:`crossmodal.abdominal.without_blank_borders`),
    in training and, through the card, at inference."""
    spatial_augmentation: bool = False
    """Rotate, scale and now and then deform each training patch (:class:`SpatialAugmentation`), besides noise and offsets."""
    spatial_scale: float = SpatialAugmentation.scale
    """With ``spatial_augmentation``: each axis scaled by 1 +/- up to this (nnU-Net draws 0.7-1.4), so that organs
    larger or smaller than the training set's (an enlarged spleen) are still seen."""
    contrast_augmentation: bool = False
    """Also vary each training patch's contrast, gamma and offset as nnU-Net does (:meth:`IntensityAugmentation.varied_contrast`),
    so that a volume whose body z-score sits its organs lower or higher than usual still looks familiar."""
    cross_entropy: bool = False
    """Add voxel-wise cross-entropy to the paper's Dice loss (nnU-Net's loss), so that background is graded too."""
    mirror: bool = False
    """Flip half the training patches left-right, the kidneys swapping names (:class:`PatchSampler`): the model can
    then be run with test-time mirroring (``segment --mirror``), which the card reports the validation of."""
    weight_average: float | None = None
    """Deliver a moving average of the weights (:func:`~crossmodal.training.abdominal_training.moving_average`, this its
    longest decay, e.g. 0.998: about the last 500 steps) instead of the last step's: validation, the kept checkpoint
    and the bundle all use it."""

    architecture = "DualStreamFCN"

    def patch_samplers(self, config: ResidualFCNConfig, training: dict[str, list[Subject]], patch: int) -> dict[int, PatchSampler]:
        """Per stream with training subjects, its ``patch``^3 sampler, augmented and mirrored as this recipe says
        (the bundle's training and every variant of the tables draw patches alike)."""
        if not 0 <= self.spatial_scale < 1:
            raise InputError("config", f"spatial_scale must lie in [0, 1) (each axis scaled by 1 +/- up to it), not {self.spatial_scale}")
        spatial = SpatialAugmentation(scale=self.spatial_scale) if self.spatial_augmentation else None
        mirror = ABDOMEN.mirrored_classes() if self.mirror else None
        return {config.streams.index(m): PatchSampler([s.prepared for s in subjects], patch, config.classes, spatial, mirror)
                for m, subjects in training.items() if subjects}

    def validation_split(self, subjects: dict[str, list[Subject]]) -> tuple[list[Subject], dict[str, list[Subject]]]:
        """(held out, training per modality): ``validation`` subjects of each modality, drawn with the split's seed."""
        seed = self.seed if self.validation_seed is None else self.validation_seed
        held, training = [], {}
        for m, found in subjects.items():
            order = np.random.default_rng(seed).permutation(len(found))
            count = min(int(self.validation.get(m, 0)), len(found) - 1)
            held += [found[i] for i in order[:count]]
            training[m] = [found[i] for i in order[count:]]
        return held, training

    @property
    def preparation(self) -> Preparation:
        """How this recipe's volumes are prepared (the card passes it on to inference)."""
        require_body_threshold(self.body_threshold, "config")
        return Preparation(SPACING_MM, self.ct_window, self.body_threshold, self.trim_blank_borders)

    def intensity_augmentation(self) -> IntensityAugmentation:
        """Noise and offsets, and contrast and gamma where this recipe asks for them."""
        return IntensityAugmentation.varied_contrast() if self.contrast_augmentation else IntensityAugmentation()

    def trainer(self, config: ResidualFCNConfig, device: torch.device, learning_rate: float) -> DualStreamTrainer:
        """The trainer of ``config`` at ``learning_rate``, with this recipe's loss, augmentation and weight average (the
        bundle's training and every variant of the tables train alike)."""
        if self.weight_average is not None and not 0 < self.weight_average < 1:
            raise InputError("config", f"weight_average must lie between 0 and 1 (a decay, e.g. 0.998), not {self.weight_average}")
        return DualStreamTrainer(config, device, learning_rate=learning_rate, bfloat16=self.autocast_bfloat16(device), cross_entropy=self.cross_entropy,
                                 augment=self.intensity_augmentation(), weight_average=self.weight_average)

    def prepare(self, device: torch.device, progress: Progress) -> Job:
        if self.variant not in VARIANTS:
            raise InputError("config", f"variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        given = [m for m in MODALITIES if m in self.data]
        if not given:
            raise InputError("config", 'needs a CT or an MR data folder (in the config\'s "data" or --ct/--mr)')
        subjects = {m: load_subjects(self.data_folder(m), m, self.preparation, progress) for m in given}
        held, training = self.validation_split(subjects)
        config = ResidualFCNConfig(variant=self.variant, filters=tuple(self.filters), units_per_scale=self.units_per_scale)
        torch.manual_seed(self.seed)  # the initial weights belong to the recipe: a training is reproducible
        trainer = self.trainer(config, device, self.learning_rate)
        samplers = self.patch_samplers(config, training, self.patch)

        def validate(method: DualStreamTrainer) -> float:
            return float(np.mean([np.mean(list(subject_dice(method.delivered, s, device).values())) for s in held]))

        def card(result: TrainingResult) -> ModelCard:
            scores = {s.case_id: subject_dice(trainer.delivered, s, device) for s in held}
            validation = {"subjects": {s.case_id: s.modality for s in held}, "dice_native": scores, "average": modality_means(scores, held)}
            if self.mirror:
                mirrored = {s.case_id: subject_dice(trainer.delivered, s, device, mirror=True) for s in held}
                validation.update(dice_native_mirrored=mirrored, average_mirrored=modality_means(mirrored, held))
            return ModelCard(
                id=self.id, version=self.version, architecture="DualStreamFCN", hyperparameters=config.as_dict(), modalities=list(config.streams),
                preprocessing={**self.preparation.card_entries(), "stream_of_modality": {m: i for i, m in enumerate(config.streams)}},
                labels=ModelCard.label_entries(ABDOMEN),
                training={"data": {m: str(self.data[m]) for m in given}, "subjects": {m: [s.case_id for s in v] for m, v in training.items()},
                          **self.training_record(result, device), **({MIRRORED_PATCHES: True} if self.mirror else {})},
                validation=validation,
            )

        return Job(trainer, trainer.delivered, alternating_batches(samplers, self.batch_size), self.schedule(),
                   validate if held else None, card)


RECIPES: dict[str, type[Recipe]] = {"MMSDNet": MMSDNetRecipe, "DualStreamFCN": DualStreamRecipe}


def read_recipe(path: Path, data: dict[str, str] | None = None, **overrides: Any) -> Recipe:
    """The recipe a JSON config describes; ``data`` folders and non-``None`` ``overrides`` replace the config's."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON ({error})") from None
    architecture = config.pop("architecture", None)
    if architecture not in RECIPES:
        raise InputError(path, f"\"architecture\" must be one of {', '.join(RECIPES)}, not {architecture!r}")
    kind = RECIPES[architecture]
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(path, f"has unknown key(s) {unknown} for {architecture}; known: {', '.join(sorted(known))}")
    config["data"] = {**config.get("data", {}), **(data or {})}
    config.update({k: v for k, v in overrides.items() if v is not None})
    return kind(**config)

