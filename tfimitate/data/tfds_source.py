"""Read a TensorFlow Datasets split as a task's examples: `--train_data=tfds:NAME[/CONFIG][:SPLIT]`.

The column flags name feature keys. Text classification reads one text, number or
`ClassLabel` per column (`read_rows`); token classification a `Sequence(Text)` of words
and a `Sequence(ClassLabel)` of IOB2/IOBES tags (`read_sentences`, like TFDS's
`conll2003`: `tokens`, `ner`); image classification an `Image` and a label
(`read_images`, like `fashion_mnist`: `image`, `label`). A `ClassLabel` becomes its
names, and its names are the label set (`label_names`). Datasets are never downloaded:
they must be prepared in `--tfds_data_dir` (default TFDS's own, ~/tensorflow_datasets),
e.g. once on a machine with a network with `tfds build glue/sst2 --data_dir=DIR`. A
dataset written with `tfds.dataset_builders.store_as_tfds_dataset` (from any tf.data
source) is read the same way. TensorFlow Datasets is imported only when a `tfds:` input
is read. Everything read comes back as plain values (tuples, lists, dicts of str, int
and bytes): the readers (readers.py, conll.py, images.py) build their own rows,
sentences and splits from them.

Example:
    rows = read_rows("tfds:glue/sst2:validation", ["sentence", "label"], "--eval_data")
    # [(1, ("it 's a charming ... journey .", "positive")), ...]
    sentences = read_sentences("tfds:conll2003:dev", "tokens", "ner", "--eval_data",
                               conll.TAG_PATTERN)
    # [(['CRICKET', '-', ...], ['O', 'O', ...], [1, 1, ...]), ...]
"""

import re
from typing import NamedTuple, Optional

from absl import logging

from tfimitate import files
from tfimitate.errors import UserError

PREFIX = "tfds:"
SPEC = re.compile(r"^tfds:(?P<name>[a-z0-9_]+)(/(?P<config>[\w.-]+))?(:(?P<split>.+))?$")
# The split a flag reads when the spec names none.
DEFAULT_SPLITS = {"--train_data": "train", "--eval_data": "validation", "--test_data": "test"}
# What a column's feature must be, as said in errors.
KINDS = {"value": "one text, number or ClassLabel per example",
         "words": "a sequence of words (Sequence(Text))",
         "tags": "a sequence of tags (Sequence(ClassLabel))",
         "image": "an image (Image)"}


class Spec(NamedTuple):
    name: str
    config: Optional[str]
    split: str


def is_tfds(spec):
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse(spec, flag):
    """Spec of 'tfds:NAME[/CONFIG][:SPLIT]' (the split defaults by flag: train, validation, test).

    Example:
        parse("tfds:glue/sst2", "--eval_data")  # Spec("glue", "sst2", "validation")
    """
    match = SPEC.match(spec)
    if not match:
        raise UserError(f"{flag}={spec}: a TFDS input is tfds:NAME[/CONFIG][:SPLIT] with a "
                        "lower-case dataset name, e.g. tfds:glue/sst2:train.")
    split = match.group("split") or DEFAULT_SPLITS.get(flag)
    if split is None:
        raise UserError(f"{flag}={spec}: name the split, e.g. {spec}:train.")
    return Spec(match.group("name"), match.group("config"), split)


def _builder(spec, flag, data_dir):
    """The prepared builder of `spec`; never downloads."""
    import tensorflow_datasets as tfds

    if data_dir and files.is_remote(data_dir):
        files.check_reachable(data_dir, "--tfds_data_dir")
    full = spec.name + (f"/{spec.config}" if spec.config else "")
    where = data_dir or tfds.core.constants.DATA_DIR
    prepare = (f"prepare it once where there is a network (tfds build {full} --data_dir=DIR, "
               "or tfds.dataset_builders.store_as_tfds_dataset for your own data) and give "
               "--tfds_data_dir=DIR")
    try:
        builder = tfds.builder(full, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{flag}: TFDS dataset {full} is not in {where} ({first}); "
                        f"{prepare}.") from None
    if not builder.is_prepared():
        raise UserError(f"{flag}: TFDS dataset {full} is not prepared in {where}; {prepare}.")
    return builder


