"""Text classification data read as a stream (data/streams.py), for splits too large to
hold in memory or spread over many files.

What a streamed split replaces of the in-memory story: the label set comes from --labels
or one fast counting pass (`tally`, which also gives the class counts and the number of
examples; skipped when --labels and --max_steps make it unneeded), the hold-out is the
keyed hash of data/splits.py `held_out` (the in-memory path uses the same one),
duplicates are kept and the eval/train overlap is not counted (tfimitate.prepare does
both), a label outside --labels stops the run at its row (or is dropped with
--drop_unlisted_labels), and evaluation counts class ids batch by batch instead of keeping
a record per example. Side columns (--numeric_columns/--categorical_columns) stream beside
the text as text cells, parsed in tf.data as a table's are (tasks/side_features.py
`parse_cells`); their preprocessing is learned in the counting pass, on the rows the
hold-out leaves for training (prepared shards carry none).

Example:
    split = open_split("data/train-*.tsv", cfg, "--train_data")
    split = with_labels(split, ("0", "1"), tally(split, 0.1, cfg.seed)["train"], False)
"""

import collections
import contextlib
import dataclasses
import json
from typing import Mapping, Optional, Tuple

import numpy as np
from absl import logging

from tfimitate.data import prepared, splits, streams
from tfimitate.errors import UserError
from tfimitate.tasks import side_features

TALLY_BATCH = 1 << 16
UNKNOWN_LABEL = "tfimitate: unknown label"  # marks the stream's label assertion
RAW_SIDE = "raw_side/"  # side values kept beside the encoded ones for prediction records


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit:
    """A split read from files as training goes (compared and hashed by identity).

    Attributes:
        source: what the split is, for messages and reports.
        stream: the files (streams.Source): keys "text", "pair" (pairs), "label" (labelled);
            None for prepared shards.
        holdout: (fraction, seed, held) keeps only the rows the hash holds out (held) or
            those it leaves (not held); None keeps every row.
        labels: the model's labels (class-id order) once known, else None.
        drop_unlisted: drop rows whose label is not in `labels` instead of stopping.
        count: the number of examples, if known (`tally`).
        label_counts: label -> examples, if known.
        manifest, role: prepared shards (data/prepared.py) of that role instead of files.
        flag: the data flag that named it.
        side: (column, numeric) of each side column, streamed as "side/<column>".
    """

    source: str
    stream: Optional[streams.Source]
    holdout: Optional[Tuple[float, int, bool]] = None
    labels: Optional[Tuple[str, ...]] = None
    drop_unlisted: bool = False
    count: Optional[int] = None
    label_counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    manifest: Optional[prepared.Manifest] = None
    role: Optional[str] = None
    flag: str = "--train_data"
    side: Tuple[Tuple[str, bool], ...] = ()

    @property
    def pairs(self):
        if self.manifest is not None:
            return bool(self.manifest.text_pair_column)
        return "pair" in self.stream.keys

    @property
    def labelled(self):
        return self.manifest is not None or "label" in self.stream.keys

    def __len__(self):
        if self.count is None:
            raise RuntimeError(f"{self.source}: the number of examples is not known (no tally)")
        return self.count


def open_split(path, cfg, flag, with_labels=True):
    """The StreamSplit of the files `path` names, checked (columns, .gz integrity)."""
    columns, keys = [cfg.text_column], ["text"]
    if cfg.text_pair_column:
        columns.append(cfg.text_pair_column)
        keys.append("pair")
    if with_labels:
        columns.append(cfg.label_column)
        keys.append("label")
    side = _side(cfg)
    optional = [side_features.PREFIX + name for name, _ in side]
    return StreamSplit(path, streams.open_source(path, columns + [n for n, _ in side],
                                                 keys + optional, flag, optional),
                       flag=flag, side=side)


