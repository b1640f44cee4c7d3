"""TensorFlow Datasets inputs (`tfds:NAME[/CONFIG][:SPLIT]`) for every task, read offline
from small datasets prepared in a temporary --tfds_data_dir (no network): a text
classification set, a conll2003-like NER set and a fashion_mnist-like image set."""

import json
import os
import random

import numpy as np
import pytest

import helpers
import image_helpers
from tfimitate import workflow
from tfimitate.data import images, readers, tfds_source
from tfimitate.errors import UserError
from tfimitate.tasks import get_task
from tfimitate.tasks.image_classification import ImageClassification
from tfimitate.tasks.text_classification import TextClassification
from tfimitate.tasks.token_classification import TokenClassification

# Tag and class names in an order no data sorting gives; B-/I-MISC and "unused" never occur.
NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CLASSES = ["light", "dark", "unused"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    directory = str(tmp_path_factory.mktemp("tfds"))
    split = lambda rows: tf.data.Dataset.from_tensor_slices(
        {"sentence": [text for text, _ in rows], "label": [int(label) for _, label in rows]})
    features = tfds.features.FeaturesDict({
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=["negative", "positive"])})
    tfds.dataset_builders.store_as_tfds_dataset(
        "tiny_reviews", "1.0.0", features, data_dir=directory, disable_shuffling=True,
        split_datasets={"train": split(helpers.sentiment_rows(24)),
                        "validation": split(helpers.sentiment_rows(6, seed=1))})
    _store_ner(tfds, directory)
    _store_images(tfds, directory)
    _store_priced_images(tfds, directory)
    return directory


def ner_sentences(n, seed):
    """`n` (words, IOB2 tags) sentences with a person and a place (an empty one first)."""
    rng = random.Random(seed)
    sentences = [([], [])]
    for _ in range(n):
        person, place = rng.choice(["john smith", "smith"]), rng.choice(["paris", "new york city"])
        words = person.split() + ["said", "in"] + place.split() + ["."]
        tags = [("B-" if i == 0 else "I-") + "PER" for i in range(len(person.split()))]
        tags += ["O", "O"] + [("B-" if i == 0 else "I-") + "LOC" for i in range(len(place.split()))]
        sentences.append((words, tags + ["O"]))
    return sentences


def _store_ner(tfds, directory):
    """conll2003's layout: `tokens` Sequence(Text), `ner` and `pos` Sequence(ClassLabel)."""
    features = tfds.features.FeaturesDict({
        "tokens": tfds.features.Sequence(tfds.features.Text()),
        "ner": tfds.features.Sequence(tfds.features.ClassLabel(names=NER_TAGS)),
        "pos": tfds.features.Sequence(tfds.features.ClassLabel(names=["NNP", "VBD", "IN", "."])),
        "title": tfds.features.Text()})
    split = lambda sentences: [
        (i, {"tokens": words, "ner": [NER_TAGS.index(t) for t in tags], "pos": [0] * len(words),
             "title": "news"}) for i, (words, tags) in enumerate(sentences)]
    tfds.dataset_builders.store_as_tfds_dataset(
        "tiny_ner", "1.0.0", features, data_dir=directory, disable_shuffling=True,
        split_datasets={"train": split(ner_sentences(24, 0)), "dev": split(ner_sentences(4, 1)),
                        "test": split(ner_sentences(3, 2))})


def gray_images(n, seed):
    """`n` (28x28x1 uint8 image, class id) pairs, fashion_mnist's shape; classes 0 and 1."""
    return [(image_helpers.image_array(i % 2, seed * 100 + i, (28, 28)).mean(-1, keepdims=True)
             .astype(np.uint8), i % 2) for i in range(n)]


def _store_images(tfds, directory):
    """fashion_mnist's layout: `image` Image(28, 28, 1), `label` ClassLabel."""
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=CLASSES)})
    split = lambda pairs: [(i, {"image": image, "label": label})
                           for i, (image, label) in enumerate(pairs)]
    tfds.dataset_builders.store_as_tfds_dataset(
        "tiny_images", "1.0.0", features, data_dir=directory, disable_shuffling=True,
        split_datasets={"train": split(gray_images(16, 0)), "test": split(gray_images(4, 1)),
                        "unlabelled": [(0, {"image": gray_images(1, 2)[0][0], "label": -1})]})


