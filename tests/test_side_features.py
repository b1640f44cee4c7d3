"""Side features without a trained model: what is learned on the training columns, how raw
values (missing, unseen) are encoded, and the bad inputs refused in one sentence. The trained
and exported path is tests/test_text_regression.py (its sample data has side columns)."""

import json
import math

import numpy as np
import pytest

import helpers
from tfimitate import workflow
from tfimitate.errors import UserError
from tfimitate.tasks import side_features

NAN = math.nan


def test_learned_on_the_training_columns_and_encoded_with_missing_and_unseen_values():
    stats = json.loads(side_features.learn(
        {"votes": [10.0, NAN, 30.0]}, {"genre": ["news", "forum", "news", ""]}, "train.csv"))
    assert stats == {"numeric": {"votes": [20.0, 10.0]},
                     "categorical": {"genre": ["news", "forum"]}}
    assert side_features.width(stats) == 2 + 4
    import tensorflow as tf

    encoded = side_features.encode(stats, {
        "votes": tf.constant([40.0, NAN, 20.0]),
        "genre": tf.constant(["forum", "", "sports"])}).numpy()
    np.testing.assert_allclose(encoded, [
        # votes, missing | news, forum, unseen, missing
        [2.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 1.0],   # missing: the mean (0 scaled) + indicators
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])  # an unseen value: the out-of-vocabulary slot


def test_a_categorical_column_with_one_value_is_warned_about(monkeypatch):
    warned = []
    monkeypatch.setattr(side_features.logging, "warning", lambda *a: warned.append(a[0] % a[1:]))
    side_features.learn({}, {"plan": ["pro", "pro", ""]}, "train.csv")
    assert warned == ["train.csv: --categorical_columns=plan has one value only ('pro') in the "
                      "training data; it cannot tell examples apart."]


def test_missing_cells_and_bad_numbers():
    assert math.isnan(side_features.parse_numeric("", "t.csv:2", "votes"))
    assert math.isnan(side_features.parse_numeric(None, "t.jsonl:2", "votes"))  # JSON null
    assert side_features.parse_numeric(" 4.5 ", "t.csv:2", "votes") == 4.5
    assert side_features.parse_categorical("null") == "" and side_features.parse_categorical(" a ") == "a"
    with pytest.raises(UserError, match=r"^t.csv:7: --numeric_columns=votes holds 'many', not a "
                                        r"number; fix the row, or leave the cell empty"):
        side_features.parse_numeric("many", "t.csv:7", "votes")


def _rows_flags(tmp_path, **changes):
    train = helpers.write_lines(tmp_path, "train.csv", [
        "text,genre,votes,label", "a b,news,3,1.0", "b c,forum,,2.0", "c d,news,x9,3.0"])
    return helpers.experiment(tmp_path, task="text_regression", train_data=train,
                              backbone=helpers.tiny_bert_preset(tmp_path), **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(numeric_columns=("votes",)), r"train.csv:4: --numeric_columns=votes holds 'x9'"),
    (dict(numeric_columns=("votes",), categorical_columns=("votes",)),
     r"--categorical_columns: column 'votes' is named twice \(also by --numeric_columns\)"),
    (dict(categorical_columns=("label",)),
     r"--categorical_columns: column 'label' is named twice \(also by --label_column\)"),
])
def test_bad_side_columns_are_one_error_and_write_nothing(tmp_path, changes, message):
    cfg = _rows_flags(tmp_path, **changes)
    with pytest.raises(UserError, match=message):
        workflow.train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a training and an export (about 30 s of CPU); text_regression's test and
# contract cover the same side-feature code in the default run
def test_a_text_classifier_with_side_features_serves_raw_values_and_missing_ones(tmp_path):
    """Side features work for classification too: learned on the training split, joined to
    the pooled output, encoded inside the export; `classify` takes tf.Examples that leave them
    out (missing) and agrees with serving_default given the missing values."""
    import tensorflow as tf

    from tfimitate import runs
    from tfimitate.serving import inference

    rows = ["text,plan,age,label"] + [
        f"{text},{['pro', 'free', ''][i % 3]},{'' if i % 5 == 0 else i},{label}"
        for i, (text, label) in enumerate(helpers.sentiment_rows(24))]
    train = helpers.write_lines(tmp_path, "train.csv", rows)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path), max_steps=2,
                             train_data=train, eval_data=train, numeric_columns=("age",),
                             categorical_columns=("plan",), export_dir=str(tmp_path / "export"))
    workflow.train(cfg)
    stats = json.loads(runs.experiment(cfg.model_dir).side_feature_stats)
    assert stats["categorical"]["plan"] == ["free", "pro"] and "age" in stats["numeric"]
    loaded = tf.saved_model.load(str(tmp_path / "export" / "1"))
    texts = ["a good film", "an awful plot"]
    served = loaded.signatures["serving_default"](
        text=tf.constant(texts), plan=tf.constant(["", ""]),
        age=tf.constant([NAN, NAN], tf.float32))["probabilities"].numpy()
    classified = loaded.signatures["classify"](
        inputs=tf.constant(inference.to_examples({"text": texts})))["scores"].numpy()
    np.testing.assert_allclose(classified, served, atol=1e-6)
    other = loaded.signatures["serving_default"](
        text=tf.constant(texts), plan=tf.constant(["pro", "enterprise"]),
        age=tf.constant([3.0, 90.0], tf.float32))["probabilities"].numpy()
    assert not np.allclose(other, served)  # the side features reach the head


def test_a_plain_text_input_to_a_run_with_side_features_is_refused(tmp_path):
    from tfimitate import tasks

    texts = helpers.write_lines(tmp_path, "input.txt", ["a good film"])
    for task in ("text_regression", "text_classification"):
        cfg = helpers.experiment(tmp_path, task=task, categorical_columns=("genre",))
        with pytest.raises(UserError, match=r"input.txt: this run reads side features; give a "
                                            r"table with the --numeric_columns"):
            tasks.get_task(task).read_file(texts, cfg, "--input", with_labels=False)