def open_prepared(manifest, role, flag, labels, cfg=None):
    """The StreamSplit of a prepared directory's `role` shards, counted by its manifest;
    refused if its labels are not the model's. With `cfg`, its side columns (the manifest's,
    prepared.check_tokenizer has checked) are read from the records."""
    if list(labels) != list(manifest.labels):
        raise UserError(f"{flag}={manifest.directory} was prepared with the labels "
                        f"{', '.join(manifest.labels)}, not {', '.join(labels)}; give "
                        f"--labels={','.join(manifest.labels)} or prepare it again.")
    return StreamSplit(f"{manifest.directory} ({role})", None, labels=tuple(labels),
                       count=manifest.examples[role],
                       label_counts=dict(manifest.label_counts.get(role, {})),
                       manifest=manifest, role=role, flag=flag,
                       side=_side(cfg) if cfg is not None else ())


def _side(cfg):
    """(column, numeric) of each side column of `cfg`: numeric, then categorical."""
    numeric, categorical = side_features.columns(cfg)
    return tuple((name, name in numeric) for name in numeric + categorical)


def features(split, encode, input_context=None, shuffle_seed=None, side_feature_stats=None):
    """Per-example model features and "labels" of a labelled split: its prepared shards
    parsed (their side columns encoded with the run's `side_feature_stats`), or its files'
    rows tokenized by `encode` as they come."""
    from tfimitate.data import pipelines

    if split.manifest is None:
        return pipelines.encoded(rows(split, input_context, shuffle_seed), encode, cache=False,
                                 untrimmed=(side_features.INPUT,))
    stats = json.loads(side_feature_stats) if split.side and side_feature_stats else None
    raw = ("text", "pair")

    def model_features(example):
        example = {k: v[None] if k.startswith(side_features.PREFIX) else v
                   for k, v in example.items() if k not in raw}
        found = {}
        side_features.add_encoded(example, found, stats)  # pops every raw side column
        example.update({name: value[0] for name, value in found.items()})
        return example

    return prepared.dataset(split.manifest, split.role, input_context).map(model_features)


