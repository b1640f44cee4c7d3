"""Read a directory written by `python -m tfimitate.prepare`: manifest.json + tokenized shards.

The layout (any file system):
    <dir>/manifest.json                         written last: no manifest, no prepared data
    <dir>/train-00000-of-00016.tfrecord.gz      GZIP TFRecords of tf.Example, length-sorted
    <dir>/holdout-...  eval-...  test-...       the hold-out (without --eval_data), eval, test
Each record holds `token_ids` and `segment_ids` (int64 lists trimmed to the example's
length), `label` (int64 class id), `text` and, for text pairs, `pair` (bytes), and the raw
value of each side column the manifest names (`side/<column>`: one float, or one bytes
string; absent when missing). `parse` turns them back into what the backbone's keras-hub
preprocessor gives after trimming (data/pipelines.py `encoded`) and the side columns as a
table's are parsed (float32 NaN or "" when missing), so prepared shards and raw text train
on the same batches; the side columns' preprocessing learned on the training split at
prepare time is the manifest's `side_feature_stats`.

Example:
    if is_prepared(cfg.train_data):
        manifest = load(cfg.train_data, "--train_data")
        check_tokenizer(manifest, backbones.tokenizer_fingerprint(preprocessor), "--train_data", cfg)
        examples = dataset(manifest, "train", input_context)  # {"token_ids": ..., "labels": ...}
"""

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional

from absl import logging

from tfimitate import files
from tfimitate.errors import UserError

FORMAT = "tfimitate.prepared/1"
MANIFEST = "manifest.json"
ROLES = ("train", "holdout", "eval", "test")
# The preprocessor features a record stores (padding_mask is all True after trimming).
STORED = ("token_ids", "segment_ids")
PARSE_BATCH = 256
CYCLE_LENGTH = 16  # shards read at once
# Prefix of a side column's feature (tasks/side_features.py uses it as its PREFIX in tf.data).
SIDE = "side/"
SHARD_NAME = re.compile(r"^(?P<role>[a-z]+)-\d{5}-of-\d{5}\.tfrecord\.gz$")


@dataclasses.dataclass
class Manifest:
    """manifest.json of a prepared directory (`directory` is where it was read from).

    `features` names the preprocessor's outputs (e.g. padding_mask, segment_ids, token_ids;
    RoBERTa-like backbones have no segment_ids). `numeric_columns`/`categorical_columns`
    are the side columns the records carry and `side_feature_stats` their preprocessing
    (JSON, tasks/side_features.py), learned on the train shards' examples; a manifest
    written before side columns existed has none of the three.
    """

    task: str
    backbone: str
    sequence_length: int
    tokenizer_fingerprint: str
    features: List[str]
    text_column: str
    text_pair_column: Optional[str]
    label_column: str
    labels: List[str]
    label_counts: Dict[str, Dict[str, int]]
    examples: Dict[str, int]
    files: Dict[str, List[str]]
    length_histogram: Dict[str, Dict[str, int]]
    duplicates_dropped: int
    eval_overlap: Dict[str, int]
    holdout_fraction: Optional[float]
    seed: int
    created_by: str
    format: str = FORMAT
    numeric_columns: List[str] = dataclasses.field(default_factory=list)
    categorical_columns: List[str] = dataclasses.field(default_factory=list)
    side_feature_stats: Optional[str] = None
    directory: str = dataclasses.field(default="", compare=False)

    def paths(self, role):
        """Full paths of the shards of `role` (train, holdout, eval or test)."""
        if role not in self.files:
            raise UserError(f"{self.directory} holds no '{role}' shards (it has "
                            f"{', '.join(self.files) or 'none'}); run tfimitate.prepare with "
                            f"the data for it, or give that data as a file.")
        return [join(self.directory, name) for name in self.files[role]]

    def to_json(self):
        """The manifest.json text (without `directory`)."""
        values = dataclasses.asdict(self)
        del values["directory"]
        return json.dumps(values, indent=1, sort_keys=True) + "\n"


def join(directory, name):
    return f"{directory.rstrip('/')}/{name}" if files.is_remote(directory) else os.path.join(directory, name)


def is_prepared(spec):
    """True when `spec` is a directory (local or with a scheme, e.g. gs://) holding a
    manifest.json; False for files, patterns, lists and `tfds:` specs.

    Example:
        is_prepared("prepared/sst2")  # True after python -m tfimitate.prepare --output_dir=prepared/sst2
    """
    if not spec or any(c in spec for c in "*?[,") or spec.startswith(("tfds:", "package:")):
        return False
    if not files.is_remote(spec):
        spec = os.path.expanduser(spec)
        if not os.path.isdir(spec):
            return False
    return files.isfile(join(spec, MANIFEST))


