"""Structured side features: numeric and categorical columns beside the text, preprocessed
by TF ops learned on the training split, the same in tf.data and inside the exported graph.

`--numeric_columns=a,b` and `--categorical_columns=c` name columns of the same file. What is
learned on the training split only (saved with the run as --side_feature_stats, JSON):
- numeric: the mean and standard deviation of the present values; a value becomes
  (value - mean) / std, and a missing value (empty, `null`, NaN) the learned default, the
  mean (0 after scaling), with a missing indicator of 1 beside it;
- categorical: the vocabulary (at most MAX_VOCABULARY most frequent values, ties by
  value); a value becomes a one-hot vector over it plus an out-of-vocabulary slot, and a
  missing value (empty, `null`) all zeros with a missing indicator of 1.
So every column gives [value, missing] or [one-hot..., OOV, missing]; the concatenation
(`encode`) is joined to the backbone's pooled output before the head. A served request
sends raw values: numeric columns as float32 (NaN: missing), categorical ones as strings
("" : missing); in a tf.Example an absent feature is missing.

Example:
    stats = learn({"age": [3.0, nan, 5.0]}, {"plan": ["pro", "", "free"]}, "train.csv")
    features = encode(json.loads(stats), {"age": ages, "plan": plans})  # float32 [n, 2 + 4]
"""

import collections
import dataclasses
import json
import math

import numpy as np
from absl import logging

from tfimitate import options
from tfimitate.data import prepared
from tfimitate.errors import UserError

MAX_VOCABULARY = 1000
# The model input that carries the encoded side features.
INPUT = "side_features"
MISSING_TEXT = ("", "null", "none", "nan", "na")
# A number as a streamed cell may write it, and the mark of the assertion refusing another.
NUMBER = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
NOT_A_NUMBER = "tfimitate: not a number"
# The tasks that join side features to their pooled output (the others refuse them).
TASKS = ("text_classification", "text_regression", "image_classification", "image_regression")

OPTIONS = (
    options.names(
        "numeric_columns", None,
        "Text and image tasks: numeric columns of the data file (a table, listing, TFRecord "
        "features or TFDS features) fed beside the text or image (standardised with the "
        "training split's mean/std; missing: the mean plus a missing indicator)."),
    options.names(
        "categorical_columns", None,
        "Text and image tasks: categorical columns of the data file fed beside the text or "
        "image (one-hot over the training split's values plus an out-of-vocabulary slot; "
        "missing: a missing indicator)."),
    options.string(
        "side_feature_stats", None,
        "Learned on the training split for --numeric_columns/--categorical_columns and saved "
        "with the run (JSON: means, stds, vocabularies); not set by hand."),
)



def given(cfg):
    """True where the run has side columns."""
    return bool(cfg.numeric_columns or cfg.categorical_columns)


# The text tasks' recipe with side columns and the packaged backbone: the side features join
# a new head, whose weights move about one learning rate per step, so at a backbone's rate
# they stay small. On films (benchmarks/movies.py, 400 steps) the catalogue columns raised
# test Pearson from 0.21 to 0.25 fine-tuned at 1.5e-4 from the start, to 0.45 with the head
# alone at 3e-3 for the first half. A choice of the user's own (rate, frozen phase, which
# weights train, backbone) makes the entries step aside.
_OWN_CHOICE = ("learning_rate", "freeze_backbone_steps", "freeze_backbone_fraction",
               "fine_tune_layers", "freeze", "unfreeze_every_steps", "lora_rank", "backbone")
HEAD_FIRST_RECIPE = (
    options.Recipe("learning_rate", 3e-3,
                   "side columns join a new head, which learns at a head's rate while the "
                   "backbone waits", unless=_OWN_CHOICE, when=given),
    options.Recipe("freeze_backbone_fraction", 0.5,
                   "with side columns the head trains alone for the first half of the steps, "
                   "then the backbone is fine-tuned", unless=_OWN_CHOICE, when=given),
    options.Recipe("fine_tune_learning_rate", 1.5e-4,
                   "the packaged MiniLM-L6 is fine-tuned at its own rate",
                   unless=_OWN_CHOICE + ("fine_tune_learning_rate",), when=given),
    options.Recipe("keep_best_phase", True,
                   "fine-tuning the backbone is kept only if it raises the eval score",
                   unless=_OWN_CHOICE + ("early_stopping_patience",), when=given),
)