def _store_priced_images(tfds, directory):
    """Images with side features: `shop` Text (empty: missing) and `weight` float32."""
    import tensorflow as tf

    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=CLASSES[:2]),
        "shop": tfds.features.Text(), "weight": tfds.features.Tensor(shape=(), dtype=tf.float32)})
    tfds.dataset_builders.store_as_tfds_dataset(
        "priced_images", "1.0.0", features, data_dir=directory, disable_shuffling=True,
        split_datasets={"train": [
            (i, {"image": image, "label": label, "shop": ["north", "south", ""][i % 3],
                 "weight": float(i)}) for i, (image, label) in enumerate(gray_images(8, 3))]})


def test_a_split_is_read_as_rows_with_class_label_names(data_dir):
    rows = readers.read_rows("tfds:tiny_reviews:validation", ["sentence", "label"],
                             "--eval_data", data_dir)
    expected = [(text, ["negative", "positive"][int(label)])
                for text, label in helpers.sentiment_rows(6, seed=1)]
    assert [row.values for row in rows] == expected and rows[0].line == 1


def test_the_text_task_takes_tfds_splits_and_the_class_label_names(data_dir, tmp_path):
    cfg = helpers.experiment(tmp_path, train_data="tfds:tiny_reviews", eval_data="tfds:tiny_reviews",
                             text_column="sentence", tfds_data_dir=data_dir)
    data = TextClassification().load_data(cfg)
    assert data.labels == ("negative", "positive")
    assert len(data.eval) == 6 and set(data.train.labels) <= {"negative", "positive"}


def test_ner_sentences_and_the_class_label_tag_set_come_from_tfds(data_dir, tmp_path):
    cfg = helpers.experiment(tmp_path, task="token_classification", train_data="tfds:tiny_ner",
                             eval_data="tfds:tiny_ner:dev", text_column="tokens",
                             label_column="ner", tfds_data_dir=data_dir)
    data = TokenClassification().load_data(cfg)
    assert data.labels == tuple(NER_TAGS)  # the ClassLabel names, MISC too
    expected = ner_sentences(4, 1)[1:]  # the empty example is skipped
    assert [(s.words, s.tags) for s in data.eval.sentences] == expected
    assert data.eval.sentences[0].lines == [2] * len(expected[0][0])  # the example's index
    assert len(data.train) == 24
    words = TokenClassification().read_file("tfds:tiny_ner:test", cfg, "--input", with_labels=False)
    assert [s.words for s in words.sentences] == [w for w, _ in ner_sentences(3, 2)[1:]]


def test_images_and_the_class_label_names_come_from_tfds(data_dir, tmp_path):
    import tensorflow as tf

    split = images.read_split("tfds:tiny_images:test", "--eval_data", "image", "label",
                              tfds_data_dir=data_dir)
    expected = gray_images(4, 1)
    assert split.labels == [CLASSES[label] for _, label in expected]
    assert split.paths[0] == "tfds:tiny_images:test#1"
    for i, (image, _) in enumerate(expected):  # the stored PNG, as the task decodes it
        assert np.array_equal(images.decode(split.read(i)).numpy(), np.repeat(image, 3, -1))
    assert split.subset([1], "x").read(0) == split.read(1)
    served = ImageClassification().serving_examples(split)["image_bytes"]
    assert served == [split.read(i) for i in range(4)]  # the stored PNGs, as TF Serving gets them
    cfg = helpers.experiment(tmp_path, task="image_classification", train_data="tfds:tiny_images",
                             image_column="image", tfds_data_dir=data_dir)
    assert ImageClassification().load_data(cfg).labels == tuple(CLASSES)
    assert tf.io.gfile.listdir(str(tmp_path)) == []  # nothing written beside the data
    with pytest.raises(UserError, match=r"--test_data=tfds:tiny_images:unlabelled: example 1 has "
                                        r"class id -1 in feature 'label', not one of its 3 "
                                        r"classes .*; give a labelled split\."):
        images.read_split("tfds:tiny_images:unlabelled", "--test_data", "image", "label",
                          tfds_data_dir=data_dir)
    assert len(images.read_split("tfds:tiny_images:unlabelled", "--input", "image", "label",
                                 with_labels=False, tfds_data_dir=data_dir)) == 1  # to predict


