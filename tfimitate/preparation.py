"""The Apache Beam pipeline of `python -m tfimitate.prepare` (text classification, text pairs).

Raw files (CSV/TSV/JSONL, .gz/.bz2, or TFRecords of tf.Example; any file system) become
GZIP TFRecord shards of tokenized examples, sorted by length within each shard, plus a
manifest.json (data/prepared.py reads them), in steps that each run in parallel:

    read each file with the project's strict readers (a bad row names file:line)
    -> training data: keep the first copy of each (text, pair) (by file, then line)
    -> tokenize in batches with the backbone's keras-hub preprocessor (loaded once per
       worker), hold out training examples by the keyed hash of splits.held_out
    -> label ids (--labels, or the sorted training labels) -> shard by a hash of the text
    -> sort each shard by length and write it -> manifest.json, written last.

The module is importable (not __main__), so Beam's workers unpickle its DoFns.

Example:
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        build(pipeline, Plan(cfg, {"train": ["train.tsv"]}, "prepared/sst2", 4, fingerprint,
                             ["padding_mask", "segment_ids", "token_ids"]))
"""

import collections
import dataclasses
import hashlib
from typing import Dict, List, NamedTuple, Optional

import apache_beam as beam
from absl import logging

from tfimitate import files
from tfimitate.data import prepared, readers, splits
from tfimitate.errors import UserError

TOKENIZE_BATCH = 1024
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
FLAGS = {"train": "--train_data", "eval": "--eval_data", "test": "--test_data"}


class Row(NamedTuple):
    """One raw example: where it is (file number in its role, path, line or record) and its values."""

    role: str
    file: int
    source: str
    line: int
    text: str
    pair: Optional[str]
    label: str