def columns(cfg):
    """(numeric, categorical) column names of `cfg` (empty tuples when unset)."""
    return tuple(cfg.numeric_columns or ()), tuple(cfg.categorical_columns or ())


def check_columns(cfg, used):
    """Refuses a side column named twice: in the lists, or as one of the `used` columns
    ({flag: column}, e.g. the text, pair and label columns).

    Example:
        check_columns(cfg, {"--text_column": "text", "--label_column": "score"})
    """
    numeric, categorical = columns(cfg)
    owner = {column: flag for flag, column in used.items() if column}
    for flag, names in (("--numeric_columns", numeric), ("--categorical_columns", categorical)):
        for name in names:
            if name in owner:
                raise UserError(f"{flag}: column '{name}' is named twice (also by {owner[name]}); "
                                "give each column once.")
            owner[name] = flag


def refuse(cfg, task, why):
    """Refuses --numeric_columns/--categorical_columns to a task that reads no side
    features (`why`: what it reads instead), naming the tasks that do.

    Example:
        refuse(cfg, "token_classification", "tags each word of a sentence")
    """
    numeric, categorical = columns(cfg)
    if numeric or categorical:
        flag, given = ("--numeric_columns", numeric) if numeric else \
            ("--categorical_columns", categorical)
        raise UserError(f"{flag}={','.join(given)}: --task={task} {why}, so it cannot read side "
                        f"columns; drop --numeric_columns/--categorical_columns, or use "
                        f"{', '.join(TASKS[:-1])} or {TASKS[-1]}.")


def refuse_plain_text(cfg, path, flag):
    """Refuses a .txt input (texts only) to a run with side features."""
    if any(columns(cfg)):
        raise UserError(f"{flag}={path}: this run reads side features; give a table with the "
                        "--numeric_columns/--categorical_columns columns beside the text, not a "
                        ".txt file.")


