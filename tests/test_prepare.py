"""python -m tfimitate.prepare on Beam's DirectRunner: shards, manifest, hold-out, bad input."""

import gzip
import os
import subprocess
import sys

import pytest

from helpers import experiment, tiny_bert_preset
from tfimitate import backbones, prepare
from tfimitate.data import prepared, splits
from tfimitate.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [("a good film", "1"), ("the plot was boring", "0"), ("fun", "1"),
         ("not very funny at all", "0"), ("the best story", "1"), ("worst movie", "0"),
         ("love it", "1"), ("a great actor in a bad film", "0"), ("good", "1"), ("bad", "0"),
         ("the story was fun and the acting great", "1"), ("boring", "0")]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return tiny_bert_preset(tmp_path_factory.mktemp("preset"), sequence_length=32)


def _tsv(directory, name, rows):
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    return path


def _records(manifest, role):
    """Every record of `role`, shard by shard: (shard, token_ids, label, text, pair)."""
    import tensorflow as tf

    found = []
    for shard, path in enumerate(manifest.paths(role)):
        for serialized in tf.data.TFRecordDataset(path, "GZIP").as_numpy_iterator():
            feature = tf.train.Example.FromString(serialized).features.feature
            pair = feature["pair"].bytes_list.value[0].decode() if "pair" in feature else None
            found.append((shard, list(feature["token_ids"].int64_list.value),
                          feature["label"].int64_list.value[0],
                          feature["text"].bytes_list.value[0].decode(), pair))
    return found


def test_prepare_writes_sorted_deduplicated_shards_with_the_streamed_hold_out(tmp_path, preset):
    import tensorflow as tf

    # Two files by a pattern; "fun" repeats once with its label, "good" once with another.
    _tsv(tmp_path, "train-0.tsv", TRAIN[:6] + [("fun", "1")])
    _tsv(tmp_path, "train-1.tsv", TRAIN[6:] + [("good", "0")])
    cfg = experiment(tmp_path, backbone=preset, train_data=str(tmp_path / "train-*.tsv"),
                     holdout_fraction=0.3, seed=3)
    manifest = prepare.run(cfg, str(tmp_path / "out"), num_shards=3)

    held = splits.held_out(tf.constant([text for text, _ in TRAIN]), 0.3, 3).numpy()
    expected = {"holdout": {t for (t, _), h in zip(TRAIN, held) if h},
                "train": {t for (t, _), h in zip(TRAIN, held) if not h}}
    preprocessor = backbones.load_text_preprocessor(preset, 32)
    assert manifest.labels == ["0", "1"] and manifest.duplicates_dropped == 2
    assert manifest.tokenizer_fingerprint == backbones.tokenizer_fingerprint(preprocessor)
    for role in ("train", "holdout"):
        records = _records(manifest, role)
        assert {text for _, _, _, text, _ in records} == expected[role]
        assert manifest.examples[role] == len(records) == len(expected[role])
        assert len(manifest.files[role]) == 3
        for shard in range(3):  # sorted by length within each shard
            lengths = [len(ids) for s, ids, _, _, _ in records if s == shard]
            assert lengths == sorted(lengths)
        for _, ids, label, text, _ in records:
            mask = preprocessor(x=tf.constant([text]))["padding_mask"][0].numpy()
            assert ids == preprocessor(x=tf.constant([text]))["token_ids"][0, :mask.sum()].numpy().tolist()
            assert str(label) == dict(TRAIN)[text]  # "good" keeps its first label, 1
    assert sum(int(n) * c for n, c in manifest.length_histogram["train"].items()) == \
        sum(len(ids) for _, ids, _, _, _ in _records(manifest, "train"))


