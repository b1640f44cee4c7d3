"""The typed flagfile reader of config.py (subtask files, search-space values): typed values
of every kind of field, and one sentence naming file:line for a line it refuses."""

import dataclasses
import re

import pytest

from tfimitate import config
from tfimitate.errors import UserError


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_a_flagfile_becomes_typed_experiment_values(tmp_path):
    inner = _write(tmp_path, "inner.cfg", ["--epochs=2", "--batch_size=8"])
    path = _write(tmp_path, "a.cfg", [
        "# a comment", "// another", "", "--task=token_classification",
        "  --text_pair_column=  ", "--holdout_fraction=0.25", "--lora_alpha=16",
        "--labels=neg, pos", "--image_augment=", "--strict_images", "--nojit_compile",
        "--drop_unlisted_labels=True", f"--flagfile={inner}", "--epochs=3"])
    assert config.read_flagfile(path) == {
        "task": "token_classification", "text_pair_column": "", "holdout_fraction": 0.25,
        "lora_alpha": 16.0, "labels": ("neg", "pos"), "image_augment": (),
        "strict_images": True, "jit_compile": False, "drop_unlisted_labels": True,
        "batch_size": 8, "epochs": 3}  # a later line wins, the nested file in its place
    cfg = config.Experiment(**config.read_flagfile(path))
    assert isinstance(cfg.batch_size, int) and isinstance(cfg.lora_alpha, float)


def test_values_are_read_by_the_field_type():
    parse = config.parse_value
    assert parse("sequence_length", "64", "f:1") == 64
    assert parse("learning_rate", "3e-5", "f:1") == 3e-5
    assert parse("jit_compile", "f", "f:1") is False
    assert parse("lora_targets", "query,value", "f:1") == ("query", "value")
    assert parse("tagging_scheme", "iobes", "f:1") == "iobes"
    assert parse("model_dir", "runs/x", "f:1") == "runs/x"


def test_every_field_has_a_type_the_reader_knows():
    assert set(config.field_types()) == {f.name for f in dataclasses.fields(config.Experiment)}
    assert set(config.field_types().values()) <= {str, int, float, bool, tuple}


def test_flags_are_generated_from_the_declared_options_with_their_bounds_and_choices():
    """One declaration: the flag, the Experiment field and the reader's checks agree."""
    from absl import flags

    from tfimitate import flags as _defined  # noqa: F401  (defines the flags)

    for option in config.OPTIONS:
        flag = flags.FLAGS[option.name]
        default = tuple(flag.default) if isinstance(flag.default, list) else flag.default
        assert default == getattr(config.Experiment(), option.name), option.name
        assert flag.help.endswith(option.help)  # an enum flag prefixes its choices
        parser = flag.parser
        assert tuple(getattr(parser, "enum_values", ())) == option.choices, option.name
        assert (getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None)) == (
            option.lower, option.upper), option.name


def test_importing_config_and_the_registries_loads_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, tfimitate.config, tfimitate.tasks, tfimitate.flags; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("line, message", [
    ("--batch_size=big", "'big' is not a valid --batch_size (not an integer); fix the value."),
    ("--batch_size=0", "'0' is not a valid --batch_size (it must be at least 1); fix the value."),
    ("--dropout=0.95", "'0.95' is not a valid --dropout (it must be at most 0.9); fix the value."),
    ("--learning_rate=fast", "'fast' is not a valid --learning_rate (not a number)"),
    ("--jit_compile=maybe", "'maybe' is not a valid --jit_compile (not true or false)"),
    ("--tagging_scheme=bio", "'bio' is not a valid --tagging_scheme (it must be one of auto, "
                             "iob2, iobes); fix the value."),
    ("--learnin_rate=1e-5", "'--learnin_rate=1e-5' is not a --flag=value line of a known flag; "
                            "fix the line (see --helpfull)."),
    ("epochs=3", "'epochs=3' is not a --flag=value line of a known flag"),
    ("--epochs", "--epochs needs a value; write --epochs=VALUE."),
    ('--model_dir="runs/x"', "a flagfile takes values literally, so the quotes would become "
                             "part of the value; write --model_dir=runs/x."),
    ("--flagfile=missing.cfg", "--flagfile=missing.cfg does not exist; check the path."),
])
def test_a_bad_line_is_one_sentence_naming_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, "a.cfg", ["# subtask", "--epochs=2", line])
    with pytest.raises(UserError) as error:
        config.read_flagfile(path)
    assert str(error.value).startswith(f"{path}:3: {message}")
    assert "\n" not in str(error.value)


def test_nested_flagfiles_name_their_own_line(tmp_path):
    outer, inner = str(tmp_path / "outer.cfg"), f"{tmp_path}/./inner.cfg"  # another spelling
    _write(tmp_path, "inner.cfg", ["--epochs=2", f"--flagfile={outer}"])
    _write(tmp_path, "outer.cfg", [f"--flagfile={inner}"])
    with pytest.raises(UserError, match=re.escape(
            f"{inner}:2: --flagfile={outer} is already being read (the flagfiles include each "
            "other); remove the line.")):
        config.read_flagfile(outer)
    _write(tmp_path, "inner.cfg", ["--epochs=two"])
    with pytest.raises(UserError, match=re.escape(f"{inner}:1: 'two' is not a valid --epochs")):
        config.read_flagfile(outer)
    (tmp_path / "inner.cfg").write_bytes(b"--epochs=2\n--model_dir=caf\xe9\n")
    with pytest.raises(UserError, match=re.escape(f"{inner}:2: bytes are not valid UTF-8")):
        config.read_flagfile(outer)


def test_a_caller_may_refuse_a_field_before_its_value_is_read(tmp_path):
    def only_data(name, where):
        if name != "train_data":
            raise UserError(f"{where}: --{name} is not a data flag.")

    path = _write(tmp_path, "a.cfg", ["--train_data=t.csv", "--batch_size=big"])
    with pytest.raises(UserError, match=r"a.cfg:2: --batch_size is not a data flag\.$"):
        config.read_flagfile(path, check=only_data)