def _is(kind, feature):
    """Whether `feature` is what a column of `kind` (a key of KINDS) reads."""
    import tensorflow_datasets as tfds

    if kind == "value":
        return not feature.shape
    if kind == "image":
        return isinstance(feature, tfds.features.Image)
    inner = getattr(feature, "feature", None)
    if not isinstance(feature, tfds.features.Sequence):
        return False
    if kind == "words":
        return isinstance(inner, tfds.features.Text)
    return isinstance(inner, tfds.features.ClassLabel) and bool(inner.names)


def _describe(feature):
    inner = getattr(feature, "feature", None)
    name = type(feature).__name__
    if inner is not None:
        return f"{name}({type(inner).__name__})"
    return f"{name} of shape {feature.shape}"


def _features(builder, columns, spec_text, flag):
    """{key: feature} of `columns` ([(key, column flag or None, kind)]), each checked to be
    that kind."""
    features = builder.info.features
    have = ", ".join(sorted(features))
    for key, column_flag, kind in columns:
        if key not in features:
            raise UserError(f"{flag}={spec_text} has no feature '{key}' (features: {have}); "
                            f"set {column_flag or 'the column flags'} to a feature key.")
        if not _is(kind, features[key]):
            named = f"{column_flag}={key}" if column_flag else f"feature '{key}'"
            raise UserError(f"{flag}={spec_text}: {named} is a {_describe(features[key])}, not "
                            f"{KINDS[kind]}; set {column_flag or 'the column flags'} to such a "
                            f"feature (features: {have}).")
    return {key: features[key] for key, _, _ in columns}


def _examples(spec_text, columns, flag, data_dir, decoders=None):
    """(checked features, numpy examples of the split in order) of `columns` (_features')."""
    import tensorflow_datasets as tfds

    spec = parse(spec_text, flag)
    builder = _builder(spec, flag, data_dir)
    features = _features(builder, columns, spec_text, flag)
    try:
        dataset = builder.as_dataset(split=spec.split, shuffle_files=False, decoders=decoders)
    except ValueError as error:  # an unknown split, or a bad slice
        raise UserError(f"{flag}={spec_text}: {str(error).splitlines()[0]}; name a split of "
                        f"the dataset ({', '.join(builder.info.splits)}).") from None
    return features, tfds.as_numpy(dataset)


def _class_name(feature, value, key, where):
    """The name of class id `value` of ClassLabel `feature`; an id outside it is refused."""
    if not 0 <= value < feature.num_classes:
        raise UserError(f"{where} has class id {value} in feature '{key}', not one of its "
                        f"{feature.num_classes} classes (unlabelled splits, like GLUE's test "
                        "splits, store -1); give a labelled split.")
    return feature.int2str(int(value))


def _value(feature, value, key, where):
    """A feature value as the string the tasks read (ClassLabel ids become names)."""
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.ClassLabel):
        return _class_name(feature, value, key, where)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value.item() if hasattr(value, "item") else value)


def read_rows(spec_text, columns, flag, data_dir=None):
    """(1-based index, tuple of the given features as strings) of every example of the split."""
    wanted = [(column, None, "value") for column in columns]
    features, examples = _examples(spec_text, wanted, flag, data_dir)
    return [(index, tuple(_value(features[c], example[c], c, f"{flag}={spec_text}: example "
                                  f"{index}") for c in columns))
            for index, example in enumerate(examples, start=1)]


