"""Readers: formats, compression, column specs and missing files (bad file contents are rows
of test_bad_input)."""

import bz2
import gzip
import json

import pytest

from tfimitate.data import readers
from tfimitate.errors import UserError


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_csv_with_header_reads_named_columns(tmp_path):
    path = write_bytes(tmp_path, "d.csv", b'text,label\n"a, quoted text",pos\nplain,neg\n')
    rows = readers.read_rows(path, ["text", "label"], "--train_data")
    assert [r.values for r in rows] == [("a, quoted text", "pos"), ("plain", "neg")]
    assert [r.line for r in rows] == [2, 3]


def test_tsv_without_header_reads_indexed_columns_and_crlf(tmp_path):
    path = write_bytes(tmp_path, "d.tsv", b'say "hi"\t1\r\n\r\nbye\t0\r\n')
    rows = readers.read_rows(path, ["0", "1"], "--train_data")
    assert [r.values for r in rows] == [('say "hi"', "1"), ("bye", "0")]
    assert [r.line for r in rows] == [1, 3]


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_jsonl(tmp_path, suffix, compress):
    lines = "\n".join(json.dumps({"text": t, "label": l}) for t, l in [("x", 1), ("y", 0)])
    path = write_bytes(tmp_path, "d.jsonl" + suffix, compress(lines.encode()))
    rows = readers.read_rows(path, ["text", "label"], "--train_data")
    assert [r.values for r in rows] == [("x", 1), ("y", 0)]


def test_package_path_resolves_inside_installed_package():
    path = readers.resolve_path("package:tfimitate/flags.py", "--train_data")
    assert path.endswith("flags.py")


@pytest.mark.parametrize("spec,message", [
    ("/no/such/file.csv", "does not exist"),
    ("package:no_such_package_xyz/a.csv", "is not installed"),
])
def test_missing_files_are_named(spec, message):
    with pytest.raises(UserError, match=message) as error:
        readers.resolve_path(spec, "--train_data")
    assert "--train_data" in str(error.value)


def test_long_field_and_quoted_line_breaks_are_data(tmp_path):
    long_text = "word " * 40000  # 200 KB, above csv's default field limit of 128 KiB
    data = f'text,label\n{long_text},1\n"two\nlines, one text",0\n"say ""hi""",1\n'
    rows = readers.read_rows(write_bytes(tmp_path, "d.csv", data.encode()), ["text", "label"],
                             "--train_data")
    assert [r.values for r in rows] == [(long_text, "1"), ("two\nlines, one text", "0"),
                                        ('say "hi"', "1")]
    assert [r.line for r in rows] == [2, 3, 5]


def test_short_words_in_the_first_row_are_not_taken_for_a_header(tmp_path):
    data = "good\tpos\nawful\tneg\nfine\tpos\nbad\tneg\n"
    rows = readers.read_rows(write_bytes(tmp_path, "d.tsv", data.encode()), ["0", "1"],
                             "--train_data")
    assert rows[0].values == ("good", "pos") and len(rows) == 4


def test_jsonl_null_and_numbers_are_values(tmp_path):
    data = b'{"text": "a", "label": 1}\n{"text": null, "label": 2.5}\n'
    rows = readers.read_rows(write_bytes(tmp_path, "d.jsonl", data), ["text", "label"], "--x")
    assert [r.values for r in rows] == [("a", 1), (None, 2.5)]
