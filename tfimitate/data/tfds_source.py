"""Read a TensorFlow Datasets split as table rows: `--train_data=tfds:NAME[/CONFIG][:SPLIT]`.

The column flags name feature keys (`--text_column=sentence --label_column=label`); a
`ClassLabel` label becomes its name, and its names are the label set (`label_names`).
Datasets are never downloaded: they must be prepared in `--tfds_data_dir` (default
TFDS's own, ~/tensorflow_datasets), e.g. once on a machine with a network with
`tfds build glue/sst2 --data_dir=DIR`. A dataset written with
`tfds.dataset_builders.store_as_tfds_dataset` (from any tf.data source) is read the same way.
TensorFlow Datasets is imported only when a `tfds:` input is read.

Example:
    rows = read_rows("tfds:glue/sst2:validation", ["sentence", "label"], "--eval_data")
    # [Row(line=1, values=("it 's a charming ... journey .", "positive")), ...]
"""

import re
from typing import NamedTuple, Optional

from tfimitate.errors import UserError

PREFIX = "tfds:"
SPEC = re.compile(r"^tfds:(?P<name>[a-z0-9_]+)(/(?P<config>[\w.-]+))?(:(?P<split>.+))?$")
# The split a flag reads when the spec names none.
DEFAULT_SPLITS = {"--train_data": "train", "--eval_data": "validation", "--test_data": "test"}


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


def _value(feature, value, name):
    """A feature value as the string the tasks read (ClassLabel ids become names)."""
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.ClassLabel):
        return feature.int2str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "shape") and value.shape:
        raise UserError(f"feature '{name}' holds arrays, not one text or label per example; "
                        "choose another feature.")
    return str(value.item() if hasattr(value, "item") else value)


def _features(builder, columns, spec_text, flag):
    features = builder.info.features
    for column in columns:
        if column not in features:
            raise UserError(f"{flag}={spec_text} has no feature '{column}' (features: "
                            f"{', '.join(sorted(features))}); set the column flags to feature keys.")
    return {column: features[column] for column in columns}


def read_rows(spec_text, columns, flag, data_dir=None):
    """The given features of every example of the split, as readers.Row (line: 1-based index)."""
    import tensorflow_datasets as tfds

    from tfimitate.data.readers import Row

    spec = parse(spec_text, flag)
    builder = _builder(spec, flag, data_dir)
    features = _features(builder, columns, spec_text, flag)
    try:
        dataset = builder.as_dataset(split=spec.split, shuffle_files=False)
    except ValueError as error:  # an unknown split, or a bad slice
        raise UserError(f"{flag}={spec_text}: {str(error).splitlines()[0]}; name a split of "
                        f"the dataset ({', '.join(builder.info.splits)}).") from None
    rows = []
    for index, example in enumerate(tfds.as_numpy(dataset), start=1):
        rows.append(Row(index, tuple(_value(features[c], example[c], c) for c in columns)))
    return rows


def label_names(spec_text, column, flag, data_dir=None):
    """The names of `column` if it is a ClassLabel feature with names, else None."""
    import tensorflow_datasets as tfds

    builder = _builder(parse(spec_text, flag), flag, data_dir)
    feature = _features(builder, [column], spec_text, flag)[column]
    if isinstance(feature, tfds.features.ClassLabel) and feature.names:
        return tuple(feature.names)
    return None
