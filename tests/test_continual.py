"""Learning without forgetting: --init_from continues another run (head rows by label),
--replay_data mixes old examples into every batch, --retain_eval_data reports forgetting,
and L2-SP anchors to the continued run's weights."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import helpers
from samples import TASK_DATA, TEXT_TASKS
from tfimitate import runs, workflow
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.tasks import base, get_task
from tfimitate.techniques import l2sp, replay


def _relabel(directory, name, rows, names):
    return helpers.write_table(directory, name, [(text, names[label]) for text, label in rows])


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A 4-step text run with labels 0/1, and its data relabelled b (for 0) / a (for 1)."""
    directory = tmp_path_factory.mktemp("continual")
    flags, _ = TASK_DATA["text_classification"](directory)
    cfg = helpers.experiment(directory, backbone=helpers.tiny_bert_preset(directory),
                             max_steps=4, **dict(flags, test_data=None))
    metrics = workflow.train(cfg)
    names = {"0": "b", "1": "a"}
    data = dict(train=_relabel(directory, "new_train.csv", helpers.sentiment_rows(24, seed=5), names),
                old_train=_relabel(directory, "old_train.csv", helpers.sentiment_rows(48), names),
                old_eval=_relabel(directory, "old_eval.csv", helpers.sentiment_rows(16, seed=1),
                                  names))
    return directory, Experiment.load(cfg.model_dir), metrics, data


@pytest.mark.slow
def test_continued_run_starts_from_the_old_weights_with_head_rows_mapped(old_run, tmp_path,
                                                                           monkeypatch):
    """learning_rate 0 keeps the starting weights, so they can be read back."""
    directory, old_cfg, old_metrics, data = old_run
    cfg = old_cfg.replace(model_dir=str(tmp_path / "new"), labels=None, train_data=data["train"],
                          eval_data=data["old_eval"], init_from=old_cfg.model_dir,
                          label_map=("a=1", "b=0"), replay_data=data["old_train"],
                          retain_eval_data=data["old_eval"], l2sp=0.1, learning_rate=0.0,
                          max_steps=2)
    made = []
    original = l2sp.from_config
    monkeypatch.setattr(l2sp, "from_config", lambda cfg: made.append(original(cfg)) or made[-1])
    metrics = workflow.train(cfg)

    _, old, _ = runs.restore(old_cfg.model_dir)
    _, new, _ = runs.restore(cfg.model_dir)
    assert new.labels == ("a", "b")
    old_weights = {v.path: v.numpy() for v in old.model.weights}
    for v in new.model.weights:
        if v.path.startswith("logits/"):
            np.testing.assert_array_equal(v.numpy(), old_weights[v.path][..., [1, 0]])
        else:
            assert v.numpy().tobytes() == old_weights[v.path].tobytes(), v.path
    trained = next(t for t in made if t is not None and hasattr(t, "anchors"))
    for path, anchor in trained.anchors.items():  # L2-SP pulls toward the old run
        assert anchor.numpy().tobytes() == old_weights[path].tobytes(), path

    # The old eval data, relabelled, scores as the old run scored it; nothing was forgotten.
    assert metrics["retain_score_before"] == metrics["retain_score"] == old_metrics["accuracy"]
    assert metrics["forgetting"] == 0.0
    written = json.load(open(os.path.join(cfg.model_dir, "eval", "metrics.json")))
    assert written["forgetting"] == 0.0
    curve_tags = set()
    for path in os.listdir(os.path.join(cfg.model_dir, "logs", "train")):
        for event in tf.compat.v1.train.summary_iterator(
                os.path.join(cfg.model_dir, "logs", "train", path)):
            curve_tags |= {value.tag for value in event.summary.value}
    assert {"eval/forgetting", "eval/retain_score"} <= curve_tags


