"""TensorFlow Datasets inputs (`tfds:NAME[/CONFIG][:SPLIT]`), read offline from a small
dataset prepared in a temporary --tfds_data_dir (no network)."""

import pytest

import helpers
from tfimitate.data import readers, tfds_source
from tfimitate.errors import UserError
from tfimitate.tasks import text_classification


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
    return directory


def test_a_split_is_read_as_rows_with_class_label_names(data_dir):
    rows = readers.read_rows("tfds:tiny_reviews:validation", ["sentence", "label"],
                             "--eval_data", data_dir)
    expected = [(text, ["negative", "positive"][int(label)])
                for text, label in helpers.sentiment_rows(6, seed=1)]
    assert [row.values for row in rows] == expected and rows[0].line == 1


def test_the_text_task_takes_tfds_splits_and_the_class_label_names(data_dir, tmp_path):
    cfg = helpers.experiment(tmp_path, train_data="tfds:tiny_reviews", eval_data="tfds:tiny_reviews",
                             text_column="sentence", tfds_data_dir=data_dir)
    data = text_classification.load_data(cfg)
    assert data.labels == ("negative", "positive")
    assert len(data.eval) == 6 and set(data.train.labels) <= {"negative", "positive"}


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