def load(spec, flag):
    """The Manifest of prepared directory `spec`; UserError naming the file if it is
    missing, not JSON, not this format or inconsistent, or names a shard that is missing.

    Example:
        load("prepared/sst2", "--train_data").paths("train")  # ['prepared/sst2/train-00000-of-00002.tfrecord.gz', ...]
    """
    directory = spec if files.is_remote(spec) else os.path.expanduser(spec)
    path = join(directory, MANIFEST)
    if not files.isfile(path):
        raise UserError(f"{flag}={spec}: {path} does not exist, so this is no prepared "
                        "directory (or its tfimitate.prepare run did not finish); run "
                        "python -m tfimitate.prepare with --output_dir there.")
    try:
        values = json.loads(files.read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{flag}={spec}: {path} is not valid JSON ({error}); run "
                        "tfimitate.prepare again.") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        found = values.get("format") if isinstance(values, dict) else type(values).__name__
        raise UserError(f"{flag}={spec}: {path} is not a {FORMAT} manifest (format: {found}); "
                        "run this version's tfimitate.prepare again.")
    names = {field.name for field in dataclasses.fields(Manifest)} - {"directory"}
    optional = {"numeric_columns", "categorical_columns", "side_feature_stats"}
    missing = sorted(names - optional - set(values))
    unknown = sorted(set(values) - names)
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown keys {', '.join(unknown)}"
        raise UserError(f"{flag}={spec}: {path} {what}; run tfimitate.prepare again.")
    manifest = Manifest(directory=directory, **values)
    _check_files(manifest, path, flag, spec)
    return manifest


def _check_files(manifest, path, flag, spec):
    """Refuses a manifest whose roles, example counts or shard files do not add up."""
    present = set(files.listdir(manifest.directory))
    for role, names in manifest.files.items():
        if role not in ROLES or not isinstance(names, list) or not names:
            raise UserError(f"{flag}={spec}: {path} lists files of '{role}', which is not one "
                            f"of {', '.join(ROLES)} or has none; run tfimitate.prepare again.")
        absent = [name for name in names if name not in present]
        if absent:
            raise UserError(f"{flag}={spec}: shard {join(manifest.directory, absent[0])} named in "
                            f"{path} is missing ({len(absent)} of {len(names)} '{role}' shards); "
                            "copy the whole directory, or run tfimitate.prepare again.")
    if "train" not in manifest.files or not manifest.labels:
        raise UserError(f"{flag}={spec}: {path} has no train shards or no labels; run "
                        "tfimitate.prepare again.")


def check_tokenizer(manifest, fingerprint, flag, cfg=None):
    """Refuses prepared data the run cannot use as it is: tokenized by another tokenizer
    (`fingerprint`, from backbones.tokenizer_fingerprint) or, given the run's `cfg`, at
    another --sequence_length, from other text/label columns, or with other side columns
    than the run names (a run naming none trains on the text and leaves them unread).

    Example:
        check_tokenizer(manifest, backbones.tokenizer_fingerprint(preprocessor), "--train_data", cfg)
    """
    where = f"{flag}={manifest.directory}"
    if cfg is not None:
        if cfg.sequence_length != manifest.sequence_length:
            raise UserError(
                f"{where} was prepared with --sequence_length={manifest.sequence_length}, not "
                f"{cfg.sequence_length}; run tfimitate.prepare again with this length, or train "
                f"with --sequence_length={manifest.sequence_length}.")
        for name in ("text_column", "text_pair_column", "label_column"):
            if getattr(cfg, name) != getattr(manifest, name):
                raise UserError(
                    f"{where} was prepared with --{name}={getattr(manifest, name)}, not "
                    f"{getattr(cfg, name)}; give --{name}={getattr(manifest, name)}, or run "
                    "tfimitate.prepare again with your columns.")
        for name in ("numeric_columns", "categorical_columns"):
            given, kept = list(getattr(cfg, name) or ()), getattr(manifest, name)
            if given and given != kept:
                raise UserError(
                    f"{where} was prepared with --{name}={','.join(kept) or '(none)'}, not "
                    f"{','.join(given)}; give --{name}={','.join(kept)} (or no side columns), "
                    "or run tfimitate.prepare again with your side columns.")
    if fingerprint != manifest.tokenizer_fingerprint:
        given = f"--backbone={cfg.backbone}" if cfg is not None else "the --backbone"
        raise UserError(
            f"{where} was prepared with another tokenizer (fingerprint "
            f"{manifest.tokenizer_fingerprint[:12]}, backbone {manifest.backbone}, "
            f"sequence_length {manifest.sequence_length}) than {given} gives "
            f"({fingerprint[:12]}); run tfimitate.prepare again with this backbone, or train "
            f"with --backbone={manifest.backbone}.")