def parse_numeric(value, where, column):
    """A numeric cell as a float, NaN when missing; one UserError naming `where` for text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip()
    if text.lower() in MISSING_TEXT:
        return math.nan
    try:
        number = float(text)
    except ValueError:
        number = math.inf
    if not math.isfinite(number):
        raise UserError(f"{where}: --numeric_columns={column} holds {text!r}, not a number; fix "
                        "the row, or leave the cell empty (a missing value).")
    return number


def parse_cells(cells, name, numeric):
    """TF ops: the text cells of column `name` (a stream's, any shape) parsed as
    `parse_numeric` (float32, NaN: missing) or `parse_categorical` (stripped, "": missing)
    parse a table's; a numeric cell that is not a number fails an assertion whose message
    holds NOT_A_NUMBER, the column and the cells (tasks/text_stream.py `reading` tells it)."""
    import tensorflow as tf

    text = tf.strings.strip(cells)
    missing = tf.reduce_any(tf.equal(tf.strings.lower(text)[..., tf.newaxis], MISSING_TEXT),
                            axis=-1)
    if not numeric:
        return tf.where(missing, "", text)
    number = tf.strings.regex_full_match(text, NUMBER)
    check = tf.debugging.Assert(tf.reduce_all(number | missing), [NOT_A_NUMBER, name, text],
                                name="side_number")
    with tf.control_dependencies([check]):
        values = tf.strings.to_number(tf.where(number, text, "0"), tf.float32)
    return tf.where(missing, math.nan, values)


def parse_categorical(value):
    """A categorical cell as a string, "" when missing."""
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in MISSING_TEXT else text


def learn(numeric, categorical, source):
    """The preprocessing of the training columns (name -> values) as a JSON string:
    {"numeric": {name: [mean, std]}, "categorical": {name: [values]}}; warns about a
    categorical column with one value (it carries nothing)."""
    summary = Summary()
    summary.add({name: np.array(values, np.float64) for name, values in numeric.items()},
                {name: list(values) for name, values in categorical.items()})
    return summary.learned(source)


def _no_moments():
    """A numeric column's moments before any value (a function: a Summary is pickled
    between Beam workers)."""
    return np.zeros(4, np.float64)


class Summary:
    """What the preprocessing is learned from, gathered batch by batch (a streamed split):
    per numeric column the count, sum and sum of squares of its present values and the
    number of values; per categorical column the count of each present value.

    Example:
        summary = Summary()
        summary.add({"age": np.array([3.0, np.nan])}, {"plan": ["pro", ""]})
        stats = summary.learned("train.csv")   # as learn() gives for the same values
    """

    def __init__(self):
        self.moments = collections.defaultdict(_no_moments)
        self.counts = collections.defaultdict(collections.Counter)

    def add(self, numeric, categorical):
        """One batch: numeric columns as float arrays (NaN: missing), categorical ones as
        strings ("" or b"": missing)."""
        for name, values in numeric.items():
            present = values[~np.isnan(values)]
            self.moments[name] += [len(present), present.sum(), np.square(present).sum(),
                                   len(values)]
        for name, values in categorical.items():
            self.counts[name].update(v.decode() if isinstance(v, bytes) else v
                                     for v in values if v)
        return self

    def merge(self, other):
        """Adds what `other` gathered (e.g. on another Beam worker)."""
        for name, moments in other.moments.items():
            self.moments[name] += moments
        for name, counts in other.counts.items():
            self.counts[name].update(counts)
        return self

    def learned(self, source):
        """The JSON string of `learn`."""
        stats = {"numeric": {}, "categorical": {}}
        for name, (present, total, squares, values) in self.moments.items():
            mean = total / present if present else 0.0
            std = math.sqrt(max(squares / present - mean ** 2, 0.0)) if present else 0.0
            constant = std <= 1e-6 * max(1.0, abs(mean))  # a rounding error is no spread
            stats["numeric"][name] = [float(mean), 1.0 if constant else float(std)]
            if present < values:
                logging.info("%s: --numeric_columns=%s: %d of %d values missing (they get the "
                             "mean %.4g and a missing indicator).", source, name,
                             values - present, values, mean)
        for name, counts in self.counts.items():
            vocabulary = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            if len(vocabulary) <= 1:
                logging.warning("%s: --categorical_columns=%s has %s in the training data; it "
                                "cannot tell examples apart.", source, name,
                                f"one value only ({vocabulary[0]!r})" if vocabulary else "no value")
            stats["categorical"][name] = vocabulary[:MAX_VOCABULARY]
        return json.dumps(stats, sort_keys=True)


def width(stats):
    """The number of encoded features of `stats` (a parsed --side_feature_stats)."""
    return 2 * len(stats["numeric"]) + sum(len(v) + 2 for v in stats["categorical"].values())


def specs_of(stats):
    """Serving inputs of the side columns: {name: tf.TensorSpec [None] float32 or string}."""
    import tensorflow as tf

    found = {name: tf.TensorSpec([None], tf.float32, name=name) for name in stats["numeric"]}
    found.update({name: tf.TensorSpec([None], tf.string, name=name)
                  for name in stats["categorical"]})
    return found


def example_defaults(cfg):
    """What a tf.Example without a side feature stands for: missing (NaN or ""); {} for a
    run without side features (every input of the example signature is then required)."""
    stats = stats_of(cfg)
    if not stats:
        return {}
    found = {name: math.nan for name in stats["numeric"]}
    found.update({name: "" for name in stats["categorical"]})
    return found


def encode(stats, values):
    """float32 [batch, width(stats)] from the raw columns `values` (name -> tensor [batch]:
    float32 with NaN for numeric, tf.string with "" for categorical), in TF ops only
    (core TensorFlow: they run in tf.data and in TF Serving alike)."""
    import tensorflow as tf

    parts = []
    for name, (mean, std) in sorted(stats["numeric"].items()):
        value = tf.cast(values[name], tf.float32)
        missing = tf.math.is_nan(value)
        parts += [tf.where(missing, 0.0, (value - mean) / std), tf.cast(missing, tf.float32)]
    for name, vocabulary in sorted(stats["categorical"].items()):
        value = values[name]
        missing = tf.equal(value, "")
        hits = tf.cast(tf.equal(value[:, tf.newaxis], tf.constant(vocabulary or [""], tf.string)
                                [tf.newaxis, :len(vocabulary)]), tf.float32)
        known = tf.reduce_max(tf.pad(hits, [[0, 0], [0, 1]]), axis=1)
        outside = tf.where(missing, 0.0, 1.0 - known)
        parts += [hits, outside[:, tf.newaxis], tf.cast(missing, tf.float32)[:, tf.newaxis]]
    parts = [p[:, tf.newaxis] if p.shape.rank == 1 else p for p in parts]
    return tf.concat(parts, axis=1)


# ---- What a task with side features calls ----------------------------------------------

# Prefix of the raw side columns among a training example's values (and of their features
# in prepared records).
PREFIX = prepared.SIDE


def stats_of(cfg):
    """The run's parsed --side_feature_stats, or None without side features."""
    return json.loads(cfg.side_feature_stats) if cfg.side_feature_stats else None


