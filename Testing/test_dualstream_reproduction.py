"""The dual-stream Tables 1-3 runner: splits, summary, and a tiny end-to-end run on synthetic data."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import write_phantom_nnunet

from crossmodal.bundles import load_bundle, save_bundle
from crossmodal.catalog import recipe_of
from crossmodal.cli import EXIT_INPUT_ERROR
from crossmodal.cli import main as crossmodal
from crossmodal.errors import InputError
from crossmodal.nets.ensemble import DualStreamEnsemble
from crossmodal.report import model_section
from crossmodal.reproduce.dualstream import recorded_choices, split, summarise, training_choices, versus_individual
from crossmodal.reproduce.dualstream_ensemble import main as ensemble_main
from crossmodal.training.recipes import load_subjects, read_recipe, subject_dice


def test_two_folds_partition_the_subjects_differently_per_repeat():
    subjects = list(range(7))
    for repeat in range(3):
        a, b = split(subjects, repeat)
        assert sorted(a + b) == subjects and abs(len(a) - len(b)) <= 1
    assert split(subjects, 0) != split(subjects, 1)


def scores(value):
    return {"liver": value, "right kidney": value, "left kidney": value, "spleen": value}


def test_summary_averages_cases_and_reports_the_spread_over_repeats():
    runs = [
        {"variant": "V4", "repeat": 0, "scores": {"CT": {"a": scores(0.8), "b": scores(0.6)}, "MR": {"c": scores(0.9)}}},
        {"variant": "V4", "repeat": 1, "scores": {"CT": {"a": scores(0.9), "b": scores(0.9)}, "MR": {"c": scores(0.7)}}},
    ]
    table = summarise(runs)
    assert table["V4"]["CT"]["average"] == pytest.approx(0.8) and table["V4"]["CT"]["cases"] == 4
    assert table["V4"]["CT"]["std_over_repeats"] == pytest.approx(0.1)  # repeat means 0.7 and 0.9
    assert table["V4"]["all"] == pytest.approx(0.8)
    assert "Individual" not in table


def test_variants_are_compared_with_individual_on_the_same_cases_at_their_mean_over_repeats():
    runs = [{"variant": v, "repeat": r, "scores": {"MR": {c: scores(base + gain * (r + 1) + 0.01 * i) for i, c in enumerate("abcdef")}}}
            for v, gain in (("Individual", 0.0), ("V4", 0.02)) for r, base in ((0, 0.70), (1, 0.72))]
    runs.append({"variant": "V4", "repeat": 2, "scores": {"MR": {"z": scores(0.99)}}})  # a case Individual never saw: not paired
    tests = versus_individual(runs)
    assert set(tests) == {"V4"} and set(tests["V4"]) == {"MR"}
    mr = tests["V4"]["MR"]
    assert mr["cases"] == 6 and mr["average"] == pytest.approx(0.03) and mr["spleen"] == pytest.approx(0.03)  # (0.02 + 0.04) / 2
    assert mr["p_value"] < 0.05  # six of six cases better
    same = [{**run, "variant": "V1"} for run in runs if run["variant"] == "Individual"]
    assert versus_individual(runs[:2] + same)["V1"]["MR"] == {**scores(0.0), "average": 0.0, "p_value": 1.0, "cases": 6}


def test_a_tiny_run_end_to_end_speaks_the_events_schema(tmp_path, capsys):
    ct = write_phantom_nnunet(tmp_path / "ct", "CT", 2)
    mr = write_phantom_nnunet(tmp_path / "mr", "MR", 2)
    out = tmp_path / "out"
    assert crossmodal(["reproduce", "--events", "jsonl", "dualstream", "--ct", str(ct), "--mr", str(mr), "--out", str(out), "--repeats", "1",
                       "--variants", "V4", "Individual", "--schedule", "tiny"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # every line an event, as from every subcommand
    runs = [(e["done"], e["total"]) for e in events if e["type"] == "progress" and e["stage"] == "runs"]
    assert runs[0] == (0, 4) and runs[-1] == (4, 4) and len([e for e in events if e["type"] == "metrics"]) == 4
    assert events[-1]["type"] == "result" and events[-1]["outputs"] == {"markdown": str(out / "tables.md"), "json": str(out / "tables.json")}
    result = json.loads((out / "tables.json").read_text())
    assert set(result["table"]) == {"V4", "Individual"}
    assert {"MR", "CT", "all"} <= result["table"]["V4"].keys()
    assert len(list((out / "runs").glob("*.json"))) == 4  # 2 folds x 2 variants
    assert "## Table 3: all organs" in (out / "tables.md").read_text(encoding="utf-8")
    assert set(result["against_individual"]) == {"V4"} and result["against_individual"]["V4"]["CT"]["cases"] == 2

    # Every run trains as the bundled V4's recipe does, and says so; a store trained otherwise is not mixed in.
    bundled = training_choices(read_recipe(recipe_of(None, "abdominal")))
    assert result["meta"]["training"] == bundled and all(json.loads(p.read_text())["training"] == bundled for p in (out / "runs").glob("*.json"))
    first = sorted((out / "runs").glob("*.json"))[0]
    first.write_text(json.dumps({**json.loads(first.read_text()), "training": {**bundled, "cross_entropy": not bundled["cross_entropy"]}}))
    capsys.readouterr()
    assert crossmodal(["reproduce", "--events", "jsonl", "dualstream", "--ct", str(ct), "--mr", str(mr), "--out", str(out), "--repeats", "1",
                       "--variants", "V4", "Individual", "--schedule", "tiny"]) == EXIT_INPUT_ERROR
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "1 run(s) trained otherwise" in error["message"] and "its own --out" in error["message"]

    # ... nor runs of a network whose shared layers averaged one batch-norm statistic over both modalities.
    first.write_text(json.dumps({**json.loads(first.read_text()), "training": {k: v for k, v in bundled.items() if k != "network_design"}}))
    assert crossmodal(["reproduce", "--events", "jsonl", "dualstream", "--ct", str(ct), "--mr", str(mr), "--out", str(out), "--repeats", "1",
                       "--variants", "V4", "Individual", "--schedule", "tiny"]) == EXIT_INPUT_ERROR
    assert "1 run(s) trained otherwise" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]

    # ... nor runs of another length: the schedule is part of how a run was trained.
    first.write_text(json.dumps({**json.loads(first.read_text()), "training": bundled}))
    assert crossmodal(["reproduce", "--events", "jsonl", "dualstream", "--ct", str(ct), "--mr", str(mr), "--out", str(out), "--repeats", "1",
                       "--variants", "V4", "Individual", "--schedule", "tiny", "--steps", "3"]) == EXIT_INPUT_ERROR
    assert "4 run(s) trained otherwise" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]


def test_a_learning_curve_scores_the_test_volumes_along_one_training(tmp_path, capsys):
    ct = write_phantom_nnunet(tmp_path / "ct", "CT", 2)
    mr = write_phantom_nnunet(tmp_path / "mr", "MR", 2)
    out = tmp_path / "out"
    assert crossmodal(["reproduce", "--events", "jsonl", "dualstream", "--ct", str(ct), "--mr", str(mr), "--out", str(out),
                       "--schedule", "tiny", "--steps", "5", "--curve", "V4", "--every", "2"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["outputs"]["json"] == str(out / "curve-V4.json")
    points = json.loads((out / "curve-V4.json").read_text())["points"]
    assert [p["step"] for p in points] == [2, 4, 5]  # every 2 steps and at the end
    assert all(0 <= p[m]["average"] <= 1 and set(p[m]) == {"liver", "right kidney", "left kidney", "spleen", "average"} for p in points for m in ("MR", "CT"))
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())  # no table runs
    assert "| 4 |" in (out / "curve-V4.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("folder", "body_threshold"), [("dualstream-tables", "otsu"), ("dualstream-tables-li", "li"), ("dualstream-tables-average", "li")])
def test_the_committed_tables_resume_with_the_recipe_they_were_trained_with(folder, body_threshold):
    """Each committed tables folder keeps the recipe its runs were trained with (2.0.0's found the body with Otsu's
    threshold before it was a recipe key; 2.2.0's with Li's, with and without a moving average of the weights), all
    36 runs of each, so the documented command (``--recipe`` that folder) still resumes it after the bundled recipe
    moves on, and a recipe that finds the body otherwise does not mix in."""
    from pathlib import Path

    tables = Path(__file__).resolve().parents[1] / "Documentation" / "measurements" / folder
    trained_as = training_choices(read_recipe(recipe_of(tables)))
    assert trained_as["body_threshold"] == body_threshold
    runs = [json.loads(p.read_text()) for p in sorted((tables / "runs").glob("*.json"))]
    assert len(runs) == 36 and all(recorded_choices(run) == trained_as for run in runs)
    other = "li" if body_threshold == "otsu" else "otsu"
    assert all(recorded_choices(run) != {**trained_as, "body_threshold": other} for run in runs)


def test_a_seed_ensemble_is_scored_beside_its_members_and_written_as_a_float16_bundle(models, tmp_path):
    first, second = models["abdominal"], tmp_path / "seed1"
    card, network = load_bundle(first)
    with torch.no_grad():  # another training of the same recipe: other weights, its own seed on record
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    training = {**card.training, "recipe": {**card.training["recipe"], "seed": 1, "validation_seed": 0}}
    older = {k: v for k, v in card.preprocessing.items() if k != "trim_blank_borders"}  # a card from before the key: trimming off
    save_bundle(second, network, replace(card, training=training, preprocessing=older))
    shutil.copyfile(first / "recipe.json", second / "recipe.json")
    out, bundle = tmp_path / "table", tmp_path / "ensemble"
    assert ensemble_main(["--members", str(first), str(second), "--out", str(out), "--bundle", str(bundle), "--version", "9.0.0"]) == 0

    rows = json.loads((out / "dualstream_ensemble.json").read_text())["rows"]
    assert list(rows) == ["tiny-v4 1.0.0 (seed 0)", "tiny-v4 1.0.0 (seed 1)", "ensemble of 2"]
    card, network = load_bundle(bundle)
    assert isinstance(network, DualStreamEnsemble) and card.version == "9.0.0" and card.weights_dtype == "float16"
    assert card.network_name == "DualStreamFCN x 2 (seed ensemble)"
    assert [m["recipe"]["seed"] for m in card.training["members"]] == [0, 1]
    assert "seed 0: 2 steps" in model_section(card, bundle) and "seed 1: 2 steps" in model_section(card, bundle)
    assert card.validation["dice_native"] == rows["ensemble of 2"]["dice_native"]
    assert read_recipe(bundle / "recipe.json").seed == 0  # training again from the bundle trains its first member's recipe
    # Its validation is what the stored weights deliver.
    held = {s.case_id: s for s in load_subjects(card.training["data"]["CT"], "CT", read_recipe(bundle / "recipe.json").preparation)}
    case = next(c for c, m in card.validation["subjects"].items() if m == "CT")
    assert subject_dice(network, held[case], torch.device("cpu")) == card.validation["dice_native"][case]

    with pytest.raises(InputError, match="same weights twice"):
        ensemble_main(["--members", str(first), str(first), "--out", str(out)])
    with pytest.raises(InputError, match="single dual-stream networks"):
        ensemble_main(["--members", str(first), str(bundle), "--out", str(out)])
    other_split = tmp_path / "other-split"
    shutil.copytree(second, other_split)
    written = json.loads((other_split / "card.json").read_text())
    written["validation"]["subjects"] = {"elsewhere": "CT"}
    (other_split / "card.json").write_text(json.dumps(written))
    with pytest.raises(InputError, match="validation subjects"):
        ensemble_main(["--members", str(first), str(other_split), "--out", str(out)])
    written["validation"]["subjects"] = card.validation["subjects"]
    written["preprocessing"]["trim_blank_borders"] = True
    (other_split / "card.json").write_text(json.dumps(written))
    with pytest.raises(InputError, match="in preprocessing"):
        ensemble_main(["--members", str(first), str(other_split), "--out", str(out)])
    with pytest.raises(SystemExit):  # a finished bundle is never overwritten
        ensemble_main(["--members", str(first), str(second), "--out", str(out), "--bundle", str(bundle), "--version", "9.0.1"])