@pytest.mark.parametrize("task, flags", [
    ("token_classification", dict(train_data="tfds:tiny_ner", eval_data="tfds:tiny_ner:dev",
                                  text_column="tokens", label_column="ner")),
    ("image_classification", dict(train_data="tfds:tiny_images", eval_data="tfds:tiny_images:test",
                                  image_column="image")),
])
def test_a_task_trains_and_evaluates_from_tfds_inputs(data_dir, tmp_path, task, flags):
    backbone = (image_helpers.tiny_image_preset(tmp_path) if task == "image_classification"
                else helpers.tiny_bert_preset(tmp_path))
    cfg = helpers.experiment(tmp_path, task=task, backbone=backbone, tfds_data_dir=data_dir,
                             max_steps=2, checkpoint_steps=2, batch_size=4, **flags)
    metrics = workflow.train(cfg)
    with open(os.path.join(cfg.model_dir, "eval", "metrics.json")) as f:
        assert json.load(f) == metrics and metrics["step"] == 2
    with open(os.path.join(cfg.model_dir, "experiment.json")) as f:
        assert json.load(f)["labels"] == (NER_TAGS if task == "token_classification" else CLASSES)
    output = str(tmp_path / "predictions.jsonl")
    count = workflow.predict(cfg.model_dir, flags["eval_data"], output)
    with open(output) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == count == 4  # dev: 4 sentences (its empty one skipped); test: 4 images


@pytest.mark.parametrize("spec, columns, message", [
    ("tfds:absent_set", ["text"], r"TFDS dataset absent_set is not in .*; prepare it once .*"
                                  r"tfds build absent_set --data_dir=DIR.*--tfds_data_dir=DIR"),
    ("tfds:imdb_reviews", ["text"], r"TFDS dataset imdb_reviews is not prepared in .*; "
                                    r"prepare it once where there is a network"),
    ("tfds:tiny_reviews:dev", ["sentence"], r"name a split of the dataset \(train, validation\)"),
    ("tfds:tiny_reviews", ["text"], r"has no feature 'text' \(features: label, sentence\)"),
])
def test_a_missing_dataset_split_or_feature_is_one_sentence(data_dir, spec, columns, message):
    with pytest.raises(UserError, match=message):
        readers.read_rows(spec, columns, "--train_data", data_dir)


def test_a_malformed_spec_is_refused_before_anything_is_imported():
    with pytest.raises(UserError, match=r"tfds:NAME\[/CONFIG\]\[:SPLIT\]"):
        tfds_source.parse("tfds:Bad Name", "--train_data")
    assert tfds_source.parse("tfds:glue/sst2", "--eval_data") == ("glue", "sst2", "validation")
    assert tfds_source.parse("tfds:imdb_reviews:train[:90%]", "--train_data").split == "train[:90%]"


@pytest.mark.parametrize("task, flags, message", [
    ("token_classification", dict(text_column="words", label_column="ner"),
     r"--train_data=tfds:tiny_ner has no feature 'words' \(features: ner, pos, title, tokens\); "
     r"set --text_column to a feature key\."),
    ("token_classification", dict(text_column="title", label_column="ner"),
     r"--text_column=title is a Text of shape \(\), not a sequence of words \(Sequence\(Text\)\); "
     r"set --text_column to such a feature"),
    ("token_classification", dict(text_column="tokens", label_column="tokens"),
     r"--label_column=tokens is a Sequence\(Text\), not a sequence of tags"),
    ("token_classification", dict(text_column="tokens", label_column="pos"),
     r"--label_column=pos holds tags such as NNP, VBD, IN, not O or B-/I-/E-/S-TYPE entity tags"),
    ("image_classification", dict(image_column="label"),
     r"--image_column=label is a ClassLabel of shape \(\), not an image \(Image\); set "
     r"--image_column to such a feature \(features: image, label\)\."),
    ("image_classification", dict(image_column="path"),
     r"has no feature 'path' \(features: image, label\); set --image_column"),
])
def test_a_missing_or_wrong_kind_of_feature_names_its_flag(data_dir, tmp_path, task, flags,
                                                           message):
    name = "tiny_ner" if task == "token_classification" else "tiny_images"
    cfg = helpers.experiment(tmp_path, task=task, train_data=f"tfds:{name}",
                             tfds_data_dir=data_dir, **flags)
    with pytest.raises(UserError, match=message):
        get_task(task).load_data(cfg)
    assert not os.path.exists(cfg.model_dir)


def test_image_side_features_come_from_tfds_features(data_dir, tmp_path):
    cfg = helpers.experiment(tmp_path, task="image_classification", train_data="tfds:priced_images",
                             image_column="image", tfds_data_dir=data_dir, holdout_fraction=0.25,
                             categorical_columns=("shop",), numeric_columns=("weight",))
    data = ImageClassification().load_data(cfg)
    stats = json.loads(data.learned["side_feature_stats"])
    assert sorted(stats["categorical"]["shop"]) == ["north", "south"]
    split = data.train
    assert all(isinstance(v, float) for v in split.side["weight"])
    assert {split.side["shop"][i] for i in range(len(split))} <= {"north", "south", ""}
    assert ImageClassification().example(split, 0)["weight"] == split.side["weight"][0]