def serialize(features, label, text, pair=None, side=None):
    """One record: the tf.Example (bytes) of an example's trimmed preprocessor `features`
    (name -> int sequence; those in STORED are kept), class id `label`, `text`, `pair` and
    the `side` columns' values (name -> float, NaN when missing, or str, "" when missing;
    a missing one is left out).

    Example:
        serialize({"token_ids": [101, 2204, 102], "segment_ids": [0, 0, 0]}, 1, "good",
                  side={"age": 3.0, "plan": ""})
    """
    import tensorflow as tf

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def string(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    feature = {name: ints(features[name]) for name in STORED if name in features}
    feature["label"] = ints([label])
    feature["text"] = string(text)
    if pair is not None:
        feature["pair"] = string(pair)
    for name, value in (side or {}).items():
        if isinstance(value, str):
            if value:
                feature[SIDE + name] = string(value)
        elif value == value:  # not NaN
            feature[SIDE + name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    # deterministic: the feature map in key order (else its order varies between processes,
    # and so would the shards' bytes and their sort order)
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse(manifest):
    """A function: serialized tf.Example records (tf.string [batch]) -> a dict of batched
    features that `.unbatch()` turns into the per-example features of the raw-text path:
    the preprocessor's (`token_ids`, `padding_mask`, `segment_ids`, as `manifest.features`
    says) int32/bool [length], `labels` int32 [], `text` (and `pair` for text pairs) tf.string
    [], and each side column as `side/<column>` (float32, NaN when missing; tf.string, "").

    Example:
        ds = tf.data.TFRecordDataset(paths, "GZIP").batch(256).map(parse(manifest)).unbatch()
    """
    import tensorflow as tf

    stored = [name for name in STORED if name in manifest.features]
    spec = {name: tf.io.RaggedFeature(tf.int64) for name in stored}
    spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    spec["text"] = tf.io.FixedLenFeature([], tf.string)
    if manifest.text_pair_column:
        spec["pair"] = tf.io.FixedLenFeature([], tf.string)
    for name in manifest.numeric_columns:
        spec[SIDE + name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
    for name in manifest.categorical_columns:
        spec[SIDE + name] = tf.io.FixedLenFeature([], tf.string, default_value="")
    with_mask = "padding_mask" in manifest.features

    def parse_batch(serialized):
        record = tf.io.parse_example(serialized, spec)
        features = {name: tf.cast(record[name], tf.int32) for name in stored}
        if with_mask:
            features["padding_mask"] = tf.ones_like(features["token_ids"], tf.bool)
        features["labels"] = tf.cast(record["label"], tf.int32)
        features["text"] = record["text"]
        if "pair" in record:
            features["pair"] = record["pair"]
        features.update({key: value for key, value in record.items() if key.startswith(SIDE)})
        return features

    return parse_batch


def dataset(manifest, role, input_context=None):
    """tf.data of the per-example features (`parse`) of `role`'s shards, read in parallel
    in a fixed order. With a tf.distribute.InputContext of several input pipelines, each
    pipeline reads its own shards (pipeline i takes shards i, i + n, ...), or, with fewer
    shards than pipelines, every n-th example; the log says which.

    Example:
        for features in dataset(load("prepared/sst2", "--train_data"), "train").take(1): ...
    """
    import tensorflow as tf

    paths = manifest.paths(role)
    by_example = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(paths) >= count:
            paths = paths[index::count]
            logging.info("%s %s: input pipeline %d of %d reads %d of its shards.",
                         manifest.directory, role, index, count, len(paths))
        else:
            by_example = (count, index)
            logging.info("%s %s: %d shards for %d input pipelines, so every pipeline reads all "
                         "shards and keeps every %d-th example (run tfimitate.prepare with "
                         "--num_shards of at least %d to split by shard).", manifest.directory,
                         role, len(paths), count, count, count)
    records = tf.data.Dataset.from_tensor_slices(paths).interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(CYCLE_LENGTH, len(paths)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    if by_example is not None:
        records = records.shard(*by_example)
    return (records.batch(PARSE_BATCH)
            .map(parse(manifest), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())
