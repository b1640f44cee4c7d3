"""Multi-task learning (tasks/multi_task.py): subtask flagfiles, batch sampling, one
end-to-end run with a signature per subtask. The whole task contract runs on it in
tests/test_contract.py (marked slow: it trains two subtasks several times).
"""

import json
import os

import pytest

import helpers
from samples import multi_task_data
from tfimitate import runs, tasks, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import multi_task


def _cfg(directory, **changes):
    flags, _ = multi_task_data(directory)
    values = dict(task="multi_task", max_steps=2, checkpoint_steps=2,
                  backbone=helpers.tiny_bert_preset(directory), **flags)
    return helpers.experiment(directory, **dict(values, **changes))


def test_sampling_weights():
    assert multi_task.sampling_weights([900, 100], "proportional", 2.0) == [0.9, 0.1]
    assert multi_task.sampling_weights([900, 100], "temperature", 2.0) == pytest.approx([0.75, 0.25])
    assert multi_task.sampling_weights([900, 100], "round_robin", 2.0) == [0.5, 0.5]


def _bad_subtask(tmp_path, lines):
    cfg = _cfg(tmp_path)
    extra = helpers.write_lines(tmp_path, "extra.cfg", lines)
    return cfg.replace(subtasks=cfg.subtasks + (extra,))


@pytest.mark.parametrize("lines, message", [
    (None, r"--subtasks: the subtask flagfile .*missing.cfg does not exist; check the path\."),
    (["--task=text_classification", "--backbone=other"],
     r"extra.cfg:2: --backbone belongs in the main flagfile, since every subtask shares it; "
     r"move it there"),
    (["--task=text_classification", "--subtask_name=sentiment", "--train_data=x.csv"],
     r"extra.cfg: the subtask name 'sentiment' is also the name of another subtask; give each "
     r"subtask file its own --subtask_name\."),
    (["--task=text_classification", "--train_data={empty}"],
     r"subtask extra \(.*extra.cfg\): --train_data=.*empty.csv: no examples with a non-empty "
     r"text; check the file and --text_column\."),
    (["--task=multi_task", "--train_data=x.csv"], r"extra.cfg: --task=multi_task cannot be a "
     r"subtask; use one of text_classification, token_classification\."),
    (["--task=text_classification", "--loss_weight=-1"], r"extra.cfg:2: '-1' is not a valid "
     r"--loss_weight \(it must be at least 0.0\); fix the value\."),
])
def test_a_bad_subtask_file_is_one_sentence_before_any_work(tmp_path, lines, message):
    if lines is None:
        cfg = _cfg(tmp_path)
        cfg = cfg.replace(subtasks=cfg.subtasks + (str(tmp_path / "missing.cfg"),))
    else:
        empty = helpers.write_lines(tmp_path, "empty.csv", ["text,label", ",1"])
        cfg = _bad_subtask(tmp_path, [line.format(empty=empty) for line in lines])
    with pytest.raises(UserError, match=message) as error:
        workflow.train(cfg)
    assert "\n" not in str(error.value)
    assert not os.path.exists(cfg.model_dir)


def test_data_flags_in_the_main_flagfile_are_refused(tmp_path):
    cfg, task = _cfg(tmp_path), tasks.get_task("multi_task")
    with pytest.raises(UserError, match="--train_data belongs in a subtask flagfile"):
        task.validate(cfg.replace(train_data="x.csv"))
    with pytest.raises(UserError, match="--labels: 'neg' names no subtask"):
        task.validate(cfg.replace(labels=("neg", "pos")))
    task.validate(cfg.replace(labels=("sentiment:0", "sentiment:1")))  # a run's flags.cfg


def test_batches_follow_the_sampling_share_one_structure_and_replay(tmp_path):
    """Each batch is one subtask's (weight > 0 for it only), in the proportions asked for,
    the same stream on every run (what resume relies on), with one element structure."""
    import numpy as np
    import tensorflow as tf

    from tfimitate.tasks import base

    cfg = _cfg(tmp_path, task_sampling="temperature", task_temperature=2.0)
    task = tasks.get_task("multi_task")
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=data.labels)

    run = base.Run(cfg, runs.build_model(task, cfg, len(data.labels), []),
                   task.make_preprocessor(cfg), tf.distribute.get_strategy())

    def owners(dataset, n):
        found = []
        for _, labels in dataset.take(n):
            weights = {key: part["weight"].numpy() for key, part in labels.items()}
            own = [key for key, w in weights.items() if w.max() > 0]
            assert len(own) == 1 and np.all(weights[own[0]] == 1.0)
            found.append(own[0])
        return found

    dataset = task.train_dataset(run, data.train)
    first = owners(dataset, 200)
    sizes = [len(data.train.parts["sentiment"]), len(data.train.parts["entities"])]
    share = multi_task.sampling_weights(sizes, "temperature", 2.0)[0]
    assert first.count("text_classification/sentiment") / 200 == pytest.approx(share, abs=0.08)
    assert owners(task.train_dataset(run, data.train).skip(50), 150) == first[50:]


