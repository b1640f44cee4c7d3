"""Streamed data (data/streams.py, tasks/text_stream.py): patterns, TFRecord, per-host
shards read once, truncated gzip, the same batches as in memory, training end to end."""

import gzip
import os

import numpy as np
import pytest

import helpers
from tfimitate import workflow
from tfimitate.data import streams
from tfimitate.errors import UserError


def _shards(directory, rows, count, suffix=".tsv"):
    """Writes `rows` round-robin into `count` TSV shards with a header; returns the pattern."""
    for shard in range(count):
        lines = ["sentence\tlabel"] + [f"{t}\t{l}" for t, l in rows[shard::count]]
        data = ("\n".join(lines) + "\n").encode()
        path = os.path.join(str(directory), f"train-{shard:05d}-of-{count:05d}{suffix}")
        with open(path, "wb") as f:
            f.write(gzip.compress(data) if suffix.endswith(".gz") else data)
    return os.path.join(str(directory), f"train-*-of-{count:05d}{suffix}")


def _texts(ds):
    return [row["text"].decode() for row in ds.as_numpy_iterator()]


def test_two_hosts_read_each_shard_once_and_every_row_once(tmp_path):
    import tensorflow as tf

    rows = helpers.sentiment_rows(60)
    pattern = _shards(tmp_path, rows, 4)
    source = streams.open_source(pattern, ["sentence", "label"], ("text", "label"), "--train_data")
    assert len(source.paths) == 4
    per_host = [_texts(streams.examples(source, tf.distribute.InputContext(2, i, 2)))
                for i in range(2)]
    assert sorted(per_host[0] + per_host[1]) == sorted(t for t, _ in rows)
    assert not set(per_host[0]) & set(per_host[1])
    # Fewer files than hosts: every host reads the file and keeps every other row.
    os.makedirs(tmp_path / "one")
    one = streams.open_source(_shards(tmp_path / "one", rows, 1), ["sentence", "label"],
                              ("text", "label"), "--train_data")
    halves = [_texts(streams.examples(one, tf.distribute.InputContext(2, i, 2))) for i in range(2)]
    assert sorted(halves[0] + halves[1]) == sorted(t for t, _ in rows)


def test_patterns_lists_and_their_errors(tmp_path):
    pattern = _shards(tmp_path, helpers.sentiment_rows(8), 2)
    first = pattern.replace("*", "00000")
    assert streams.expand(f"{pattern},{first}", "--train_data") == tuple(
        sorted(streams.glob_files(pattern)))
    with pytest.raises(UserError, match=r"--train_data=.*nothing-\*\.tsv matches no file"):
        streams.expand(str(tmp_path / "nothing-*.tsv"), "--train_data")
    with pytest.raises(UserError, match="has no column 'review'"):
        streams.open_source(pattern, ["review", "label"], ("text", "label"), "--train_data")


def test_a_truncated_gzip_shard_is_named(tmp_path):
    pattern = _shards(tmp_path, helpers.sentiment_rows(4000), 2, ".tsv.gz")
    damaged = sorted(streams.glob_files(pattern))[1]
    with open(damaged, "rb") as f:
        data = f.read()
    with open(damaged, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(UserError, match=f"{damaged}: the gzip data ends early"):
        streams.open_source(pattern, ["sentence", "label"], ("text", "label"), "--train_data")


def _write_tfrecord(path, rows, text_key="sentence", label_as_int=True):
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for text, label in rows:
            feature = {text_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
            feature["label"] = (tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
                                if label_as_int else
                                tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()])))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
    return path


def test_tfrecord_examples_are_read_by_the_column_flags(tmp_path):
    rows = helpers.sentiment_rows(10)
    path = _write_tfrecord(str(tmp_path / "train.tfrecord"), rows)
    source = streams.open_source(path, ["sentence", "label"], ("text", "label"), "--train_data")
    read = list(streams.examples(source).as_numpy_iterator())
    assert [(r["text"].decode(), r["label"].decode()) for r in read] == rows
    with pytest.raises(UserError, match=r"train.tfrecord: record 1 has no feature 'text' "
                                        r"\(features: label, sentence\)"):
        streams.open_source(path, ["text", "label"], ("text", "label"), "--train_data")


