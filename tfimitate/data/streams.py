"""Data files as tf.data streams: file patterns and lists on any file system, CSV, TSV,
JSONL (optionally .gz) and TFRecord files of tf.Example, each host reading its own files.

A data flag may name one file, a pattern (`gs://b/train-*.tsv.gz`) or a comma-separated
list of both. A split is streamed (read by tf.data as training goes, in bounded memory)
when it names several files, TFRecord files or more than STREAM_BYTES, or always with
--stream_data=on; otherwise it is read into memory (tasks' Split). A stream yields one
dict of tf.string scalars per row, keyed like `Source.keys` ("text", "pair", "label").

TensorFlow's gzip reader stops at a truncated file without a word, so `check_gzip` inflates
every .gz file once before training (threads; zlib releases the GIL) and names the
first one that is cut short. A malformed row met while streaming stops the run with
TensorFlow's message; `diagnose` then reads the files strictly (data/readers.py) to name
the file and line.

Example:
    source = open_source("data/train-*.tsv", ["sentence", "label"], ("text", "label"),
                         "--train_data")
    for row in examples(source).take(2): print(row["text"].numpy())
"""

import concurrent.futures
import csv
import dataclasses
import glob
import gzip
import json
import os
import zlib
from typing import Tuple

from absl import logging

from tfimitate import files
from tfimitate.data import readers
from tfimitate.errors import UserError

STREAM_BYTES = 64 << 20  # a split larger than this (uncompressed, estimated) is streamed
GZIP_RATIO = 4  # estimated uncompressed / compressed size of a .gz text file
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
PARSE_BATCH = 1024
CYCLE_LENGTH = 8  # files read at once per host
MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Source:
    """The files of one data flag and how to read them.

    Attributes:
        spec: the flag's value, as given (for messages).
        flag: e.g. "--train_data".
        paths: the matched files, sorted, each once.
        kind: ".csv", ".tsv", ".jsonl" or ".tfrecord".
        columns: the column flags' values (header names, 0-based indices or tf.Example
            feature names), one per key.
        keys: the names rows are given under, e.g. ("text", "label").
        header: delimited files: the first row names the columns.
        indices: delimited files: the 0-based columns read, one per key; width: columns per row.
        feature_types: TFRecord files: the tf.DType name of each column's feature.
        optional: keys whose value may be absent or empty (side columns): given as text, ""
            when absent (a JSON null, a tf.Example without the feature); a TFRecord feature
            of any type (its first value, as text; the first record must hold it).
    """

    spec: str
    flag: str
    paths: Tuple[str, ...]
    kind: str
    columns: Tuple[str, ...]
    keys: Tuple[str, ...]
    header: bool = False
    indices: Tuple[int, ...] = ()
    width: int = 0
    feature_types: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()

    @property
    def compressed(self):
        return self.paths[0].endswith(".gz")


def is_file_list(spec):
    """True when `spec` is a pattern or a comma-separated list rather than one path."""
    return "," in spec or any(c in spec for c in "*?[")


def glob_files(pattern):
    """Files matching `pattern` (local or any TensorFlow file system), sorted."""
    if files.is_remote(pattern):
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(pattern))
    return sorted(path for path in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(path))


def expand(spec, flag):
    """The files a data flag names: patterns and comma-separated lists expanded, in order.

    Example:
        expand("data/train-*.tsv,extra.tsv", "--train_data")  # ("data/train-00.tsv", ..., "extra.tsv")
    """
    found = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(c in part for c in "*?["):
            matches = glob_files(part)
            if not matches:
                raise UserError(f"{flag}={spec}: the pattern {part} matches no file; check the "
                                "path (and that the bucket is readable).")
            found.extend(matches)
        else:
            found.append(readers.resolve_path(part, flag))
    if not found:
        raise UserError(f"{flag}={spec!r} names no file; give a file, a pattern or a list.")
    return tuple(dict.fromkeys(found))


def kind_of(path):
    """The format of `path`: '.csv', '.tsv', '.jsonl' (also '.json') or '.tfrecord'."""
    stem = path[:-3] if path.endswith(".gz") else path
    if stem.endswith(TFRECORD_SUFFIXES):
        return ".tfrecord"
    suffix = readers.base_suffix(path)
    return ".jsonl" if suffix == ".json" else suffix


