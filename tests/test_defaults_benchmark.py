"""benchmarks/defaults.py's grid and plan, and defaults_report.py's table, on fake results."""

import os

from benchmarks import defaults, defaults_report

STEPS = {"text": 150, "lora": 150, "ner": 150, "head": 150, "regression": 150, "image": 80}
DATA = {name: [f"--train_data={name}"] for names in defaults.DATASETS.values() for name in names}


def record(score, learning_rate=None, frozen=False):
    return {"score": score, "resolved": {"learning_rate": learning_rate, "frozen": frozen}}


def test_text_grid_leaves_out_the_defaults_point_and_freezes_a_quarter_at_the_same_rate():
    points = defaults.grid_points("text", 5e-5, False, 150)
    assert list(points) == ["lr=1.5e-05/freeze=off", "lr=5e-05/freeze=on", "lr=0.00015/freeze=off"]
    assert points["lr=5e-05/freeze=on"] == [
        "--learning_rate=5e-05", "--freeze_backbone_steps=38", "--fine_tune_learning_rate=5e-05"]


def test_image_grid_has_five_points_around_a_frozen_default_and_turns_the_recipe_off():
    points = defaults.grid_points("image", 1e-3, True, 80, off_flags=["--freeze_backbone_fraction=0"])
    assert len(points) == 5 and "lr=0.001/freeze=on" not in points
    assert points["lr=0.001/freeze=off"] == ["--learning_rate=0.001", "--freeze_backbone_fraction=0"]
    assert points["lr=0.003/freeze=on"] == ["--learning_rate=0.003", "--freeze_backbone_steps=60"]


def test_a_regression_grid_keeps_the_defaults_frozen_phase_at_other_rates():
    assert list(defaults.grid_points("regression", 3e-3, True, 150)) == [
        "lr=0.0009/freeze=on", "lr=0.003/freeze=off", "lr=0.009/freeze=on"]
    assert defaults.grid_points("regression", 3e-3, True, 150)["lr=0.009/freeze=on"] == [
        "--learning_rate=0.009", "--freeze_backbone_steps=75", "--fine_tune_learning_rate=1.5e-4",
        "--keep_best_phase"]


def test_lora_and_head_only_grids_are_rates_only():
    assert list(defaults.grid_points("lora", 5e-3, False, 150)) == [
        "lr=0.0015/freeze=off", "lr=0.015/freeze=off"]
    assert list(defaults.grid_points("head", 0.1, False, 150)) == [
        "lr=0.03/freeze=off", "lr=0.3/freeze=off"]


def test_plan_puts_the_target_critical_runs_first_and_waits_for_loras_rate():
    order = list(defaults.plan({}, DATA, STEPS))
    assert order[:4] == ["fashion_mnist/image/defaults", "fashion_mnist/image/plain_keras_hub",
                         "mnist_5k/image/defaults", "mnist_5k/image/plain_keras_hub"]
    assert order.index("rotten_tomatoes/lora/defaults") < order.index("conll2003/ner/defaults")
    assert not any(key.startswith("sst2/lora/lr=") for key in order)
    done = {"sst2/lora/defaults": record(80.0, 5e-3)}
    assert "sst2/lora/lr=0.015/freeze=off" in defaults.plan(done, DATA, STEPS)


def test_plan_centres_the_grid_on_the_resolved_rate():
    done = {"sst2/text/defaults": record(85.0, 1e-4)}
    keys = defaults.plan(done, DATA, STEPS, defaults_for=())
    assert "sst2/text/lr=0.0003/freeze=off" in keys and "sst2/text/lr=1.5e-05/freeze=off" not in keys
    assert not any(key.endswith("/defaults") for key in keys)


def test_table_gap_and_targets():
    results = {
        "sst2/text/defaults": record(85.0, 5e-5), "sst2/text/lr=0.00015/freeze=off": record(86.5),
        "sst2/lora/defaults": record(83.5, 5e-3), "sst2/lora/lr=0.015/freeze=off": record(84.0),
        "fashion_mnist/image/defaults": record(80.0, 1e-3, True),
        "fashion_mnist/image/plain_keras_hub": record(80.5),
    }
    rows = {(r["dataset"], r["family"]): r for r in defaults_report.table(
        results, {"text": ["sst2"], "lora": ["sst2"], "image": ["fashion_mnist"]},
        {"text": 3, "lora": 1, "image": 5})}
    text, lora, image = rows["sst2", "text"], rows["sst2", "lora"], rows["fashion_mnist", "image"]
    assert (text["gap"], text["grid_best_point"]) == (1.5, "lr=0.00015/freeze=off")
    assert text["targets"] == {"defaults within 1 pt of grid best": "missed"}
    assert lora["targets"] == {"defaults within 1 pt of grid best": "met",
                               "within 2 pts of full fine-tuning defaults": "met"}
    assert image["targets"] == {"defaults within 1 pt of grid best": "pending (0/5 points)",
                                "defaults >= plain keras-hub script": "missed"}
    text_md = defaults_report.markdown(list(rows.values()), results)
    assert "| sst2 | text_classification (full fine-tuning) | 85.0 (lr 5e-05) |" in text_md


def test_a_run_claimed_by_a_live_process_is_left_to_it(tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "sst2__text__defaults").write_text(str(os.getppid()))   # alive: not ours
    assert not defaults.claim("sst2/text/defaults", str(tmp_path))
    (claims / "sst2__text__defaults").write_text("999999999")          # gone: taken over
    assert defaults.claim("sst2/text/defaults", str(tmp_path))
    assert defaults.claim("sst2/text/defaults", str(tmp_path))          # ours already