class Encoded(NamedTuple):
    row: Row
    role: str  # "holdout" for held-out training rows
    features: Dict[str, List[int]]  # trimmed preprocessor features kept in records
    length: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one prepare run does: the Experiment (columns, labels, backbone, seed, hold-out),
    the files of each role (train, eval, test), where to write and the tokenizer's
    fingerprint and feature names (from the driver's preprocessor)."""

    cfg: object
    inputs: Dict[str, List[str]]
    output_dir: str
    num_shards: int
    fingerprint: str
    features: List[str]
    created_by: str = "tfimitate.prepare"

    @property
    def roles(self):
        """The roles written: train, holdout (without --eval_data), eval, test."""
        held = () if "eval" in self.inputs else ("holdout",)
        return ("train",) + held + tuple(role for role in ("eval", "test") if role in self.inputs)

    def shard_name(self, role, shard):
        return f"{role}-{shard:05d}-of-{self.num_shards:05d}.tfrecord.gz"


def is_tfrecord(path):
    return readers.base_suffix(path) in TFRECORD_SUFFIXES


def read_file(element, cfg):
    """Rows of one file: (role, file number, path) -> Row per example with a non-empty text."""
    from tfimitate.tasks import text_classification

    role, number, path = element
    flag = FLAGS[role]
    if is_tfrecord(path):
        yield from _read_examples(role, number, path, cfg, flag)
        return
    split = text_classification.read_split(path, cfg, flag)
    pairs = split.pairs or [None] * len(split)
    for text, pair, label, line in zip(split.texts, pairs, split.labels, split.lines):
        yield Row(role, number, path, line, text, pair, label)


def _read_examples(role, number, path, cfg, flag):
    """Rows of a TFRecord file of tf.Example whose feature names are the column flags
    (strings; the label may be an integer); records are numbered from 1."""
    import tensorflow as tf

    columns = {"--text_column": cfg.text_column, "--label_column": cfg.label_column}
    if cfg.text_pair_column:
        columns["--text_pair_column"] = cfg.text_pair_column
    records = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
    record = 0
    try:
        for record, serialized in enumerate(records.as_numpy_iterator(), start=1):
            try:
                example = tf.train.Example.FromString(serialized)
            except Exception:  # protobuf's DecodeError
                raise UserError(f"{path}: record {record} is not a tf.Example; give TFRecords of "
                                "tf.Example, or a CSV/TSV/JSONL file.") from None
            values = {flag_name: _feature_value(example, name, path, record, flag_name)
                      for flag_name, name in columns.items()}
            text = values["--text_column"]
            if not text.strip():
                continue
            if not values["--label_column"].strip():
                raise UserError(f"{path}: record {record}: the label (--label_column="
                                f"{cfg.label_column}) is empty; fill it in or remove the record.")
            yield Row(role, number, path, record, text, values.get("--text_pair_column"),
                      values["--label_column"].strip())
    except tf.errors.OpError as error:
        reason = " ".join(str(error.message).split())[:160]
        raise UserError(f"{flag}: {path} cannot be read after record {record} ({reason}); the "
                        "file is truncated or not a TFRecord file (GZIP ones end in .gz).") from None


def _feature_value(example, name, path, record, flag):
    """The one string (or integer, as a string) of feature `name` of a tf.Example."""
    features = example.features.feature
    if name not in features:
        raise UserError(f"{path}: record {record} has no feature '{name}' (features: "
                        f"{', '.join(sorted(features))}); give {flag} a feature name.")
    feature = features[name]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if len(values) != 1 or kind == "float_list":
        raise UserError(f"{path}: record {record}: feature '{name}' ({flag}) holds "
                        f"{len(values)} {kind or 'values'}; it must hold one string "
                        "(or, for the label, one integer).")
    value = values[0]
    if isinstance(value, bytes):
        return readers.decode_utf8(value, f"{path}: record {record}", "write UTF-8 text.")
    return str(value)


def example_key(row):
    return (row.text, row.pair)


class KeepFirstCopy(beam.DoFn):
    """(key, copies) -> the first copy (by file number, then line); counts the others and
    those of them with another label on the tagged output `duplicates`."""

    def process(self, element):
        _, copies = element
        copies = sorted(copies, key=lambda row: (row.file, row.line))
        first = copies[0]
        yield first
        if len(copies) > 1:
            yield beam.pvalue.TaggedOutput(
                "duplicates", (len(copies) - 1, sum(row.label != first.label for row in copies[1:])))


class Tokenize(beam.DoFn):
    """A batch of Rows -> Encoded, tokenized by the backbone's keras-hub preprocessor
    (loaded once per worker in setup); training rows that splits.held_out picks become
    role 'holdout' when `hold_out`."""

    def __init__(self, cfg, hold_out):
        self.cfg = cfg
        self.hold_out = hold_out
        self.encode = None

    def setup(self):
        import tensorflow as tf

        from tfimitate import backbones

        preprocessor = backbones.load_text_preprocessor(self.cfg.backbone, self.cfg.sequence_length)
        self.encode = tf.function(lambda x: preprocessor(x=x), reduce_retracing=True)

    def process(self, batch):
        import tensorflow as tf

        texts = tf.constant([row.text for row in batch])
        pairs = tf.constant([row.pair for row in batch]) if self.cfg.text_pair_column else None
        features = {key: value.numpy() for key, value in
                    self.encode((texts, pairs) if pairs is not None else texts).items()}
        lengths = features["padding_mask"].sum(axis=1)
        held = (splits.held_out(splits.example_key(texts, pairs), self.cfg.holdout_fraction,
                                self.cfg.seed).numpy() if self.hold_out else [False] * len(batch))
        for i, row in enumerate(batch):
            length = int(lengths[i])
            kept = {name: features[name][i, :length].tolist() for name in prepared.STORED
                    if name in features}
            role = "holdout" if row.role == "train" and held[i] else row.role
            yield Encoded(row, role, kept, length)


def training_labels(labels, cfg):
    """The label set: --labels, else the sorted labels of the training data (at least two)."""
    if cfg.labels:
        return list(cfg.labels)
    labels = sorted(labels)
    if len(labels) < 2:
        raise UserError(f"--train_data={cfg.train_data}: only one label ({', '.join(labels)}) in "
                        "the data; a classifier needs at least two, check --label_column.")
    return labels


class Serialize(beam.DoFn):
    """Encoded -> ((role, shard), (length, record)) with the label's class id;
    a label outside the label set is refused (file:line), or dropped with
    --drop_unlisted_labels."""

    def __init__(self, cfg, num_shards):
        self.cfg = cfg
        self.num_shards = num_shards
        self.ids = None

    def process(self, encoded, labels):
        if self.ids is None:  # the label set is one per run
            self.ids = {label: i for i, label in enumerate(labels)}
        row = encoded.row
        if row.label not in self.ids:
            if self.cfg.drop_unlisted_labels:
                beam.metrics.Metrics.counter("prepare", "dropped_unlisted_labels").inc()
                return
            raise UserError(
                f"{row.source}:{row.line}: label '{row.label}' is not one of the model's labels "
                f"({', '.join(labels)}); fix the row in {FLAGS[row.role]}, add it to --labels, "
                "or pass --drop_unlisted_labels.")
        key = "\t".join((row.text, row.pair or "")).encode("utf-8")
        shard = int(hashlib.sha1(key).hexdigest()[:8], 16) % self.num_shards
        record = prepared.serialize(encoded.features, self.ids[row.label], row.text, row.pair)
        yield (encoded.role, shard), (encoded.length, record)


class WriteShard(beam.DoFn):
    """((role, shard), records) -> the shard written sorted by length (then bytes), as
    GZIP TFRecords; yields (role, file name). Empty shards are written too."""

    def __init__(self, plan):
        self.plan = plan

    def process(self, element):
        import tensorflow as tf

        (role, shard), records = element
        name = self.plan.shard_name(role, shard)
        with tf.io.TFRecordWriter(prepared.join(self.plan.output_dir, name), "GZIP") as writer:
            for _, record in sorted(record for record in records if record is not None):
                writer.write(record)
        yield role, name


def text_overlap(element):
    """(compared key, roles of the examples with it) -> (role, n) for each non-train role
    whose texts are also training texts (compared like text_classification.letters)."""
    _, roles = element
    roles = list(roles)
    if "train" in roles:
        for role, count in collections.Counter(roles).items():
            if role != "train":
                yield role, count


def write_manifest(_, plan, files_written, labels, label_counts, lengths, duplicates, overlap):
    """Writes manifest.json (atomically, after every shard: its inputs are their outputs)."""
    cfg = plan.cfg
    counts = {role: {} for role in plan.roles}
    for (role, label), count in label_counts:
        counts[role][label] = count
    histogram = {role: {} for role in plan.roles}
    for (role, length), count in sorted(lengths):
        histogram[role][str(length)] = count
    examples = {role: sum(counts[role].values()) for role in plan.roles}
    for role in ("train", "holdout"):
        if role in examples and not examples[role]:
            raise UserError(f"--train_data={cfg.train_data}: no example fell into the '{role}' "
                            f"split (--holdout_fraction={cfg.holdout_fraction:g} of "
                            f"{examples['train'] + examples.get('holdout', 0)} examples); give "
                            "--eval_data, more data, or another --holdout_fraction.")
    names = collections.defaultdict(list)
    for role, name in files_written:
        names[role].append(name)
    manifest = prepared.Manifest(
        task=cfg.task, backbone=cfg.backbone, sequence_length=cfg.sequence_length,
        tokenizer_fingerprint=plan.fingerprint, features=sorted(plan.features),
        text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
        label_column=cfg.label_column, labels=list(labels), label_counts=counts,
        examples=examples, files={role: sorted(names[role]) for role in plan.roles},
        length_histogram=histogram, duplicates_dropped=sum(n for n, _ in duplicates),
        eval_overlap=dict(sorted(overlap)),
        holdout_fraction=None if "eval" in plan.inputs else cfg.holdout_fraction,
        seed=cfg.seed, created_by=plan.created_by)
    if duplicates:
        logging.warning("%s: dropped %d duplicate texts (%d of them with a different label than "
                        "their first copy).", cfg.train_data, manifest.duplicates_dropped,
                        sum(c for _, c in duplicates))
    for role, shared in manifest.eval_overlap.items():
        source = cfg.train_data if role == "holdout" else getattr(cfg, f"{role}_data")
        logging.warning("%s (%s): %d of its %d texts are also in the training data; its scores "
                        "overstate accuracy on unseen text.", source, role, shared, examples[role])
    files.write_atomically(prepared.join(plan.output_dir, prepared.MANIFEST), manifest.to_json())


def build(pipeline, plan):
    """Adds the prepare steps for `plan` to `pipeline`."""
    from tfimitate.tasks.text_classification import letters

    cfg = plan.cfg
    rows = {}
    for role, paths in plan.inputs.items():
        rows[role] = (pipeline
                      | f"Files {role}" >> beam.Create([(role, i, path) for i, path in enumerate(paths)])
                      | f"Read {role}" >> beam.FlatMap(read_file, cfg))
        if role != "train":  # spread a file's rows over workers (train's are grouped below)
            rows[role] = rows[role] | f"Spread {role}" >> beam.Reshuffle()
    kept = (rows["train"]
            | "Key by text" >> beam.Map(lambda row: (example_key(row), row))
            | "Group copies" >> beam.GroupByKey()
            | "Keep first copy" >> beam.ParDo(KeepFirstCopy()).with_outputs("duplicates", main="kept"))
    encoded = (([kept.kept] + [rows[role] for role in ("eval", "test") if role in rows])
               | "All rows" >> beam.Flatten()
               | "Batch" >> beam.BatchElements(min_batch_size=TOKENIZE_BATCH // 4,
                                               max_batch_size=TOKENIZE_BATCH)
               | "Tokenize" >> beam.ParDo(Tokenize(cfg, hold_out="eval" not in plan.inputs)))
    labels = (encoded
              | "Training labels" >> beam.FlatMap(
                  lambda e: [e.row.label] if e.row.role == "train" else [])
              | "Distinct labels" >> beam.Distinct()
              | "Label list" >> beam.combiners.ToList()
              | "Label set" >> beam.Map(training_labels, cfg))
    label_set = beam.pvalue.AsSingleton(labels)
    empty = [((role, shard), None) for role in plan.roles for shard in range(plan.num_shards)]
    written = ((encoded | "Serialize" >> beam.ParDo(Serialize(cfg, plan.num_shards), label_set),
                pipeline | "Every shard" >> beam.Create(empty))
               | "With empty shards" >> beam.Flatten()
               | "Group shards" >> beam.GroupByKey()
               | "Write shards" >> beam.ParDo(WriteShard(plan)))

    def listed(pcoll, name):
        return beam.pvalue.AsSingleton(pcoll | f"List {name}" >> beam.combiners.ToList())

    in_set = (encoded
              | "Labelled" >> beam.Filter(lambda e, known: e.row.label in known, label_set))
    label_counts = (in_set | "Role label" >> beam.Map(lambda e: (e.role, e.row.label))
                    | "Count labels" >> beam.combiners.Count.PerElement())
    lengths = (in_set | "Role length" >> beam.Map(lambda e: (e.role, e.length))
               | "Count lengths" >> beam.combiners.Count.PerElement())
    overlap = (in_set
               | "Compared text" >> beam.Map(lambda e: ((letters(e.row.text), letters(e.row.pair or "")), e.role))
               | "Group texts" >> beam.GroupByKey()
               | "Shared texts" >> beam.FlatMap(text_overlap)
               | "Count shared" >> beam.CombinePerKey(sum))
    _ = (pipeline
         | "Manifest" >> beam.Create([None])
         | "Write manifest" >> beam.Map(
                write_manifest, plan, listed(written, "files"), label_set,
                listed(label_counts, "label counts"), listed(lengths, "lengths"),
                listed(kept.duplicates, "duplicates"), listed(overlap, "overlap")))