def test_tfrecord_pairs_with_eval_and_its_overlap(tmp_path, preset):
    import tensorflow as tf

    def example(text, pair, label):
        strings = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
        return tf.train.Example(features=tf.train.Features(feature={
            "premise": strings(text), "hypothesis": strings(pair),
            "gold": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})).SerializeToString()

    path = str(tmp_path / "pairs.tfrecord.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as writer:
        for i, (text, label) in enumerate(TRAIN):
            writer.write(example(text, f"hypothesis {i}", int(label)))
    evaluation = str(tmp_path / "eval.jsonl")
    with open(evaluation, "w") as f:
        f.write('{"premise": "A good film!", "hypothesis": "Hypothesis 0", "gold": 1}\n'
                '{"premise": "dull", "hypothesis": "x", "gold": 0}\n')
    cfg = experiment(tmp_path, backbone=preset, train_data=path, eval_data=evaluation,
                     text_column="premise", text_pair_column="hypothesis", label_column="gold")
    manifest = prepare.run(cfg, str(tmp_path / "out"), num_shards=2)
    assert set(manifest.files) == {"train", "eval"} and manifest.eval_overlap == {"eval": 1}
    assert manifest.examples == {"train": len(TRAIN), "eval": 2}
    features = next(iter(prepared.dataset(manifest, "eval").filter(lambda e: e["text"] == "dull")))
    assert features["pair"].numpy() == b"x" and features["labels"].numpy() == 0
    assert features["segment_ids"].numpy().tolist()[-2:] == [1, 1]  # "x" [SEP] of the pair

    with open(path, "rb") as f:
        data = f.read()
    truncated = str(tmp_path / "truncated.tfrecord.gz")
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    out = tmp_path / "bad"
    with pytest.raises(UserError, match=r"truncated.tfrecord.gz cannot be read after record"):
        prepare.run(cfg.replace(train_data=truncated, eval_data=None), str(out))
    assert not out.exists()
    with pytest.raises(UserError, match=r"pairs.tfrecord.gz: record 1 has no feature 'hypo' "
                                        r"\(features: gold, hypothesis, premise\)"):
        prepare.run(cfg.replace(text_pair_column="hypo", eval_data=None), str(out))
    assert not out.exists()


def test_bad_input_is_refused_before_anything_is_written(tmp_path, preset):
    train = _tsv(tmp_path, "train.tsv", TRAIN)
    cfg = experiment(tmp_path, backbone=preset, train_data=train)
    os.makedirs(tmp_path / "full")
    os.makedirs(tmp_path / "empty")
    open(tmp_path / "full" / "notes.txt", "w").close()
    with pytest.raises(UserError, match=r"--output_dir=.*full is not empty \(it holds notes.txt\)"):
        prepare.run(cfg, str(tmp_path / "full"))
    with pytest.raises(UserError, match=r"--eval_data: the pattern .*dev-\*.tsv matches no file"):
        prepare.run(cfg.replace(eval_data=str(tmp_path / "dev-*.tsv")), str(tmp_path / "o"))
    with gzip.open(tmp_path / "t.tsv.gz", "wb") as f:
        f.write(open(train, "rb").read() * 50)
    data = open(tmp_path / "t.tsv.gz", "rb").read()
    with open(tmp_path / "t.tsv.gz", "wb") as f:
        f.write(data[:len(data) - 20])
    with pytest.raises(UserError, match=r"cannot read .*t.tsv.gz \(Compressed file ended"):
        prepare.run(cfg.replace(train_data=str(tmp_path / "t.tsv.gz")), str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    assert sorted(os.listdir(tmp_path / "full")) == ["notes.txt"]
    odd = _tsv(tmp_path, "dev.tsv", [("a film", "1"), ("a dull film", "maybe")])
    with pytest.raises(UserError, match=r"dev.tsv:3: label 'maybe' is not one of the model's "
                                        r"labels \(0, 1\); fix the row in --eval_data"):
        prepare.run(cfg.replace(eval_data=odd), str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == []  # the shards written are removed, the folder kept


def test_cli_error_line_and_beam_options(tmp_path):
    train = _tsv(tmp_path, "train.tsv", TRAIN)
    assert prepare.split_argv(["p", "--output_dir=o", "--project", "p1", "--region=r",
                               "--num_shards=2"]) == \
        (["p", "--output_dir=o", "--num_shards=2"], ["--project", "p1", "--region=r"])
    result = subprocess.run(
        [sys.executable, "-m", "tfimitate.prepare", f"--train_data={train}",
         "--text_column=text", "--label_column=label", f"--output_dir={tmp_path / 'o'}",
         "--temp_locaton=/tmp"], capture_output=True, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --temp_locaton=/tmp is neither a tfimitate.prepare flag (see --helpfull) nor "
        "an Apache Beam pipeline option; check its spelling.")
    assert not (tmp_path / "o").exists()



def test_remote_file_systems(tmp_path, preset):
    """Patterns, shards and the manifest on a file system with a scheme (TensorFlow's ram://)."""
    import tensorflow as tf

    for i, rows in enumerate((TRAIN[:6], TRAIN[6:])):
        tf.io.gfile.copy(_tsv(tmp_path, f"t{i}.tsv", rows), f"ram://prep/raw/train-{i}.tsv")
    cfg = experiment(tmp_path, backbone=preset, train_data="ram://prep/raw/train-*.tsv")
    manifest = prepare.run(cfg, "ram://prep/out", num_shards=2)
    assert prepared.is_prepared("ram://prep/out")
    loaded = prepared.load("ram://prep/out", "--train_data")
    assert loaded == manifest and loaded.paths("train")[0] == "ram://prep/out/train-00000-of-00002.tfrecord.gz"
    texts = [e["text"].numpy().decode() for role in ("train", "holdout")
             for e in prepared.dataset(loaded, role)]
    assert sorted(texts) == sorted(text for text, _ in TRAIN)