def size_estimate(paths):
    """About how many bytes the files hold uncompressed."""
    import tensorflow as tf

    size = lambda p: tf.io.gfile.stat(p).length if files.is_remote(p) else os.path.getsize(p)
    return sum(size(p) * (GZIP_RATIO if p.endswith(".gz") else 1) for p in paths)


def streamed(spec, mode, flag):
    """Whether the data flag's files are streamed (see the module), logged with the reason.

    Args:
        spec: the flag's value; `tfds:` and `package:` inputs are never streamed.
        mode: --stream_data: "auto", "on" or "off".
        flag: e.g. "--train_data".
    """
    from tfimitate.data import tfds_source

    if tfds_source.is_tfds(spec) or spec.startswith(readers.PACKAGE_PREFIX):
        return False
    paths = expand(spec, flag)
    if mode == "off":
        if len(paths) > 1 or kind_of(paths[0]) == ".tfrecord":
            raise UserError(f"{flag}={spec} names {len(paths)} file(s) of kind "
                            f"{kind_of(paths[0])}, which only a stream reads; drop "
                            "--stream_data=off, or give one .csv/.tsv/.jsonl file.")
        return False
    if mode == "on":
        reason = "--stream_data=on"
    elif len(paths) > 1:
        reason = f"{len(paths)} files"
    elif kind_of(paths[0]) == ".tfrecord":
        reason = "TFRecord files"
    elif size_estimate(paths) > STREAM_BYTES:
        reason = f"more than {STREAM_BYTES >> 20} MiB"
    else:
        return False
    logging.info("%s=%s: streamed (%s): read as training goes, in bounded memory; "
                 "duplicate texts are not dropped and the eval/train overlap is not counted "
                 "(tfimitate.prepare does both).", flag, spec, reason)
    return True


def open_source(spec, columns, keys, flag, optional=()):
    """Checks the files of `spec` (one kind, columns present, .gz intact) and returns their Source.

    Args:
        spec: a data flag's value (file, pattern or list).
        columns: the column flags' values, one per key.
        keys: what each column is called in the stream's rows ("text", "pair", "label").
        flag: e.g. "--train_data".
        optional: the keys that may be absent or empty (Source.optional).
    """
    paths = expand(spec, flag)
    kinds = sorted({kind_of(p) for p in paths})
    if len(kinds) > 1 or len({p.endswith(".gz") for p in paths}) > 1:
        raise UserError(f"{flag}={spec} mixes file kinds ({', '.join(kinds)}, compressed or "
                        "not); give files of one kind.")
    kind = kinds[0]
    if any(p.endswith(".bz2") for p in paths):
        raise UserError(f"{flag}={spec}: .bz2 files cannot be streamed; recompress them with "
                        "gzip (.gz) or give one file to read into memory.")
    if kind not in (".csv", ".tsv", ".jsonl", ".tfrecord"):
        raise UserError(f"{flag}={spec}: {paths[0]} is not .csv, .tsv, .jsonl or .tfrecord "
                        "(optionally .gz); rename or convert it.")
    source = Source(spec, flag, paths, kind, tuple(columns), tuple(keys),
                    optional=tuple(optional))
    if kind in (".csv", ".tsv"):
        source = _delimited_layout(source)
    elif kind == ".tfrecord":
        source = _feature_layout(source)
    check_gzip(paths, flag)
    return source


def _first_line(path):
    """The first line of a (possibly gzipped) text file, local or remote, without its end."""
    with (_remote_open(path) if files.is_remote(path) else open(path, "rb")) as raw:
        text = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        line = text.readline(1 << 20)
    return line.decode("utf-8-sig", "replace").rstrip("\r\n")


def _delimited_layout(source):
    """The header and the column indices of delimited files, from the first file's first
    row (the other files must share it: a row of another width stops the stream)."""
    delimiter = "\t" if source.kind == ".tsv" else ","
    line = _first_line(source.paths[0])
    fields = line.split("\t") if delimiter == "\t" else next(csv.reader([line]))
    header = not all(c.isdigit() for c in source.columns)
    names = [f.strip() for f in fields]
    indices = []
    for column in source.columns:
        if column.isdigit():
            indices.append(int(column))
        elif column not in names:
            raise UserError(f"{source.flag}: {source.paths[0]} has no column '{column}' "
                            f"(columns: {', '.join(names)}); give a header name or a 0-based index.")
        else:
            indices.append(names.index(column))
    if max(indices) >= len(fields):
        raise UserError(f"{source.paths[0]}:1: row has {len(fields)} columns but column "
                        f"{max(indices)} is needed; fix the row or the column flags.")
    return dataclasses.replace(source, header=header, indices=tuple(indices), width=len(fields))


