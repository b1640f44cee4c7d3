"""Atomic writes: the old content or the new, never half, and no temporary file left behind."""

import os

import pytest

from tfimitate.files import write_atomically


def test_text_and_bytes_replace_the_file_with_usual_permissions(tmp_path):
    path = str(tmp_path / "experiment.json")
    write_atomically(path, "{\"a\": 1}")
    write_atomically(path, b"\x89PNG")
    assert open(path, "rb").read() == b"\x89PNG"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["experiment.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "flags.cfg")
    write_atomically(path, "--epochs=3\n")
    with pytest.raises(TypeError):
        write_atomically(path, ["not", "bytes"])
    assert open(path).read() == "--epochs=3\n" and os.listdir(tmp_path) == ["flags.cfg"]