def test_streamed_and_in_memory_give_the_same_training_batches(tmp_path):
    """One file, the same seed: the stream and the list in memory hold out the same rows
    (keyed hash) and yield the same batches."""
    from tfimitate import runtime
    from tfimitate.tasks import base, text_stream
    from tfimitate.tasks.text_classification import TextClassification

    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=helpers.write_table(tmp_path, "t.csv",
                                                            helpers.sentiment_rows(90)),
                             batch_size=8, holdout_fraction=0.2)
    task = TextClassification()
    batches = {}
    for mode in ("off", "on"):
        run_cfg = cfg.replace(stream_data=mode)
        data = task.load_data(run_cfg)
        run = base.Run(run_cfg.replace(labels=data.labels), None,
                       task.make_preprocessor(run_cfg), runtime.make_strategy("one_device"))
        ds = task.train_dataset(run, data.train)
        if mode == "on":
            assert isinstance(data.train, text_stream.StreamSplit)
            ds = ds(None)
        batches[mode] = [(x["token_ids"].numpy(), y.numpy()) for x, y in ds.take(12)]
        assert len(data.train) + len(data.eval) == 90
    for (ids_off, y_off), (ids_on, y_on) in zip(batches["off"], batches["on"]):
        np.testing.assert_array_equal(ids_off, ids_on)
        np.testing.assert_array_equal(y_off, y_on)


def test_training_from_shards_evaluates_exports_and_resumes(tmp_path):
    rows = helpers.sentiment_rows(96)
    pattern = _shards(tmp_path, rows, 3)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=pattern, text_column="sentence", max_steps=4,
                             checkpoint_steps=2, batch_size=8, export_dir=str(tmp_path / "export"))
    metrics = workflow.train(cfg)
    assert 0 <= metrics["accuracy"] <= 1 and "held out" in metrics["data"]
    assert os.path.isdir(tmp_path / "export" / "1")
    longer = workflow.train(cfg.replace(max_steps=6, export_dir=None))
    assert longer["step"] == 6
    # Streamed predict: records in file order, written as they come.
    output = str(tmp_path / "predictions.csv")
    assert workflow.predict(cfg.model_dir, pattern, output) == 96
    import csv
    with open(output, newline="") as f:
        written = list(csv.DictReader(f))
    by_shard = [t for shard in range(3) for t, _ in rows[shard::3]]
    assert [r["text"] for r in written] == by_shard and {r["label"] for r in written} <= {"0", "1"}


def test_a_label_outside_labels_stops_the_stream_in_one_sentence(tmp_path):
    rows = helpers.sentiment_rows(40) + [("an odd row", "7")]
    pattern = _shards(tmp_path, rows, 2)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=pattern, text_column="sentence", labels=("0", "1"),
                             max_steps=30, batch_size=8)
    with pytest.raises(UserError, match=r"has the label .*7.*not one of the model's labels \(0, 1\)"):
        workflow.train(cfg)
    assert not os.path.exists(os.path.join(cfg.model_dir, "export"))


def test_prepared_shards_train_on_the_raw_files_batches_and_refuse_another_tokenizer(tmp_path):
    """tfimitate.prepare's shards (no duplicates here) give the batches the raw file gives,
    the same hold-out, and a run with another tokenizer is refused in one sentence."""
    from tfimitate import prepare, runtime
    from tfimitate.tasks import base, text_inputs, text_stream
    from tfimitate.tasks.text_classification import TextClassification

    preset = helpers.tiny_bert_preset(tmp_path)
    cfg = helpers.experiment(tmp_path, backbone=preset, batch_size=8, holdout_fraction=0.2,
                             train_data=helpers.write_table(tmp_path, "t.csv",
                                                            helpers.sentiment_rows(90)))
    prepare.run(cfg, str(tmp_path / "prepared"), num_shards=1)
    task = TextClassification()
    examples, held = {}, {}
    for name, run_cfg in (("raw", cfg.replace(stream_data="on")),
                          ("prepared", cfg.replace(train_data=str(tmp_path / "prepared")))):
        data = task.load_data(run_cfg)
        preprocessor = task.make_preprocessor(run_cfg)
        held[name] = sorted(task.serving_examples(data.eval)["text"])
        one_pass = text_stream.features(data.train, text_inputs.encoder(preprocessor))
        examples[name] = sorted((tuple(f["token_ids"]), int(f["labels"]))
                                for f in one_pass.as_numpy_iterator())
        run = base.Run(run_cfg.replace(labels=data.labels), None, preprocessor,
                       runtime.make_strategy("one_device"))
        inputs, labels = next(iter(task.train_dataset(run, data.train)(None)))
        assert inputs["token_ids"].shape[0] == labels.shape[0] == 8
    assert held["raw"] == held["prepared"] and held["raw"]
    assert examples["raw"] == examples["prepared"]  # shards are length-sorted: same multiset
    other = helpers.tiny_preset(tmp_path, "bpe")
    with pytest.raises(UserError, match="was prepared with another tokenizer"):
        task.load_data(cfg.replace(train_data=str(tmp_path / "prepared"), backbone=other))