def read_sentences(spec_text, words_column, tags_column, flag, tag_pattern, data_dir=None,
                   with_tags=True):
    """(words, tags, lines) of every example with words (lines: its 1-based index per word),
    its tags the names of the `tags_column` ClassLabel (all O without `with_tags`); every
    name must match `tag_pattern` (a compiled regular expression of entity tags)."""
    columns = [(words_column, "--text_column", "words")]
    if with_tags:
        columns.append((tags_column, "--label_column", "tags"))
    features, examples = _examples(spec_text, columns, flag, data_dir)
    tag_feature = features[tags_column].feature if with_tags else None
    names = tag_feature.names if with_tags else ()
    wrong = [name for name in names if not tag_pattern.match(name)]
    if wrong:
        raise UserError(f"{flag}={spec_text}: --label_column={tags_column} holds tags such as "
                        f"{', '.join(wrong[:3])}, not O or B-/I-/E-/S-TYPE entity tags; set "
                        "--label_column to the entity tags (conll2003: ner).")
    sentences, empty = [], 0
    for index, example in enumerate(examples, start=1):
        words = [word.decode("utf-8") for word in example[words_column]]
        where = f"{flag}={spec_text}: example {index}"
        tags = ([_class_name(tag_feature, i, tags_column, where) for i in example[tags_column]]
                if with_tags else ["O"] * len(words))
        if len(words) != len(tags):
            raise UserError(f"{where} has {len(words)} words but {len(tags)} tags; fix the "
                            "dataset (one tag per word).")
        if not words:
            empty += 1
            continue
        sentences.append((words, tags, [index] * len(words)))
    if empty:
        logging.warning("%s: skipped %d examples without words.", spec_text, empty)
    if not sentences:
        raise UserError(f"{flag}={spec_text}: no example has words; check --text_column.")
    return sentences


def read_images(spec_text, image_column, label_column, flag, data_dir=None, with_labels=True,
                side=()):
    """The fields of an images.Split of every example: {"source", "paths" (`SPEC#INDEX`,
    1-based), "labels" ("" without `with_labels`), "lines" (0s), "contents" (each encoded
    image as stored, PNG/JPEG bytes), "side" (each `side` feature's values as strings)}."""
    import tensorflow_datasets as tfds

    columns = [(image_column, "--image_column", "image")]
    columns += [(name, "--numeric_columns/--categorical_columns", "value") for name in side]
    if with_labels:
        columns.append((label_column, "--label_column", "value"))
    features, examples = _examples(spec_text, columns, flag, data_dir,
                                   decoders={image_column: tfds.decode.SkipDecoding()})
    contents, labels = [], []
    cells = {name: [] for name in side}
    for index, example in enumerate(examples, start=1):
        where = f"{flag}={spec_text}: example {index}"
        contents.append(example[image_column])
        labels.append(_value(features[label_column], example[label_column], label_column,
                             where) if with_labels else "")
        for name in side:
            cells[name].append(_value(features[name], example[name], name, where))
    if not contents:
        raise UserError(f"{flag}={spec_text}: the split holds no images; name another split.")
    return {"source": spec_text,
            "paths": [f"{spec_text}#{i}" for i in range(1, len(contents) + 1)],
            "labels": labels, "lines": [0] * len(contents), "contents": contents, "side": cells}


def label_names(spec_text, column, flag, data_dir=None):
    """The names of `column` if it is a ClassLabel feature (or a sequence of them) with
    names, else None."""
    import tensorflow_datasets as tfds

    builder = _builder(parse(spec_text, flag), flag, data_dir)
    features = builder.info.features
    feature = features[column] if column in features else None
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel): tags
    if isinstance(feature, tfds.features.ClassLabel) and feature.names:
        return tuple(feature.names)
    return None


def class_names(cfg):
    """The label names of the ClassLabel --label_column of a tfds: --train_data, in
    class order (else None): the label set, unless --labels is given."""
    if not is_tfds(cfg.train_data):
        return None
    return label_names(cfg.train_data, cfg.label_column, "--train_data", cfg.tfds_data_dir)
