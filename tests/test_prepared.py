"""Reading prepared directories (tfimitate/data/prepared.py): manifest checks, parsing
to the raw-text path's features, per-pipeline sharding."""

import json
import os

import pytest

from helpers import tiny_vocabulary
from tfimitate import backbones
from tfimitate.config import Experiment
from tfimitate.data import pipelines, prepared
from tfimitate.errors import UserError

TEXTS = ["a good film", "the plot was boring and the acting bad", "fun", "not very funny at all",
         "the best story", "worst movie", "love it", "a great actor in a bad film"]
PAIRS = ["good", "bad", "fun", "not funny", "best", "worst", "love", "mixed"]


def _preprocessor(sequence_length=16):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=tiny_vocabulary(), lowercase=True)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)


def _write(directory, preprocessor, texts, pairs=None, shards=2, **manifest):
    """A prepared directory made by hand: `shards` train shards of the examples in turn."""
    import tensorflow as tf

    features = preprocessor(x=(tf.constant(texts), tf.constant(pairs)) if pairs else tf.constant(texts))
    names = [f"train-{i:05d}-of-{shards:05d}.tfrecord.gz" for i in range(shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(directory, name), "GZIP") for name in names]
    for i, text in enumerate(texts):
        length = int(features["padding_mask"][i].numpy().sum())
        trimmed = {k: v[i, :length].numpy().tolist() for k, v in features.items()}
        writers[i % shards].write(prepared.serialize(trimmed, i % 2, text, pairs and pairs[i]))
    for writer in writers:
        writer.close()
    values = dict(
        task="text_classification", backbone="tiny", sequence_length=preprocessor.sequence_length,
        tokenizer_fingerprint=backbones.tokenizer_fingerprint(preprocessor),
        features=sorted(features), text_column="text", text_pair_column="pair" if pairs else None,
        label_column="label", labels=["0", "1"], label_counts={"train": {"0": 4, "1": 4}},
        examples={"train": len(texts)}, files={"train": names},
        length_histogram={"train": {}}, duplicates_dropped=0, eval_overlap={},
        holdout_fraction=0.1, seed=42, created_by="test", format=prepared.FORMAT)
    values.update(manifest)
    with open(os.path.join(directory, prepared.MANIFEST), "w") as f:
        json.dump(values, f)
    return str(directory)


def _by_text(dataset):
    values = lambda v: v.numpy().tolist() if v.shape.rank else v.numpy()
    return {e["text"].numpy().decode(): {k: values(v) for k, v in e.items()} for e in dataset}


@pytest.mark.parametrize("pairs", [None, PAIRS])
def test_parse_gives_the_raw_text_features(tmp_path, pairs):
    import tensorflow as tf

    preprocessor = _preprocessor()
    manifest = prepared.load(_write(tmp_path, preprocessor, TEXTS, pairs), "--train_data")
    ds = prepared.dataset(manifest, "train")
    raw = {"text": tf.constant(TEXTS), "labels": tf.constant([i % 2 for i in range(8)], tf.int32)}
    if pairs:
        raw["pair"] = tf.constant(pairs)

    def encode(batch):
        batch = dict(batch)
        text = batch["text"]
        features = preprocessor(x=(text, batch["pair"]) if pairs else text)
        features.update(batch)
        return features

    expected = pipelines.encoded(tf.data.Dataset.from_tensor_slices(raw), encode)
    for name, spec in expected.element_spec.items():
        assert ds.element_spec[name].dtype == spec.dtype, name
        assert ds.element_spec[name].shape.as_list() == spec.shape.as_list(), name
    assert _by_text(ds) == _by_text(expected)


def test_load_refuses_missing_foreign_and_incomplete_directories(tmp_path):
    with pytest.raises(UserError, match="manifest.json does not exist"):
        prepared.load(str(tmp_path), "--train_data")
    assert not prepared.is_prepared(str(tmp_path))
    directory = _write(tmp_path, _preprocessor(), TEXTS)
    assert prepared.is_prepared(directory) and not prepared.is_prepared(f"{directory}/*")
    os.remove(os.path.join(directory, "train-00001-of-00002.tfrecord.gz"))
    with pytest.raises(UserError, match="train-00001-of-00002.tfrecord.gz named in .* is missing"):
        prepared.load(directory, "--train_data")
    _write(tmp_path, _preprocessor(), TEXTS, format="other/1")
    with pytest.raises(UserError, match=r"manifest.json is not a tfimitate.prepared/1 manifest"):
        prepared.load(directory, "--train_data")
    with open(os.path.join(directory, prepared.MANIFEST), "w") as f:
        f.write("{")
    with pytest.raises(UserError, match="is not valid JSON"):
        prepared.load(directory, "--train_data")


def test_check_tokenizer_refuses_other_tokenizers_lengths_and_columns(tmp_path):
    manifest = prepared.load(_write(tmp_path, _preprocessor(16), TEXTS), "--train_data")
    same = backbones.tokenizer_fingerprint(_preprocessor(16))
    cfg = Experiment(backbone="other", sequence_length=16, text_column="text", label_column="label")
    prepared.check_tokenizer(manifest, same, "--train_data", cfg)
    other = backbones.tokenizer_fingerprint(_preprocessor(32))
    assert other != same
    with pytest.raises(UserError, match=r"another tokenizer \(fingerprint \w+, backbone tiny, "
                                        r"sequence_length 16\) than --backbone=other gives"):
        prepared.check_tokenizer(manifest, other, "--train_data", cfg)
    with pytest.raises(UserError, match="--sequence_length=16, not 32"):
        prepared.check_tokenizer(manifest, same, "--train_data", cfg.replace(sequence_length=32))
    with pytest.raises(UserError, match="--label_column=label, not y"):
        prepared.check_tokenizer(manifest, same, "--train_data", cfg.replace(label_column="y"))


def test_pipelines_read_their_own_shards_or_every_nth_example(tmp_path):
    import tensorflow as tf

    manifest = prepared.load(_write(tmp_path, _preprocessor(), TEXTS, shards=2), "--train_data")
    texts = lambda ds: [e["text"].numpy().decode() for e in ds]
    whole = texts(prepared.dataset(manifest, "train"))
    assert sorted(whole) == sorted(TEXTS) and whole == texts(prepared.dataset(manifest, "train"))
    for count in (2, 3):  # by shard, then by example
        seen = [texts(prepared.dataset(manifest, "train", tf.distribute.InputContext(count, i)))
                for i in range(count)]
        assert sorted(sum(seen, [])) == sorted(TEXTS)
    with pytest.raises(UserError, match="holds no 'eval' shards"):
        manifest.paths("eval")