@pytest.mark.parametrize("task_name", TEXT_TASKS)
def test_replay_puts_old_examples_into_every_batch(task_name, tmp_path):
    flags, _ = TASK_DATA[task_name](tmp_path)
    cfg = helpers.experiment(tmp_path, task=task_name, backbone=helpers.tiny_bert_preset(tmp_path),
                             batch_size=8, **flags)
    task = get_task(task_name)
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=data.labels)
    run = base.Run(cfg, None, task.make_preprocessor(cfg), tf.distribute.get_strategy())
    technique = replay.Replay(flags["eval_data"], 0.2)
    technique.initialize(run)
    mixed = technique.adapt_dataset(task.train_dataset(run, data.train), cfg)
    new = task.train_dataset(run, data.train)
    for (inputs, labels), (new_inputs, new_labels) in zip(mixed.take(3), new.take(3)):
        assert labels.shape[0] == 10  # 8 new + round(0.2 * 8 / 0.8) old
        for key, tensor in inputs.items():
            assert tensor.shape[0] == 10
            width = new_inputs[key].shape[1]
            np.testing.assert_array_equal(tensor[:8, :width], new_inputs[key])
        head = labels[:8, :new_labels.shape[1]] if labels.shape.rank == 2 else labels[:8]
        np.testing.assert_array_equal(head, new_labels)


def test_join_batches_pads_the_shorter_sequences_with_zeros():
    new = ({"ids": tf.ones([2, 3], tf.int32)}, tf.ones([2, 3], tf.int32))
    old = ({"ids": tf.fill([1, 5], 2)}, tf.fill([1, 5], 2))
    inputs, labels = replay.join_batches(new, old)
    np.testing.assert_array_equal(inputs["ids"], [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [2] * 5])
    np.testing.assert_array_equal(labels, inputs["ids"])


def _write_run(directory, **changes):
    cfg = Experiment(**changes)
    os.makedirs(directory)
    cfg.save(str(directory))
    return str(directory)


@pytest.mark.parametrize("case, message", [
    ("task", "--init_from=.* is a run with --task=token_classification, this one has "
             "--task=text_classification; continue a run of the same task"),
    ("backbone", "--init_from=.* is a run with --backbone=minilm_l6, this one has --backbone=.*"),
    ("labels", "--init_from=.*: label 'a' of this run is not among that run's labels \\(0, 1\\); "
               "map it with --label_map=a=OLD_LABEL"),
    ("replay", "old_bad.csv:3: label 'c' is not one of the model's labels \\(a, b\\); fix the row "
               "in --replay_data"),
    ("missing", "--init_from=.*nowhere holds no experiment.json"),
    ("mapped_to_unknown", "--label_map=a=9: '9' is not a label of the --init_from=.* run "
                          r"\(0, 1\); map 'a' to one of them"),
    ("no_checkpoint", "--init_from=.*untrained has no checkpoint yet; train it first"),
])
def test_bad_continual_input_is_one_sentence_and_writes_nothing(old_run, tmp_path, case, message):
    directory, old_cfg, _, data = old_run
    cfg = old_cfg.replace(model_dir=str(tmp_path / "out" / "new"), labels=None,
                          train_data=data["train"], eval_data=data["old_eval"],
                          init_from=old_cfg.model_dir, label_map=("a=1", "b=0"),
                          export_dir=str(tmp_path / "out" / "export"))
    if case == "task":
        cfg = cfg.replace(init_from=_write_run(tmp_path / "ner", task="token_classification",
                                               backbone=old_cfg.backbone))
    elif case == "backbone":
        cfg = cfg.replace(init_from=_write_run(tmp_path / "other", backbone="minilm_l6"))
    elif case == "labels":
        cfg = cfg.replace(label_map=None)
    elif case == "replay":
        rows = ["text,label", "good film,a", "bad film,c"]
        cfg = cfg.replace(replay_data=helpers.write_lines(tmp_path, "old_bad.csv", rows))
    elif case == "missing":
        cfg = cfg.replace(init_from=str(tmp_path / "nowhere"))
    elif case == "mapped_to_unknown":
        cfg = cfg.replace(label_map=("a=9", "b=0"))
    elif case == "no_checkpoint":
        cfg = cfg.replace(init_from=_write_run(tmp_path / "untrained", backbone=old_cfg.backbone,
                                               labels=("0", "1")))
    with pytest.raises(UserError, match=message):
        workflow.train(cfg)
    assert not os.path.exists(tmp_path / "out")