def test_end_to_end_one_model_a_signature_per_subtask(tmp_path):
    """Two subtasks train together; metrics.json has a section each and their mean;
    the export has each subtask's signatures with its single-task outputs."""
    _train_and_check(tmp_path)


def _train_and_check(tmp_path):
    import tensorflow as tf

    cfg = _cfg(tmp_path, export_dir=str(tmp_path / "export"))
    metrics = workflow.train(cfg)
    assert set(metrics["sentiment"]) >= {"accuracy", "macro_f1", "score"}
    assert set(metrics["entities"]) >= {"f1", "per_type", "score"}
    assert metrics["score"] == pytest.approx(
        (metrics["sentiment"]["score"] + metrics["entities"]["score"]) / 2)
    assert json.load(open(os.path.join(cfg.model_dir, "eval", "metrics.json"))) == metrics
    loaded = tf.saved_model.load(os.path.join(cfg.export_dir, "1"))
    assert set(loaded.signatures) == {"serving_default", "sentiment", "sentiment_classify",
                                      "entities", "entities_tag_words"}
    texts = tf.constant(["a good film", "john said hello in paris ."])
    default, sentiment = (loaded.signatures[name](text=texts) for name in
                          ("serving_default", "sentiment"))
    assert set(sentiment) == {"label", "class_id", "probabilities"}
    assert list(default["label"].numpy()) == list(sentiment["label"].numpy())
    assert set(loaded.signatures["entities"](text=texts)) >= {"tags", "entity_type"}
    # --init_from: a run of another task cannot seed this model; one sentence, nothing written.
    single = helpers.experiment(tmp_path / "single", init_from=cfg.model_dir, max_steps=1,
                                backbone=cfg.backbone,
                                train_data=str(tmp_path / "sentiment" / "train.csv"))
    with pytest.raises(UserError, match="is a run with --task=multi_task, this one has "
                                        "--task=text_classification; continue a run of the same task"):
        workflow.train(single)
    assert not os.path.exists(single.model_dir)
    return cfg


@pytest.mark.slow
def test_init_from_another_multi_task_run_keeps_its_heads(tmp_path):
    """--init_from a multi-task run with the same subtasks copies backbone and heads."""
    import numpy as np

    source = _train_and_check(tmp_path)
    _, old, _ = runs.restore(source.model_dir)
    cfg = source.replace(model_dir=str(tmp_path / "continued"), export_dir=None,
                         init_from=source.model_dir, max_steps=1, learning_rate=0.0)
    workflow.train(cfg)
    _, new, _ = runs.restore(cfg.model_dir)
    for layer in ("sentiment_logits", "entities_logits"):
        np.testing.assert_array_equal(new.model.get_layer(layer).kernel.numpy(),
                                      old.model.get_layer(layer).kernel.numpy())


@pytest.mark.slow
def test_sigkill_and_rerun_of_the_command_line_repeats_the_uninterrupted_run(tmp_path):
    """`python -m tfimitate.train --flagfile=...` of a multi-task run, SIGKILLed after a
    checkpoint and re-run, resumes the sampled batch stream: the same loss curve."""
    import subprocess

    import numpy as np
    import tensorflow as tf

    import processes
    from test_resume import LOSS_TOLERANCE, TIMEOUT, _checkpoint_files, _run_until

    cfg = _cfg(tmp_path, max_steps=12, checkpoint_steps=3, eval_steps=12)
    reference = cfg.replace(model_dir=str(tmp_path / "reference"))
    workflow.train(reference)
    command = processes.train_command(processes.write_flagfile(tmp_path / "flags", cfg))
    _run_until(command, lambda: _checkpoint_files(cfg.model_dir, 6), 0.0)
    latest = tf.train.latest_checkpoint(os.path.join(cfg.model_dir, "checkpoints"))
    assert latest and int(latest.rsplit("-", 1)[1]) < 12
    final = subprocess.run(command, env=processes.child_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Resumed from checkpoint" in final.stderr
    resumed, expected = (processes.loss_curve(c.model_dir) for c in (cfg, reference))
    assert sorted(resumed) == sorted(expected) == list(range(1, 13))
    np.testing.assert_allclose([resumed[s] for s in expected], list(expected.values()),
                               atol=LOSS_TOLERANCE)
