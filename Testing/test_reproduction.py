"""The Table 1 runner: patient splits, fractions, statistics, and a tiny end-to-end run with resume."""

import json
from dataclasses import replace

import pytest
import torch

from crossmodal.reproduce.mmsdnet import CONTROL, ENSEMBLE, main, make_folds, significance, summarise
from crossmodal.training.evaluation import predict_patient, score_native


def test_every_labelled_patient_is_tested_exactly_once_and_splits_are_disjoint():
    labelled, unlabelled, lge_only = [1, 3, 5, 8, 11, 28, 29, 30, 33, 35], [2, 4, 6], [36, 38]
    folds = make_folds(labelled, unlabelled, lge_only)
    assert sorted(p for f in folds for p in f.test) == labelled
    for f in folds:
        assert not set(f.train) & set(f.test) and not set(f.train) & set(f.validation) and not set(f.validation) & set(f.test)
        assert set(unlabelled) <= set(f.train) and set(f.labelled_train) <= set(f.train) and len(f.validation) == 2
        assert set(lge_only) <= set(f.labelled_train)  # LGE-only patients train (their LGE masks count in the fractions)
        sizes = [len(f.lge_labelled(x)) for x in (100, 50, 25, 0)]
        assert sizes[0] == len(f.labelled_train) and sizes[3] == 0 and sizes[0] >= sizes[1] >= sizes[2] >= 1
        assert f.lge_labelled(25) <= f.lge_labelled(50) <= f.lge_labelled(100)
    with pytest.raises(ValueError, match="too few"):
        make_folds([1, 2, 3, 4, 5], [])


def run(method, fraction, fold, scores, seed=0):
    return {"method": method, "fraction": fraction, "fold": fold, "scores": scores, "seed": seed}


def patient_scores(myo, lv):
    scores = {"myocardium": myo, "left ventricle": lv, "mean": (myo + lv) / 2}
    return {"volume": scores, "slices": scores}


def test_summary_pools_folds_and_the_test_compares_with_the_best_other_method():
    runs = [
        run("baselines", 0, 0, {"copy masks": {str(p): patient_scores(0.3, 0.5) for p in range(6)}}),
        run("UNet-single", 100, 0, {"UNet-single": {str(p): patient_scores(0.5 + p / 100, 0.8) for p in range(6)}}),
        run("MMSDNet", 100, 0, {"MMSDNet-multi": {str(p): patient_scores(0.7 + p / 50, 0.9) for p in range(6)},
                               "MMSDNet-single": {str(p): patient_scores(0.6, 0.85) for p in range(6)}}),
    ]
    table = summarise(runs)
    assert table["copy masks"].keys() == {"100", "50", "25", "0"}  # fraction-independent rows fill every column
    assert table["UNet-single"].keys() == {"100"}
    assert table["MMSDNet-multi"]["100"]["volume_myocardium"]["mean"] == pytest.approx(0.75)
    assert table["MMSDNet-multi"]["100"]["volume_mean"]["mean"] == pytest.approx(0.825)
    tests = significance(table)
    assert tests["MMSDNet-multi"]["100"]["against"] == "UNet-single" and tests["MMSDNet-multi"]["100"]["difference"] > 0
    assert ENSEMBLE not in tests  # not run


def test_the_ensemble_is_tested_against_the_best_method_without_mmsdnet():
    runs = [run("UNet-single", 100, 0, {"UNet-single": {str(p): patient_scores(0.7, 0.8) for p in range(6)}}),
            run("MMSDNet", 100, 0, {"MMSDNet-multi": {str(p): patient_scores(0.9, 0.9) for p in range(6)}}),
            run(ENSEMBLE, 100, 0, {ENSEMBLE: {str(p): patient_scores(0.75 + p / 100, 0.85) for p in range(6)},
                                   CONTROL: {str(p): patient_scores(0.78, 0.8) for p in range(6)}})]
    tests = significance(summarise(runs))
    assert tests[ENSEMBLE]["100"]["against"] == "UNet-single"  # never MMSDNet-multi or the control, which contain MMSDNet
    assert tests[ENSEMBLE]["100"]["difference"] == pytest.approx(0.0625)
    assert tests[f"{ENSEMBLE} vs control"]["100"]["against"] == CONTROL
    assert tests[f"{ENSEMBLE} vs control"]["100"]["difference"] == pytest.approx(0.0225)
    assert tests["MMSDNet-multi"]["100"]["against"] == "UNet-single"