def learned(cfg, train):
    """{"side_feature_stats": ...} learned on the training split `train` (its `side`
    columns) when side columns are given and not already learned, else {}."""
    numeric, categorical = columns(cfg)
    if not (numeric or categorical) or cfg.side_feature_stats:
        return {}
    return {"side_feature_stats": learn({n: train.side[n] for n in numeric},
                                        {n: train.side[n] for n in categorical}, train.source)}


def with_learned(cfg, data):
    """The splits.Data `data` with `learned(cfg, data.train)` added to what it learned: what
    a task's load_data returns when its training split carries the side columns.

    Example:
        return with_learned(cfg, super().load_data(cfg))
    """
    return dataclasses.replace(data, learned=dict(data.learned, **learned(cfg, data.train)))


def parse_columns(cells, cfg, where):
    """The side cells of a split as read (column -> one cell per example) parsed: floats
    (NaN: missing) for --numeric_columns, strings ("": missing) for --categorical_columns;
    `where(i)` names example i in the error about a cell that is not a number.

    Example:
        parse_columns({"age": ["3", ""]}, cfg, lambda i: f"t.csv:{i + 2}")  # {"age": [3.0, nan]}
    """
    numeric, categorical = columns(cfg)
    parsed = {name: [parse_numeric(value, where(i), name) for i, value in enumerate(cells[name])]
              for name in numeric}
    parsed.update({name: [parse_categorical(value) for value in cells[name]]
                   for name in categorical})
    return parsed


def record_values(side, i):
    """Example i's side values (column -> value; None when missing), for records."""
    return {name: None if values[i] == "" or values[i] != values[i] else values[i]
            for name, values in side.items()}


def read_row(values, cfg, where):
    """The side columns' cells `values` (in columns(cfg) order) parsed: {name: value}."""
    numeric, categorical = columns(cfg)
    return {name: parse_numeric(value, where, name) if i < len(numeric)
            else parse_categorical(value) for i, (name, value) in
            enumerate(zip(numeric + categorical, values))}


def example_columns(side):
    """The raw side columns of a split (name -> values) as tf.data example values
    ("side/<name>": float32 or tf.string)."""
    import tensorflow as tf

    return {f"{PREFIX}{name}": tf.constant(
        values, tf.float32 if values and isinstance(values[0], float) else tf.string)
        for name, values in side.items()}


def add_encoded(batch, features, stats):
    """Pops the raw side columns from the example `batch` (a dict) and, with `stats`, adds
    their encoding to the model `features` as `side_features`."""
    side = {key[len(PREFIX):]: batch.pop(key) for key in list(batch) if key.startswith(PREFIX)}
    if stats:
        features[INPUT] = encode(stats, side)


def join(inputs, pooled, stats):
    """(model inputs, pooled features) with the side features' input added and joined to
    the pooled output (unchanged without `stats`)."""
    if not stats:
        return inputs, pooled
    import keras

    side = keras.Input((width(stats),), name=INPUT)
    joined = keras.layers.Concatenate(name="with_side_features")(
        [pooled, keras.ops.cast(side, pooled.dtype)])
    return dict(inputs, **{INPUT: side}), joined


def serving(specs, front, stats):
    """A serving signature's (specs, front) with the raw side columns as inputs, encoded
    in the graph (unchanged without `stats`)."""
    if not stats:
        return specs, front
    joined = lambda inputs: dict(front(inputs), **{INPUT: encode(stats, inputs)})
    return dict(specs, **specs_of(stats)), joined