def _feature_layout(source):
    """The dtype of each column's feature, from the first record of the first file."""
    import tensorflow as tf

    path = source.paths[0]
    compression = "GZIP" if path.endswith(".gz") else ""
    try:
        record = next(iter(tf.data.TFRecordDataset(path, compression_type=compression).take(1)), None)
    except tf.errors.OpError as error:
        raise UserError(f"{source.flag}: cannot read {path} as TFRecord ({error.message.strip()}); "
                        "check that the file is intact.") from None
    if record is None:
        raise UserError(f"{source.flag}: {path} holds no record; give TFRecord files of tf.Example.")
    try:
        example = tf.train.Example.FromString(record.numpy())
    except Exception:  # a DecodeError from protobuf
        raise UserError(f"{path}: record 1 is not a tf.Example; give TFRecord files of "
                        "tf.Example protos.") from None
    features = example.features.feature
    types = []
    for column, key in zip(source.columns, source.keys):
        if column not in features:
            advice = ("the first record must hold every side feature (its type is read from "
                      "it)" if key in source.optional else f"name one with the column flag for {key}")
            raise UserError(f"{path}: record 1 has no feature '{column}' (features: "
                            f"{', '.join(sorted(features))}); {advice}.")
        kind = features[column].WhichOneof("kind")
        if key not in ("label",) + source.optional and kind != "bytes_list":
            raise UserError(f"{path}: record 1: feature '{column}' holds {kind}, but the {key} "
                            "must be a bytes feature (text); fix the column flag.")
        types.append({"bytes_list": "string", "int64_list": "int64", "float_list": "float32"}[kind])
    return dataclasses.replace(source, feature_types=tuple(types))


def check_gzip(paths, flag):
    """Refuses a .gz file that is cut short or damaged (TensorFlow's reader would stop early
    without a word), naming it. Files are inflated in parallel threads, nothing is kept."""
    compressed = [p for p in paths if p.endswith(".gz")]

    def problem(path):
        inflate = zlib.decompressobj(wbits=31)
        try:
            with (_remote_open(path) if files.is_remote(path) else open(path, "rb")) as f:
                while chunk := f.read(1 << 22):
                    inflate.decompress(chunk)
                    while inflate.unused_data:  # concatenated gzip members
                        rest = inflate.unused_data
                        inflate = zlib.decompressobj(wbits=31)
                        inflate.decompress(rest)
        except (OSError, zlib.error) as error:
            return f"{path}: cannot read it ({error}); check that the file is intact."
        if not inflate.eof:
            return f"{path}: the gzip data ends early (the file is truncated); copy it again."
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for found in pool.map(problem, compressed):
            if found:
                raise UserError(f"{flag}: {found}")


