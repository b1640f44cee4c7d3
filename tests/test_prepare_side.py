"""Side columns in prepared shards: tfimitate.prepare carries them as tf.Example features,
learns their preprocessing on the train shards' rows, and a run on the shards gets the
batches a run on the raw file gets."""

import json

import numpy as np
import pytest

import helpers
from tfimitate.errors import UserError


def _side_table(tmp_path):
    lines = ["text,plan,age,label"] + [
        f"{text},{['pro', 'free', '', 'team'][i % 4]},{'' if i % 5 == 1 else i * 1.5},{label}"
        for i, (text, label) in enumerate(helpers.sentiment_rows(60))]
    return helpers.write_lines(tmp_path, "t.csv", lines)


def _examples(task, cfg, data):
    """Sorted (token ids, label, encoded side features) of one pass over the train split."""
    from tfimitate.tasks import side_features, text_inputs, text_stream

    stats = data.learned.get("side_feature_stats", cfg.side_feature_stats)
    encode = text_inputs.encoder(task.make_preprocessor(cfg), stats)
    found = []
    for f in text_stream.features(data.train, encode, side_feature_stats=stats).as_numpy_iterator():
        side = tuple(np.round(f[side_features.INPUT], 5)) if side_features.INPUT in f else None
        found.append((tuple(f["token_ids"]), int(f["labels"]), side))
    return sorted(found)


def test_prepared_side_columns_train_like_the_raw_file_and_refuse_other_columns(tmp_path):
    from tfimitate import prepare, runtime
    from tfimitate.data import prepared
    from tfimitate.tasks import base, side_features
    from tfimitate.tasks.text_classification import TextClassification

    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=_side_table(tmp_path), holdout_fraction=0.2,
                             numeric_columns=("age",), categorical_columns=("plan",))
    out = str(tmp_path / "prepared")
    manifest = prepare.run(cfg, out, num_shards=2)
    task = TextClassification()
    raw = task.load_data(cfg.replace(stream_data="on"))  # the hold-out's rows left out
    assert (manifest.numeric_columns, manifest.categorical_columns) == (["age"], ["plan"])
    learned, expected = (json.loads(s) for s in (manifest.side_feature_stats,
                                                  raw.learned["side_feature_stats"]))
    assert learned["categorical"] == expected["categorical"]  # by count, then value
    assert sorted(learned["categorical"]["plan"]) == ["free", "pro", "team"]
    np.testing.assert_allclose(learned["numeric"]["age"], expected["numeric"]["age"], rtol=1e-6)

    on_shards = cfg.replace(train_data=out)
    data = task.load_data(on_shards)
    assert data.learned == {"side_feature_stats": manifest.side_feature_stats}
    assert _examples(task, on_shards, data) == _examples(task, cfg, raw)
    assert task.serving_examples(data.eval)["plan"]  # raw side values for the export's checks
    run = base.Run(on_shards.replace(labels=data.labels, **data.learned), None,
                   task.make_preprocessor(cfg), runtime.make_strategy("one_device"))
    inputs, _ = next(iter(task.train_dataset(run, data.train)(None)))
    assert inputs[side_features.INPUT].shape == (8, side_features.width(learned))

    plain = on_shards.replace(numeric_columns=None, categorical_columns=None)
    assert all(side is None for _, _, side in _examples(task, plain, task.load_data(plain)))
    with pytest.raises(UserError, match=r"prepared with --numeric_columns=age, not rank"):
        task.load_data(on_shards.replace(numeric_columns=("rank",)))
    old = prepared.load(out, "--train_data")  # a manifest from before side columns: none
    values = json.loads(old.to_json())
    for key in ("numeric_columns", "categorical_columns", "side_feature_stats"):
        del values[key]
    (tmp_path / "prepared" / prepared.MANIFEST).write_text(json.dumps(values))
    assert prepared.load(out, "--train_data").numeric_columns == []
    with pytest.raises(UserError, match=r"prepared with --numeric_columns=\(none\), not age"):
        task.load_data(on_shards)


def test_prepare_refuses_side_columns_of_tfrecord_files_before_writing(tmp_path):
    from tfimitate import prepare

    records = tmp_path / "t.tfrecord"
    records.write_bytes(b"")
    cfg = helpers.experiment(tmp_path, train_data=str(records), numeric_columns=("age",))
    with pytest.raises(UserError, match="reads side columns .* from CSV/TSV/JSONL"):
        prepare.run(cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
