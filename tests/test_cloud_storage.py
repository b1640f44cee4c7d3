"""Runs on a TensorFlow file system other than local disk (gs://, s3://, ...), proved on
the in-memory `ram://` one: every file of train -> evaluate -> predict -> export goes
through tfimitate.files / tf.io.gfile, and nothing lands on local disk."""

import gzip
import json
import os
import uuid

import pytest

import helpers
from tfimitate import files, workflow
from tfimitate.errors import UserError
from tfimitate.serving import warmup


def _put(path, data):
    files.write_atomically(path, data)
    return path


def test_train_evaluate_predict_export_on_a_remote_file_system(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would appear here
    backbone = helpers.tiny_bert_preset(tmp_path)
    root = f"ram://{uuid.uuid4().hex}"
    table = lambda rows: "text,label\n" + "".join(f"{text},{label}\n" for text, label in rows)
    cfg = helpers.experiment(
        tmp_path, backbone=backbone, model_dir=f"{root}/runs/sst", export_dir=f"{root}/saved/sst",
        train_data=_put(f"{root}/data/train.csv.gz",
                        gzip.compress(table(helpers.sentiment_rows(32)).encode())),
        eval_data=_put(f"{root}/data/eval.csv", table(helpers.sentiment_rows(8, seed=1))),
        test_data=_put(f"{root}/data/test.csv", table(helpers.sentiment_rows(8, seed=2))),
        max_steps=2, checkpoint_steps=2)

    metrics = workflow.train(cfg)

    run = cfg.model_dir
    assert json.loads(files.read_bytes(f"{run}/eval/metrics.json")) == metrics
    for name in ("experiment.json", "flags.cfg", "serving_examples.json",
                 "eval/test_metrics.json", "eval/metrics_confusion_matrix.png"):
        assert files.isfile(f"{run}/{name}"), name
    assert not files.exists(f"{run}/.lock")
    assert tf.train.latest_checkpoint(f"{run}/checkpoints").endswith("-2")
    assert files.listdir(cfg.export_dir) == ["1"]

    assert workflow.evaluate(run) == metrics

    count = workflow.predict(run, _put(f"{root}/data/input.txt", "a good film\nawful\n"),
                             f"{root}/out/predictions.jsonl")
    written = files.read_bytes(f"{root}/out/predictions.jsonl").decode().splitlines()
    records = [json.loads(line) for line in written]
    assert count == len(records) == 2 and all("label" in record for record in records)

    version = f"{cfg.export_dir}/1"  # written at the end of training
    loaded = tf.saved_model.load(version)
    served = loaded.signatures["serving_default"](text=tf.constant(["a good film", "awful"]))
    assert [label.decode() for label in served["label"].numpy()] == [r["label"] for r in records]
    assert {name for name, _ in warmup.read_warmup_inputs(version)} == set(loaded.signatures)
    source = json.loads(files.read_bytes(f"{version}/assets.extra/tfimitate_source.json"))
    assert source == {"model_dir": run, "step": 2}
    assert sorted(os.listdir(tmp_path)) == ["tiny_bert"]


def test_an_unknown_scheme_is_one_sentence():
    with pytest.raises(UserError, match=r"--model_dir=nosuch://b/run cannot be reached .*"
                                        "check the scheme"):
        files.check_writable_dir("nosuch://b/run", "--model_dir")


def test_a_remote_write_replaces_the_file_and_leaves_no_temporary():
    root = f"ram://{uuid.uuid4().hex}"
    files.write_atomically(f"{root}/a.json", "{}")
    files.write_atomically(f"{root}/a.json", b"\x89PNG")
    assert files.read_bytes(f"{root}/a.json") == b"\x89PNG"
    assert files.listdir(root) == ["a.json"]



def test_a_search_runs_on_a_remote_file_system(tmp_path, monkeypatch):
    """The search space, data, trial, oracle and reports all stay on ram://."""
    from tfimitate.search import space, tuner

    monkeypatch.chdir(tmp_path)
    backbone = helpers.tiny_bert_preset(tmp_path)
    root = f"ram://{uuid.uuid4().hex}"
    table = "text,label\n" + "".join(f"{t},{l}\n" for t, l in helpers.sentiment_rows(24))
    tune_dir = f"{root}/tune"
    cfg = helpers.experiment(tmp_path, backbone=backbone, model_dir=tune_dir,
                             train_data=_put(f"{root}/data/train.csv", table), max_steps=1)
    dimensions = space.read(_put(f"{root}/space.cfg", "--learning_rate=log_uniform(1e-4,1e-2)\n"))

    summary = tuner.search(cfg, dimensions, "random", max_trials=1, tune_dir=tune_dir)

    assert "| trial |" in summary
    for name in ("results.csv", "best.cfg", "results.png", "search.json", "oracle/oracle.json",
                 "trials/0/trial_result.json", "trials/0/eval/metrics.json"):
        assert files.isfile(f"{tune_dir}/{name}"), name
    assert sorted(os.listdir(tmp_path)) == ["tiny_bert"]


def test_a_hyperband_trial_copies_its_parents_checkpoints_on_a_remote_file_system():
    """Every run's and every fold's checkpoints, the index last; a finished copy is kept."""
    from tfimitate.search import tuner

    root = f"ram://{uuid.uuid4().hex}"
    for run in ("parent", "parent/folds/0", "parent/folds/1"):
        _put(f"{root}/{run}/checkpoints/ckpt-2.index", b"i")
        _put(f"{root}/{run}/checkpoints/ckpt-2.data-00000-of-00001", b"weights")
        _put(f"{root}/{run}/checkpoints/checkpoint", 'model_checkpoint_path: "ckpt-2"\n')
    _put(f"{root}/child/folds/1/checkpoints/checkpoint", "copied before a kill")

    tuner._copy_checkpoints(f"{root}/parent", f"{root}/child")

    for fold in ("folds/0/", ""):
        assert sorted(files.listdir(f"{root}/child/{fold}checkpoints")) == [
            "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
        assert files.read_bytes(f"{root}/child/{fold}checkpoints/ckpt-2.data-00000-of-00001") == b"weights"
    assert files.listdir(f"{root}/child/folds/1/checkpoints") == ["checkpoint"]
