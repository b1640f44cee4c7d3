"""config.py: the Experiment assembled from the options their owners declare (the core, each
task class, each technique module), without TensorFlow; and the typed flagfile reader
(subtask files, search-space values): typed values of every kind of field, and one sentence
naming file:line for a line it refuses."""

import dataclasses
import glob
import os
import re

import pytest

from tfimitate import config, options
from tfimitate.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every field of the Experiment, with its default, before the options moved to their owners
# (main at 48889c6): old run directories' experiment.json and flags.cfg name them.
FIELDS_BEFORE_THE_MOVE = {
    'task': 'text_classification', 'model_dir': None, 'export_dir': None,
    'serving_version': None, 'train_data': None, 'eval_data': None, 'test_data': None,
    'text_column': 'text', 'text_pair_column': None, 'label_column': 'label', 'labels': None,
    'drop_unlisted_labels': False, 'tagging_scheme': 'auto', 'holdout_fraction': 0.1,
    'image_column': 'path', 'strict_images': False, 'backbone': 'minilm_l6',
    'sequence_length': 128, 'dropout': 0.1, 'backbone_layer': None, 'image_size': 0,
    'image_normalization': 'auto', 'batch_size': 32, 'epochs': 3, 'max_steps': 0,
    'learning_rate': 5e-05, 'warmup_ratio': 0.1, 'weight_decay': 0.01, 'seed': 42,
    'eval_steps': 0, 'early_stopping_patience': 0, 'checkpoint_steps': 500,
    'keep_checkpoints': 3, 'freeze_backbone_steps': 0, 'fine_tune_layers': 0,
    'fine_tune_learning_rate': 0.0, 'image_augment': None, 'adversarial': 'none',
    'adv_epsilon': 0.1, 'adv_alpha': 0.03, 'adv_steps': 3, 'augment': '', 'augment_prob': 0.5,
    'lora_rank': 0, 'lora_alpha': None, 'lora_targets': ('query', 'value'),
    'save_adapters_only': False, 'freeze': None, 'unfreeze_every_steps': 0,
    'layer_lr_decay': 1.0, 'l2sp': 0.0, 'init_from': None, 'label_map': None,
    'replay_data': None, 'replay_fraction': 0.2, 'retain_eval_data': None, 'teacher': None,
    'teacher_signature': None, 'teacher_output': None, 'teacher_label_map': None,
    'teacher_batch_size': 64, 'teacher_timeout': 60.0, 'unlabeled_data': None,
    'unlabeled_column': None, 'distill_temperature': 2.0, 'distill_alpha': 0.5,
    'student_layers': 0, 'student_layer_choice': 'every_other', 'cv_folds': 0, 'cv_fold': -1,
    'subtasks': None, 'task_sampling': 'proportional', 'task_temperature': 2.0,
    'subtask_name': None, 'loss_weight': 1.0, 'cache_frozen_features': False,
    'tfds_data_dir': None, 'strategy': 'auto', 'tpu': None, 'precision': 'float32',
    'jit_compile': False, 'steps_per_execution': 1,
}


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
    assert set(config.field_types()) == {f.name for f in dataclasses.fields(config.Experiment)} \
        - {config.SOURCES_FIELD}
    assert set(config.field_types().values()) <= {str, int, float, bool, tuple}


def test_flags_are_generated_from_the_declared_options_with_their_bounds_and_choices():
    """One declaration: the flag, the Experiment field and the reader's checks agree."""
    from absl import flags

    from tfimitate import flags as _defined  # noqa: F401  (defines the flags)

    for option in config.OPTIONS:
        flag = flags.FLAGS[option.name]
        default = tuple(flag.default) if isinstance(flag.default, list) else flag.default
        assert default == getattr(config.Experiment(), option.name), option.name
        assert option.help in flag.help  # an enum flag prefixes its choices, a recipe adds a note
        parser = flag.parser
        assert tuple(getattr(parser, "enum_values", ())) == option.choices, option.name
        assert (getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None)) == (
            option.lower, option.upper), option.name


def test_importing_config_and_the_registries_loads_no_tensorflow():
    """Assembling config.OPTIONS imports every task and technique module: none loads
    TensorFlow, Keras or keras-hub at import, so a flag mistake is answered in a second."""
    import subprocess
    import sys

    code = ("import sys, tfimitate.config, tfimitate.tasks, tfimitate.techniques, tfimitate.flags; "
            "from tfimitate.tasks import TASKS, task_class; "
            "from tfimitate.techniques import TECHNIQUES, module; "
            "[task_class(name) for name in TASKS]; [module(name) for name in TECHNIQUES]; "
            "assert 'lora_rank' in tfimitate.config.OPTION and 'tagging_scheme' in "
            "tfimitate.config.OPTION; "
            "print(*[name in sys.modules for name in ('tensorflow', 'keras', 'keras_hub')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_every_option_has_exactly_one_owner():
    """The core, each registered task class and each registered technique module declare
    their own options; config.OPTIONS is all of them, each declared once, core first."""
    declared = {}
    for owner, group in config.declared_options():
        assert isinstance(group, tuple) and all(isinstance(o, options.Option) for o in group), owner
        for option in group:
            declared.setdefault(option.name, set()).add((owner, id(option)))
    assert {name: len(owners) for name, owners in declared.items() if len(owners) != 1} == {}
    assert [option.name for option in config.OPTIONS] == list(declared)
    owner = {name: next(iter(owners))[0] for name, owners in declared.items()}
    assert owner["batch_size"] == "core" and owner["text_column"] == "core"
    assert owner["tagging_scheme"] == "task token_classification"
    assert owner["image_size"] == "task image_classification"
    assert owner["subtasks"] == "task multi_task"
    assert owner["lora_rank"] == "technique lora"
    assert owner["teacher"] == "technique distillation"


def test_the_experiment_keeps_every_field_and_default_it_had():
    """Old run directories (experiment.json) and flagfiles keep loading: each field is
    still there with its default."""
    now = {field.name: field.default for field in dataclasses.fields(config.Experiment)}
    assert {name: now.get(name, "missing") for name in FIELDS_BEFORE_THE_MOVE} == \
        FIELDS_BEFORE_THE_MOVE


def test_an_option_declared_twice_is_refused_naming_its_owners():
    one, same_name = options.integer("rank", 0, "a"), options.integer("rank", 1, "b")
    assert options.merge((one,), (one,)) == (one,)  # inherited: the same declaration
    with pytest.raises(ValueError, match=r"--rank is declared twice \(by core and technique x\)"):
        options.merge((one,), (same_name,), owners=["core", "technique x"])


def test_a_task_class_declares_options_as_a_tuple_of_options():
    from tfimitate.tasks import base, task_class

    cls = task_class("text_classification")
    broken = type("Broken", (cls,), {"OPTIONS": ["text_pair_column"]})
    with pytest.raises(TypeError, match="OPTIONS must be a tuple of tfimitate.options.Option"):
        base.check_task(broken, "text_classification")


@pytest.mark.parametrize("path", sorted(
    glob.glob(os.path.join(ROOT, "configs", "*.cfg"))
    + glob.glob(os.path.join(ROOT, "configs", "subtasks", "*.cfg"))),
    ids=lambda path: os.path.relpath(path, ROOT))
def test_every_shipped_flagfile_reads_as_an_experiment(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # nested --flagfile lines are relative to the project
    config.Experiment(**config.read_flagfile(path))


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
