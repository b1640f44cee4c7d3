"""The run directory's layout helpers (runs.py); restore is covered by the contract tests."""

import json
import os

import pytest

import helpers
from tfimitate import runs
from tfimitate.errors import UserError


def test_serving_examples_round_trip_bytes_as_base64(tmp_path):
    examples = {"text": ["a good film", "dull"], "image": [b"\x89PNG\x00", b"\xff\xd8"]}
    runs.save_serving_examples(str(tmp_path), examples)
    with open(tmp_path / runs.SERVING_EXAMPLES_FILE) as f:
        assert json.load(f)["image"][0] == {"b64": "iVBORwA="}
    cfg = helpers.experiment(tmp_path, model_dir=str(tmp_path))
    assert runs.load_serving_examples(None, cfg) == examples  # no task needed when saved


def test_layout_paths(tmp_path):
    model_dir = str(tmp_path)
    assert runs.eval_path(model_dir, "metrics.json") == os.path.join(model_dir, "eval",
                                                                     "metrics.json")
    assert runs.fold_dir(model_dir, 2) == os.path.join(model_dir, "folds", "2")
    assert not runs.is_run(model_dir)
    helpers.experiment(tmp_path).save(model_dir)
    assert runs.is_run(model_dir) and runs.experiment(model_dir).model_dir == model_dir


def test_evaluation_is_saved_with_its_figures(tmp_path):
    drawn = []
    path = runs.save_evaluation(str(tmp_path), "metrics", {"score": 0.5},
                                {"confusion_matrix": drawn.append})
    assert path == runs.eval_path(str(tmp_path), "metrics.json")
    assert drawn == [runs.eval_path(str(tmp_path), "metrics_confusion_matrix.png")]
    with open(path) as f:
        assert json.load(f) == {"score": 0.5}


def test_checkpoint_dirs_of_a_run_and_its_folds(tmp_path):
    for relative in ("checkpoints", "folds/0/checkpoints", "folds/1/eval"):
        os.makedirs(tmp_path / relative)
    assert runs.checkpoint_dirs(str(tmp_path)) == ["checkpoints",
                                                   os.path.join("folds", "0", "checkpoints")]


def test_an_export_names_the_run_it_came_from(tmp_path):
    from tfimitate.serving import export as export_lib

    run_dir, version = str(tmp_path / "run"), str(tmp_path / "export" / "1")
    helpers.experiment(tmp_path).save(run_dir)
    assert runs.exported_from(version) == {}
    export_lib.record_source(version, runs.export_source(run_dir, 7))
    assert runs.exported_from(version)["step"] == 7
    assert runs.exported_run(version) == os.path.abspath(run_dir)
    export_lib.record_source(version, runs.export_source(str(tmp_path / "gone"), 7))
    with pytest.raises(UserError, match="does not name a run that still exists"):
        runs.exported_run(version)


def test_labels_file_is_one_label_a_line(tmp_path):
    path = runs.write_labels(str(tmp_path), ("neg", "pos"))
    assert os.path.basename(path) == "labels.txt"
    with open(path) as f:
        assert f.read() == "neg\npos\n"