def test_a_patient_tested_with_several_seeds_counts_once_at_its_mean_over_them():
    runs = [run("MMSDNet", 0, 0, {"MMSDNet-multi": {"1": patient_scores(0.6, 0.8), "2": patient_scores(0.7, 0.9)}}, seed=0),
            run("MMSDNet", 0, 0, {"MMSDNet-multi": {"1": patient_scores(0.4, 0.6), "2": patient_scores(0.7, 0.9)}}, seed=1)]
    cell = summarise(runs)["MMSDNet-multi"]["0"]
    assert cell["patients"] == ["1", "2"]
    assert cell["volume_myocardium"]["values"] == pytest.approx([0.5, 0.7])
    assert cell["seed_means"] == pytest.approx({"0": 0.75, "1": 0.65})


def test_a_tiny_run_end_to_end_writes_the_table_and_resumes(phantom_mscmrseg, tmp_path, capsys):
    args = ["--data", str(phantom_mscmrseg), "--out", str(tmp_path), "--folds", "0", "--fractions", "100", "0",
            "--methods", "MMSDNet", "UNet-single", "--steps", "2", "--schedule", "reduced"]
    assert main(args) == 0
    result = json.loads((tmp_path / "table1.json").read_text())
    assert {"MMSDNet-multi", "MMSDNet-single", "UNet-single"} <= result["table"].keys()
    assert "0" not in result["table"]["UNet-single"]  # no labelled LGE at 0 %: cannot train
    assert json.loads((tmp_path / "runs" / "0-UNet-single-0-0.json").read_text())["trained"] is False
    assert sorted(p.name for p in (tmp_path / "runs").glob("0-MMSDNet-*")) == [f"0-MMSDNet-{f}-{s}.json" for f in (0, 100) for s in (0, 1)]
    assert "| MMSDNet-multi |" in (tmp_path / "table1.md").read_text(encoding="utf-8")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == stamps
    assert '"event": "run"' not in capsys.readouterr().out  # nothing re-trained


def test_the_ensemble_averages_its_members_trained_as_their_own_rows(phantom_mscmrseg):
    """The ensemble's members are exactly MMSDNet and UNet-single trained alone with the same seed; its scores are
    those of their averaged probabilities, with and without the cine; it cannot train where UNet-single cannot."""
    from crossmodal.datasets import discover_mscmrseg
    from crossmodal.pairing import PairingConfig
    from crossmodal.reproduce.mmsdnet import SCHEDULES, run_fold_method, train_fold_method
    from crossmodal.training.cardiac_data import load_patient

    cases = [c for c in discover_mscmrseg(phantom_mscmrseg) if c.is_pair]
    patients = {c.patient: load_patient(c, PairingConfig(spacing_mm=2.0, size=96)) for c in cases}
    labelled = sorted(p for p in patients if patients[p].lge_reference is not None)
    fold = make_folds(labelled, sorted(set(patients) - set(labelled)))[0]
    schedule = replace(SCHEDULES["reduced"], steps=2, validate_every=1, filters=4)
    device = torch.device("cpu")
    result = run_fold_method(fold, ENSEMBLE, 100, patients, schedule, device, seed=3)
    assert set(result["scores"]) == {ENSEMBLE, CONTROL} and set(result["member_scores"]) == {"MMSDNet-multi", "MMSDNet-single", "UNet-single"}
    members = [train_fold_method(fold, name, 100, patients, schedule, device, seed=3)[0] for name in ("MMSDNet", "UNet-single")]
    test = patients[fold.test[0]]
    mmsdnet, unet = predict_patient(members[0], test), predict_patient(members[1], test)["UNet-single"]
    assert result["member_scores"]["UNet-single"][str(test.patient)] == score_native(test, unet)
    assert result["scores"][ENSEMBLE][str(test.patient)] == score_native(test, (mmsdnet["MMSDNet-multi"] + unet) / 2)
    assert result["scores"][CONTROL][str(test.patient)] == score_native(test, (mmsdnet["MMSDNet-single"] + unet) / 2)
    assert run_fold_method(fold, ENSEMBLE, 0, patients, schedule, device, seed=3)["trained"] is False