def test_side_columns_stream_like_the_table_in_memory(tmp_path):
    """Side columns (empty cells among them) stream beside the text: their preprocessing is
    learned in the counting pass on the rows the hold-out leaves, as in memory, and the
    same encoded side features reach the same batches. A TFRecord or JSONL row may leave a
    side feature out (missing)."""
    import dataclasses
    import json

    import image_helpers
    from tfimitate import runtime
    from tfimitate.tasks import base, side_features
    from tfimitate.tasks.text_classification import TextClassification

    lines = ["text,plan,age,label"] + [
        f"{text},{['pro', 'free', ''][i % 3]},{'' if i % 4 == 1 else i},{label}"
        for i, (text, label) in enumerate(helpers.sentiment_rows(60))]
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=helpers.write_lines(tmp_path, "t.csv", lines),
                             batch_size=8, holdout_fraction=0.2, numeric_columns=("age",),
                             categorical_columns=("plan",))
    task, learned, batches = TextClassification(), {}, {}
    for mode in ("off", "on"):
        data = task.load_data(cfg.replace(stream_data=mode))
        learned[mode] = json.loads(data.learned["side_feature_stats"])
        run = base.Run(cfg.replace(stream_data=mode, labels=data.labels, **data.learned), None,
                       task.make_preprocessor(cfg), runtime.make_strategy("one_device"))
        ds = task.train_dataset(run, data.train)
        batches[mode] = [(x[side_features.INPUT].numpy(), y.numpy())
                         for x, y in (ds(None) if mode == "on" else ds).take(6)]
    assert learned["on"]["categorical"] == learned["off"]["categorical"] == {"plan": ["free", "pro"]}
    np.testing.assert_allclose(learned["on"]["numeric"]["age"], learned["off"]["numeric"]["age"],
                               rtol=1e-6)
    for (side_off, y_off), (side_on, y_on) in zip(batches["off"], batches["on"]):
        np.testing.assert_allclose(side_on, side_off, atol=1e-5)
        np.testing.assert_array_equal(y_on, y_off)
    # Streamed predictions and serving examples carry the raw side values (None: missing).
    from tfimitate import runs

    streamed = task.read_file(cfg.train_data, run.cfg, "--input", with_labels=False)
    run = dataclasses.replace(run, model=runs.build_model(task, run.cfg, 2, []))
    records = list(task.predict(run, streamed))
    assert [(r["plan"], r["age"]) for r in records[:3]] == [("pro", 0.0), ("free", None), (None, 2.0)]
    examples = task.serving_examples(streamed)
    assert examples["plan"][:3] == ["pro", "free", ""] and np.isnan(examples["age"][1])

    keys, optional = ("text", "label", "side/age", "side/plan"), ("side/age", "side/plan")
    records = image_helpers.write_tfrecord(tmp_path / "s.tfrecord", [
        {"sentence": "a", "label": "0", "age": 2.5, "plan": "pro"}, {"sentence": "b", "label": "1"}])
    jsonl = helpers.write_lines(tmp_path, "s.jsonl", ['{"sentence": "a", "label": 0, "age": 2.5, '
                                                      '"plan": "pro"}', '{"sentence": "b", "label": '
                                                      '1, "age": null}'])
    for path in (records, jsonl):
        source = streams.open_source(path, ["sentence", "label", "age", "plan"], keys,
                                     "--train_data", optional)
        read = list(streams.examples(source).as_numpy_iterator())
        assert [float(r["side/age"] or "nan") for r in read][0] == 2.5 and read[1]["side/age"] == b""
        assert [r["side/plan"] for r in read] == [b"pro", b""]
