"""The Apache Beam pipeline of `python -m tfimitate.prepare` (text classification, text pairs).

Raw files (CSV/TSV/JSONL, .gz/.bz2, or TFRecords of tf.Example; any file system) become
GZIP TFRecord shards of tokenized examples, sorted by length within each shard, plus a
manifest.json (data/prepared.py reads them), in steps that each run in parallel:

    read each file with the project's strict readers (a bad row names file:line)
    -> training data: keep the first copy of each (text, pair) (by file, then line)
    -> tokenize in batches with the backbone's keras-hub preprocessor (loaded once per
       worker), hold out training examples by the keyed hash of splits.held_out, shard
       by a hash of the text
    -> per shard: class ids (--labels, or the sorted training labels), sort by length,
       write -> manifest.json, written last.

Side columns (--numeric_columns/--categorical_columns, from CSV/TSV/JSONL files) travel
with each row as parsed values and are written as features of its record; their
preprocessing (tasks/side_features.py: means, stds, vocabularies) is learned from the
rows that land in the train shards (after the copies and the hold-out are dropped) by
one combine, and written to the manifest as `side_feature_stats`.

Between steps examples travel as tuples of plain values and hashes (the DirectRunner
holds every step boundary in memory). The module is importable (not __main__), so
Beam's workers unpickle its DoFns.

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
    """One raw example: its role, file (number in the role's list), line (or record) and values.
    Rows cross Beam's stage boundaries as plain tuples (`tuple(row)`, `Row(*values)`), which
    Beam encodes compactly: the DirectRunner holds every such boundary in memory."""

    role: str
    file: int
    line: int
    text: str
    pair: Optional[str]
    label: str
    side: tuple = ()  # the side columns' values (floats, NaN: missing; strings, "": missing)


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

    def source(self, role, file):
        """The path of file number `file` of `role` (held-out rows come from train's files)."""
        return self.inputs["train" if role == "holdout" else role][file]


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
    side = list(zip(*(split.side[name] for name in side_names(cfg)))) or [()] * len(split)
    for text, pair, label, line, values in zip(split.texts, pairs, split.labels, split.lines, side):
        yield Row(role, number, line, text, pair, label, tuple(values))


def side_names(cfg):
    """The side columns in the order rows carry them: numeric, then categorical."""
    from tfimitate.tasks import side_features

    numeric, categorical = side_features.columns(cfg)
    return numeric + categorical


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
            yield Row(role, number, record, text, values.get("--text_pair_column"),
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


def digest(*texts, size=16):
    """A short hash of texts (keys of the dedup and overlap groups: less to hold than texts)."""
    return hashlib.blake2b("\t".join(t or "" for t in texts).encode("utf-8"),
                           digest_size=size).digest()


class KeepFirstCopy(beam.DoFn):
    """(key, copies as Row tuples) -> the first copy (by file number, then line); counts the
    others and those of them with another label on the tagged output `duplicates`."""

    def process(self, element):
        _, copies = element
        copies = sorted(Row(*values) for values in copies)  # role, file, line: file order
        first = copies[0]
        yield first
        if len(copies) > 1:
            yield beam.pvalue.TaggedOutput(
                "duplicates", (len(copies) - 1, sum(row.label != first.label for row in copies[1:])))


class Tokenize(beam.DoFn):
    """A batch of Rows -> ((role, shard), (length, file, line, label, text, pair, int32
    bytes of each stored feature, side values)), tokenized by the backbone's keras-hub preprocessor
    (loaded once per worker in setup); training rows that splits.held_out picks take role
    'holdout' when `hold_out`. The tagged output `compared` gives (hash of the text as
    text_classification.letters compares it, (role, label)) for the overlap count."""

    def __init__(self, cfg, hold_out, num_shards):
        self.cfg = cfg
        self.hold_out = hold_out
        self.num_shards = num_shards
        self.encode = None

    def setup(self):
        import tensorflow as tf

        from tfimitate import backbones

        preprocessor = backbones.load_text_preprocessor(self.cfg.backbone, self.cfg.sequence_length)
        self.encode = tf.function(lambda x: preprocessor(x=x), reduce_retracing=True)

    def process(self, batch):
        import numpy as np
        import tensorflow as tf

        from tfimitate.tasks.text_classification import letters

        texts = tf.constant([row.text for row in batch])
        pairs = tf.constant([row.pair for row in batch]) if self.cfg.text_pair_column else None
        features = {key: value.numpy() for key, value in
                    self.encode((texts, pairs) if pairs is not None else texts).items()}
        lengths = features["padding_mask"].sum(axis=1)
        stored = [name for name in prepared.STORED if name in features]
        held = (splits.held_out(splits.example_key(texts, pairs), self.cfg.holdout_fraction,
                                self.cfg.seed).numpy() if self.hold_out else [False] * len(batch))
        for i, row in enumerate(batch):
            length = int(lengths[i])
            role = "holdout" if row.role == "train" and held[i] else row.role
            shard = int.from_bytes(digest(row.text, row.pair, size=8), "big") % self.num_shards
            arrays = tuple(features[name][i, :length].astype(np.int32).tobytes() for name in stored)
            yield (role, shard), (length, row.file, row.line, row.label, row.text, row.pair, arrays,
                                  row.side)
            yield beam.pvalue.TaggedOutput(
                "compared", (digest(letters(row.text), letters(row.pair or ""), size=8),
                             (role, row.label)))


def training_labels(labels, cfg):
    """The label set: --labels, else the sorted labels of the training data (at least two)."""
    if cfg.labels:
        return list(cfg.labels)
    labels = sorted(labels)
    if len(labels) < 2:
        raise UserError(f"--train_data={cfg.train_data}: only one label ({', '.join(labels)}) in "
                        "the data; a classifier needs at least two, check --label_column.")
    return labels


class WriteShard(beam.DoFn):
    """((role, shard), tokenized examples) -> the shard's tf.Example records with class ids,
    sorted by length (then bytes), written as GZIP TFRecords (empty shards too); yields
    (role, file name), and (role, label, length) per record on the tagged output `written`.
    A label outside the label set is refused (file:line), or dropped with
    --drop_unlisted_labels."""

    def __init__(self, plan):
        self.plan = plan
        self.ids = None

    def process(self, element, labels):
        import numpy as np
        import tensorflow as tf

        if self.ids is None:  # the label set is one per run
            self.ids = {label: i for i, label in enumerate(labels)}
        (role, shard), examples = element
        stored = [name for name in prepared.STORED if name in self.plan.features]
        names = side_names(self.plan.cfg)
        records = []
        for example in examples:
            if example is None:  # the marker that makes every shard exist
                continue
            length, file, line, label, text, pair, arrays, side = example
            if label not in self.ids:
                if self.plan.cfg.drop_unlisted_labels:
                    continue
                flag = FLAGS["train" if role == "holdout" else role]
                raise UserError(
                    f"{self.plan.source(role, file)}:{line}: label '{label}' is not one of the "
                    f"model's labels ({', '.join(labels)}); fix the row in {flag}, add it to "
                    "--labels, or pass --drop_unlisted_labels.")
            features = {name: np.frombuffer(values, np.int32).tolist()
                        for name, values in zip(stored, arrays)}
            records.append((length, prepared.serialize(features, self.ids[label], text, pair,
                                                       dict(zip(names, side)))))
            yield beam.pvalue.TaggedOutput("written", (role, label, length))
        name = self.plan.shard_name(role, shard)
        with tf.io.TFRecordWriter(prepared.join(self.plan.output_dir, name), "GZIP") as writer:
            for _, record in sorted(records):
                writer.write(record)
        yield role, name


def text_overlap(element, labels):
    """(compared key, (role, label) of the examples with it) -> (role, n) for each non-train
    role whose texts are also training texts (compared like text_classification.letters);
    examples with a label outside the label set (dropped) do not count."""
    _, examples = element
    roles = [role for role, label in examples if label in labels]
    if "train" in roles:
        for role, count in collections.Counter(roles).items():
            if role != "train":
                yield role, count


class LearnSide(beam.CombineFn):
    """The side columns' values of the training rows -> their preprocessing (the JSON of
    side_features.learn), gathered in a side_features.Summary per worker and merged."""

    def __init__(self, cfg):
        from tfimitate.tasks import side_features

        self.numeric, self.categorical = side_features.columns(cfg)
        self.source = cfg.train_data

    def create_accumulator(self):
        from tfimitate.tasks import side_features

        return side_features.Summary()

    def add_input(self, summary, side):
        import numpy as np

        numeric = {name: np.array([value], np.float64) for name, value in zip(self.numeric, side)}
        categorical = {name: [value] for name, value in
                       zip(self.categorical, side[len(self.numeric):])}
        return summary.add(numeric, categorical)

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for summary in accumulators:
            merged.merge(summary)
        return merged

    def extract_output(self, summary):
        return summary.learned(self.source)


def training_side(element, labels, cfg):
    """The side values of a tokenized example that lands in the train shards."""
    (role, _), example = element
    label, side = example[3], example[7]
    if role == "train" and (label in labels or not cfg.drop_unlisted_labels):
        yield side


def write_manifest(_, plan, files_written, labels, written, duplicates, overlap,
                   side_stats=None):
    """Writes manifest.json (atomically, after every shard: its inputs are their outputs)."""
    cfg = plan.cfg
    counts = {role: collections.Counter() for role in plan.roles}
    lengths = {role: collections.Counter() for role in plan.roles}
    for (role, label, length), count in written:
        counts[role][label] += count
        lengths[role][length] += count
    counts = {role: dict(sorted(found.items())) for role, found in counts.items()}
    histogram = {role: {str(length): n for length, n in sorted(found.items())}
                 for role, found in lengths.items()}
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
        seed=cfg.seed, created_by=plan.created_by,
        numeric_columns=list(cfg.numeric_columns or ()),
        categorical_columns=list(cfg.categorical_columns or ()), side_feature_stats=side_stats)
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
    cfg = plan.cfg
    rows = {}
    for role, paths in plan.inputs.items():
        rows[role] = (pipeline
                      | f"Files {role}" >> beam.Create([(role, i, path) for i, path in enumerate(paths)])
                      | f"Read {role}" >> beam.FlatMap(read_file, cfg))
        if role != "train":  # spread a file's rows over workers (train's are grouped below)
            rows[role] = (rows[role] | f"Tuples {role}" >> beam.Map(tuple)
                          | f"Spread {role}" >> beam.Reshuffle()
                          | f"Rows {role}" >> beam.Map(lambda values: Row(*values)))
    kept = (rows["train"]
            | "Key by text" >> beam.Map(lambda row: (digest(row.text, row.pair), tuple(row)))
            | "Group copies" >> beam.GroupByKey()
            | "Keep first copy" >> beam.ParDo(KeepFirstCopy()).with_outputs("duplicates", main="kept"))
    label_set = beam.pvalue.AsSingleton(
        kept.kept
        | "Training labels" >> beam.Map(lambda row: row.label)
        | "Distinct labels" >> beam.Distinct()
        | "Label list" >> beam.combiners.ToList()
        | "Label set" >> beam.Map(training_labels, cfg))
    tokenized = (([kept.kept] + [rows[role] for role in ("eval", "test") if role in rows])
                 | "All rows" >> beam.Flatten()
                 | "Batch" >> beam.BatchElements(min_batch_size=TOKENIZE_BATCH // 4,
                                                 max_batch_size=TOKENIZE_BATCH)
                 | "Tokenize" >> beam.ParDo(Tokenize(cfg, "eval" not in plan.inputs, plan.num_shards))
                 .with_outputs("compared", main="examples"))
    empty = [((role, shard), None) for role in plan.roles for shard in range(plan.num_shards)]
    written = ((tokenized.examples, pipeline | "Every shard" >> beam.Create(empty))
               | "With empty shards" >> beam.Flatten()
               | "Group shards" >> beam.GroupByKey()
               | "Write shards" >> beam.ParDo(WriteShard(plan), label_set).with_outputs(
                   "written", main="files"))
    overlap = (tokenized.compared
               | "Group texts" >> beam.GroupByKey()
               | "Shared texts" >> beam.FlatMap(text_overlap, label_set)
               | "Count shared" >> beam.CombinePerKey(sum))

    def listed(pcoll, name):
        return beam.pvalue.AsSingleton(pcoll | f"List {name}" >> beam.combiners.ToList())

    side = []
    if side_names(cfg):
        side = [beam.pvalue.AsSingleton(
            tokenized.examples
            | "Training side values" >> beam.FlatMap(training_side, label_set, cfg)
            | "Learn side features" >> beam.CombineGlobally(LearnSide(cfg)))]
    _ = (pipeline
         | "Manifest" >> beam.Create([None])
         | "Write manifest" >> beam.Map(
             write_manifest, plan, listed(written.files, "files"), label_set,
             listed(written.written | "Count written" >> beam.combiners.Count.PerElement(),
                    "written"),
             listed(kept.duplicates, "duplicates"), listed(overlap, "overlap"), *side))