def rows(split, input_context=None, shuffle_seed=None, sequential=False):
    """The split's examples as tf.data: "text" (and "pair") strings, the side columns parsed
    ("side/<column>": float32 or strings) and, for a labelled split with known labels,
    "labels" class ids; empty texts and (per `holdout`) rows dropped.
    `sequential`: file after file (streams.examples)."""
    import tensorflow as tf

    ds = streams.examples(split.stream, input_context, shuffle_seed, sequential)
    ds = ds.filter(lambda row: tf.strings.length(tf.strings.strip(row["text"])) > 0)
    if split.side:
        ds = ds.map(lambda row: dict(row, **{
            side_features.PREFIX + name: side_features.parse_cells(
                row[side_features.PREFIX + name], name, numeric) for name, numeric in split.side}),
            num_parallel_calls=tf.data.AUTOTUNE)
    if split.holdout is not None:
        fraction, seed, held = split.holdout
        ds = ds.filter(lambda row: tf.equal(
            splits.held_out(splits.example_key(row["text"], row.get("pair")), fraction, seed), held))
    if not split.labelled or split.labels is None:
        return ds
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(split.labels), tf.range(len(split.labels), dtype=tf.int32)), -1)

    def with_id(row):
        row = dict(row)
        label = tf.strings.strip(row.pop("label"))
        row["labels"] = table.lookup(label)
        if not split.drop_unlisted:
            with tf.control_dependencies([tf.debugging.Assert(
                    row["labels"] >= 0, [UNKNOWN_LABEL, label], name="known_label")]):
                row["labels"] = tf.identity(row["labels"])
        return row

    ds = ds.map(with_id, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.filter(lambda row: row["labels"] >= 0) if split.drop_unlisted else ds


def tally(split, fraction, seed):
    """One fast pass over a labelled split: {"train": Counter, "held": Counter} of labels of
    the rows the hold-out leaves and takes (`fraction` 0: all in "train"), and "side": the
    side_features.Summary of the rows it leaves."""
    import tensorflow as tf

    counts = {"train": collections.Counter(), "held": collections.Counter(),
              "side": side_features.Summary()}
    keys = [side_features.PREFIX + name for name, _ in split.side]

    def mark(batch):
        key = splits.example_key(batch["text"], batch.get("pair"))
        held = splits.held_out(key, fraction, seed) if fraction > 0 else tf.zeros_like(key, tf.bool)
        return dict({k: batch[k] for k in keys}, label=tf.strings.strip(batch["label"]), held=held)

    ds = rows(dataclasses.replace(split, labels=None)).batch(TALLY_BATCH).map(
        mark, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    with reading([split]):
        for batch in ds.as_numpy_iterator():
            labels, held = batch["label"], batch["held"]
            for part, mask in (("train", ~held), ("held", held)):
                values, numbers = np.unique(labels[mask], return_counts=True)
                counts[part].update({v.decode(): int(n) for v, n in zip(values, numbers)})
            cells = {name: batch[side_features.PREFIX + name][~held] for name, _ in split.side}
            counts["side"].add(
                {n: cells[n].astype(np.float64) for n, numeric in split.side if numeric},
                {n: cells[n].tolist() for n, numeric in split.side if not numeric})
    return counts


def with_labels(split, labels, counts, drop_unlisted):
    """`split` with the model's label set and (from `tally`) its label `counts`: a label
    outside `labels` is refused naming it (or, with `drop_unlisted`, its rows are dropped and
    counted). Without counts (None) rows are checked as they stream by, uncounted.

    Example:
        with_labels(split, ("neg", "pos"), tally(split, 0.1, 42)["train"], drop_unlisted=False)
    """
    if counts is None:
        return dataclasses.replace(split, labels=tuple(labels), drop_unlisted=drop_unlisted)
    unknown = sorted(set(counts) - set(labels))
    if unknown and not drop_unlisted:
        raise UserError(f"{split.flag}={split.source}: label '{unknown[0]}' "
                        f"({counts[unknown[0]]} rows) is not one of the model's labels "
                        f"({', '.join(labels)}); fix the rows, add it to --labels, or pass "
                        "--drop_unlisted_labels.")
    if unknown:
        logging.warning("%s: dropped %d examples whose label is not in --labels.", split.source,
                        sum(counts[label] for label in unknown))
    kept = {label: counts.get(label, 0) for label in labels}
    return dataclasses.replace(split, labels=tuple(labels), drop_unlisted=drop_unlisted,
                               count=sum(kept.values()), label_counts=kept)


def training_batches(split, run, encode, pads):
    """Endless training batches of a streamed split, built per host (streams.PerHost):
    each host reads its own files, reshuffled per pass, tokenized as they come."""
    from tfimitate import runtime
    from tfimitate.data import pipelines

    cfg = run.cfg
    static = runtime.needs_static_shapes(run.strategy)

    def build(context):
        batch = context.get_per_replica_batch_size(cfg.batch_size) if context else cfg.batch_size
        return pipelines.batches(features(split, encode, context, cfg.seed, cfg.side_feature_stats),
                                 batch, cfg.sequence_length, pads,
                                 shuffle_seed=cfg.seed, repeat=True, static_length=static,
                                 few_shapes=cfg.jit_compile,
                                 shuffle_buffer=pipelines.STREAM_SHUFFLE_BUFFER)

    return streams.PerHost(build)


def predicted_ids(split, run, encode, pads):
    """(true class ids, predicted class ids) of every example of a labelled streamed split,
    counted batch by batch (nothing else kept)."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    ready = features(split, encode, side_feature_stats=run.cfg.side_feature_stats)
    batches = pipelines.batches(ready, run.cfg.batch_size,
                                run.cfg.sequence_length, pads)
    true, predicted = [], []
    for inputs, labels in batches:
        logits = run.model(inputs, training=False)
        true.append(labels.numpy())
        predicted.append(tf.argmax(logits, axis=-1).numpy())
    if not true:
        raise UserError(f"{split.source}: no examples to evaluate; check the files and "
                        "--holdout_fraction.")
    return np.concatenate(true), np.concatenate(predicted)


def predictions(split, run, encode, pads):
    """Yields a record per example of an unlabelled streamed split, in file order, batch by
    batch: its text (and pair), the label and the probability of each class."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    side = [RAW_SIDE + name for name, _ in split.side]

    def keep_raw(row):
        return dict(row, raw_text=row["text"], **({"raw_pair": row["pair"]} if "pair" in row else {}),
                    **{RAW_SIDE + name: row[side_features.PREFIX + name] for name, _ in split.side})

    features = pipelines.encoded(rows(split, sequential=True).map(keep_raw), encode, cache=False,
                                 untrimmed=("raw_text", "raw_pair", side_features.INPUT, *side))
    batches = features.padded_batch(
        run.cfg.batch_size, padding_values=pipelines.padding_values(features.element_spec, pads))
    labels = run.labels
    for batch in batches:
        raw = {key: batch.pop(key).numpy() for key in ("raw_text", "raw_pair", *side)
               if key in batch}
        probabilities = tf.nn.softmax(tf.cast(run.model(batch, training=False), tf.float32)).numpy()
        for i, probs in enumerate(probabilities):
            record = {"text": raw["raw_text"][i].decode()}
            if "raw_pair" in raw:
                record["pair"] = raw["raw_pair"][i].decode()
            record.update(side_features.record_values(
                {name: [_plain(raw[RAW_SIDE + name][i])] for name, _ in split.side}, 0))
            record.update(label=labels[int(probs.argmax())], probability=float(probs.max()),
                          probabilities={label: float(v) for label, v in zip(labels, probs)})
            yield record


def first_rows(split, count):
    """The first `count` examples as {"text": [...], ("text_pair": [...])} raw strings (and
    each side column's values: floats, NaN when missing, or strings)."""
    inputs = {"text": []}
    if split.pairs:
        inputs["text_pair"] = []
    inputs.update({name: [] for name, _ in split.side})
    examples = rows(dataclasses.replace(split, labels=None)) if split.manifest is None \
        else prepared.dataset(split.manifest, split.role)
    for row in examples.take(count).as_numpy_iterator():
        inputs["text"].append(row["text"].decode())
        if split.pairs:
            inputs["text_pair"].append(row["pair"].decode())
        for name, _ in split.side:
            inputs[name].append(_plain(row[side_features.PREFIX + name]))
    return inputs


def _plain(value):
    """A NumPy cell of a side column as a Python float or str."""
    return value.decode() if isinstance(value, bytes) else float(value)


def hold_out(split, fraction, seed):
    """(train, held-out eval) of a streamed split, by the keyed hash of each example."""
    if not fraction > 0:
        raise UserError(f"--holdout_fraction={fraction:g} holds no evaluation data out of "
                        f"{split.flag}; give --eval_data=FILE, or a fraction above 0.")
    train = dataclasses.replace(split, holdout=(fraction, seed, False))
    held = dataclasses.replace(split, holdout=(fraction, seed, True),
                               source=f"{split.source} (held out: {fraction:g}, by hash)")
    return train, held


@contextlib.contextmanager
def reading(streamed):
    """A context in which a TensorFlow error of a `streamed` split's input becomes one
    UserError: an unknown label (with its value), else the first file a strict read of
    the splits' files refuses (streams.diagnose)."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        if not streamed:
            raise
        message = error.message
        if side_features.NOT_A_NUMBER in message:
            column, value = message.split(side_features.NOT_A_NUMBER + "] [", 1)[-1].split("] [")[:2]
            flags = ", ".join(dict.fromkeys(s.flag for s in streamed))
            raise UserError(f"a row of {flags} holds {value.split(']')[0]!r} in --numeric_columns="
                            f"{column}, not a number; fix the row, or leave the cell empty (a "
                            "missing value).") from None
        if UNKNOWN_LABEL in message:
            label = message.split(UNKNOWN_LABEL + "] [", 1)[-1].split("]")[0]
            split = streamed[0]
            flags = ", ".join(dict.fromkeys(s.flag for s in streamed))
            raise UserError(f"a row of {flags} has the label '{label}', which is not one of the model's labels "
                            f"({', '.join(split.labels or ())}); fix the row, add it to "
                            "--labels, or pass --drop_unlisted_labels.") from None
        if "Expect" not in message and not isinstance(error, tf.errors.DataLossError) \
                and "numpy_function" not in message and "PyFunc" not in message:
            raise
        found = [streams.diagnose(split.stream, error) for split in streamed
                 if split.stream is not None]
        if not found:
            raise
        raise next((f for f in found if not str(f).startswith("--")), found[0]) from None