def _remote_open(path):
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def examples(source, input_context=None, shuffle_seed=None, sequential=False):
    """The rows of `source` as a tf.data stream of {key: tf.string} dicts.

    Args:
        source: an open_source() result.
        input_context: tf.distribute.InputContext: this host reads files
            input_pipeline_id, input_pipeline_id + num_input_pipelines, ... (or, with fewer
            files than hosts, every file and every num_input_pipelines-th row).
        shuffle_seed: if set, the file order is reshuffled (seeded) on every pass.
        sequential: read the files one after the other, each in its order (predictions),
            instead of CYCLE_LENGTH at a time, in parallel, a row of each in turn.
    """
    import tensorflow as tf

    paths = list(source.paths)
    by_rows = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(paths) >= count:
            paths = paths[index::count]
            shown = ", ".join(os.path.basename(p) for p in paths[:4])
            logging.info("%s: input pipeline %d of %d reads %d of %d files: %s%s.", source.flag,
                         index + 1, count, len(paths), len(source.paths), shown,
                         " ..." if len(paths) > 4 else "")
        else:
            by_rows = True
            logging.warning("%s: %d file(s) for %d input pipelines: every host reads every file "
                            "and keeps every %d-th row; give at least as many files as hosts.",
                            source.flag, len(paths), count, count)
    files_ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_seed is not None and len(paths) > 1:
        files_ds = files_ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    reader = {".csv": _delimited, ".tsv": _delimited, ".jsonl": _jsonl,
              ".tfrecord": _tfrecord}[source.kind]
    rows = files_ds.interleave(lambda path: reader(source, path),
                               cycle_length=1 if sequential else min(CYCLE_LENGTH, len(paths)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if by_rows:
        rows = rows.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return rows


def _compression(source):
    return "GZIP" if source.compressed else ""


def _delimited(source, path):
    import tensorflow as tf

    rows = tf.data.experimental.CsvDataset(
        path, [""] * source.width, compression_type=_compression(source),
        header=source.header, field_delim="\t" if source.kind == ".tsv" else ",",
        use_quote_delim=source.kind == ".csv")
    keys, indices = source.keys, source.indices
    return rows.map(lambda *fields: {key: tf.strings.regex_replace(fields[i], "\r$", "")
                                     for key, i in zip(keys, indices)},
                    num_parallel_calls=tf.data.AUTOTUNE)


def _jsonl(source, path):
    import numpy as np
    import tensorflow as tf

    columns, keys = source.columns, source.keys

    def parse(lines):
        values = [[] for _ in columns]
        for line in lines:
            record = json.loads(line)
            for column, key, out in zip(columns, keys, values):
                value = record.get(column) if isinstance(record, dict) else None
                if value is None and key in source.optional and isinstance(record, dict):
                    value = ""
                if value is None or isinstance(value, (list, dict)):
                    raise ValueError(f"a line has no string or number under '{column}'")
                out.append(str(value).encode())
        return [np.array(v, dtype=object) for v in values]

    def parsed(lines):
        values = tf.numpy_function(parse, [lines], [tf.string] * len(columns), stateful=False)
        return {key: tf.reshape(value, [-1]) for key, value in zip(keys, values)}

    lines = tf.data.TextLineDataset(path, compression_type=_compression(source))
    lines = lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
    return lines.batch(PARSE_BATCH).map(parsed).unbatch()


def _tfrecord(source, path):
    import tensorflow as tf

    features = {column: tf.io.VarLenFeature(tf.as_dtype(dtype)) if key in source.optional
                else tf.io.FixedLenFeature([], tf.as_dtype(dtype))
                for column, key, dtype in zip(source.columns, source.keys, source.feature_types)}
    text = lambda value: value if value.dtype == tf.string else tf.strings.as_string(value)

    def first_or_empty(sparse):  # an optional feature: its first value as text, or ""
        dense = tf.sparse.to_dense(tf.SparseTensor(sparse.indices, text(sparse.values),
                                                   sparse.dense_shape), default_value="")
        return tf.pad(dense, [[0, 0], [0, 1]])[:, 0]

    def parsed(records):
        values = tf.io.parse_example(records, features)
        return {key: first_or_empty(values[column]) if key in source.optional
                else text(values[column]) for key, column in zip(source.keys, source.columns)}

    records = tf.data.TFRecordDataset(path, compression_type=_compression(source))
    return records.batch(PARSE_BATCH).map(parsed).unbatch()


def diagnose(source, error):
    """A UserError for a stream that stopped with TensorFlow `error`: the strict reader's
    file:line message for the first file it refuses, else TensorFlow's message."""
    if source.kind != ".tfrecord":
        for path in source.paths:
            try:
                readers.read_rows(path, list(source.columns), source.flag)
            except UserError as found:
                return found
    message = getattr(error, "message", str(error)).strip().splitlines()[0]
    return UserError(f"{source.flag}={source.spec}: reading the files failed ({message}); "
                     "check the files and the column flags.")


@dataclasses.dataclass(frozen=True)
class PerHost:
    """Training input built per host: `build(input_context)` -> this host's tf.data of
    per-replica batches (the loop uses strategy.distribute_datasets_from_function).

    Example:
        PerHost(lambda context: batches_for(context))
    """

    build: object

    def __call__(self, input_context):
        return self.build(input_context)