def test_the_bundle_is_compared_with_a_unet_on_its_own_split_and_their_ensemble_is_written_as_a_bundle(models, phantom_mscmrseg, tmp_path):
    """UNet-single trains on the bundle's recipe and is scored on the bundle's validation patients beside the
    bundle and the two averaged; the ensemble bundle written computes exactly what was scored, and is itself a
    bundle to compare (by its MMSDNet)."""
    from crossmodal.bundles import LGE_UNET, load_bundle, read_card
    from crossmodal.nets.ensemble import LGEEnsemble
    from crossmodal.reproduce import bundle_baseline
    from crossmodal.training.methods import MMSDNetMethod
    from crossmodal.training.recipes import read_recipe

    out, ensemble = tmp_path / "baseline", tmp_path / "ensemble"
    assert bundle_baseline.main(["--bundle", str(models["cardiac"]), "--data", str(phantom_mscmrseg), "--out", str(out),
                                 "--filters", "4", "--steps", "2", "--device", "cpu", "--ensemble", str(ensemble), "--version", "9.0.0"]) == 0
    result = json.loads((out / "bundle_baseline.json").read_text())
    card = read_card(models["cardiac"])
    held_out = [str(p) for p in card.validation["patients"]]
    assert {name: sorted(rows) for name, rows in result["dice_native_lge"].items()} == {
        name: held_out for name in ("MMSDNet-multi", "MMSDNet-single", "UNet-single", ENSEMBLE, CONTROL)}
    for name in ("MMSDNet-multi", "MMSDNet-single"):  # the bundle scored again gives its card's figures
        for p in held_out:
            assert result["dice_native_lge"][name][p] == pytest.approx(card.validation["dice_native_lge"][p][name])
    assert all(0 <= v <= 1 for v in result["dice_native_lge"]["UNet-single"][held_out[0]].values())
    assert result["meta"]["steps"] == 2 and list(result["meta"]["validation_curve"]) == ["2"]
    assert "| UNet-single |" in (out / "bundle_baseline.md").read_text(encoding="utf-8")

    written, network = load_bundle(ensemble)
    assert isinstance(network, LGEEnsemble) and written.version == "9.0.0" and written.hyperparameters[LGE_UNET]["filters"] == 4
    assert written.weights_dtype == "float16"
    assert (ensemble / "recipe.json").read_text() == (models["cardiac"] / "recipe.json").read_text()
    patient = next(p for p in read_recipe(ensemble / "recipe.json", data={"mscmrseg": str(phantom_mscmrseg)}).split(lambda *_: None).validation)
    shipped = MMSDNetMethod(network.config, torch.device("cpu"))
    shipped.network = network  # the product's network, read through the reproduction's prediction
    predicted = predict_patient(shipped, patient)
    for name, row in (("MMSDNet-multi", ENSEMBLE), ("MMSDNet-single", CONTROL)):
        scored = written.validation["dice_native_lge"][str(patient.patient)][row]
        assert score_native(patient, predicted[name])["volume"] == pytest.approx(scored, abs=1e-6), row
    before = (ensemble / "model.pt").read_bytes()
    with pytest.raises(SystemExit):  # an existing bundle is never overwritten
        bundle_baseline.main(["--bundle", str(models["cardiac"]), "--data", str(phantom_mscmrseg), "--out", str(out),
                              "--ensemble", str(ensemble), "--version", "9.0.1"])
    assert (ensemble / "model.pt").read_bytes() == before and read_card(ensemble).version == "9.0.0"
    # Given the ensemble, the comparison takes its MMSDNet: the bundle's rows come out as before.
    assert bundle_baseline.main(["--bundle", str(ensemble), "--data", str(phantom_mscmrseg), "--out", str(tmp_path / "again"),
                                 "--filters", "4", "--steps", "2", "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "again" / "bundle_baseline.json").read_text())["dice_native_lge"]
    for p in held_out:
        assert again["MMSDNet-multi"][p] == pytest.approx(result["dice_native_lge"]["MMSDNet-multi"][p])
