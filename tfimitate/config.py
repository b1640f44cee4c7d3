"""The resolved experiment: one frozen record built from the flags and saved with the model.

Library code reads flagfiles of its own (multi-task subtask files, search spaces) with the
typed reader here (`read_flagfile`, `parse_value`), never through absl's flags.

Example:
    cfg = experiment_from_flags()          # after absl parsed the command line
    cfg.save("runs/sst2")                  # experiment.json + re-runnable flags.cfg
    cfg = Experiment.load("runs/sst2")     # what evaluate/predict/export use
    values = read_flagfile("configs/subtasks/sentiment.cfg")  # {"task": "text_classification", ...}
"""

import dataclasses
import functools
import json
import math
import os
import typing
from typing import Optional, Tuple

from tfimitate.errors import UserError
from tfimitate import files

EXPERIMENT_FILE = "experiment.json"
FLAGFILE = "flags.cfg"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything that defines a training run. Field names are the flag names."""

    task: str = "text_classification"
    model_dir: Optional[str] = None
    export_dir: Optional[str] = None
    serving_version: Optional[str] = None
    train_data: Optional[str] = None
    eval_data: Optional[str] = None
    test_data: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    labels: Optional[Tuple[str, ...]] = None
    drop_unlisted_labels: bool = False
    tagging_scheme: str = "auto"
    holdout_fraction: float = 0.1
    image_column: str = "path"
    strict_images: bool = False
    backbone: str = "minilm_l6"
    sequence_length: int = 128
    dropout: float = 0.1
    backbone_layer: Optional[str] = None
    image_size: int = 0
    image_normalization: str = "auto"
    batch_size: int = 32
    epochs: int = 3
    max_steps: int = 0
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    eval_steps: int = 0
    early_stopping_patience: int = 0
    checkpoint_steps: int = 500
    keep_checkpoints: int = 3
    freeze_backbone_steps: int = 0
    fine_tune_layers: int = 0
    fine_tune_learning_rate: float = 0.0
    image_augment: Optional[Tuple[str, ...]] = None
    adversarial: str = "none"
    adv_epsilon: float = 0.1
    adv_alpha: float = 0.03
    adv_steps: int = 3
    augment: str = ""
    augment_prob: float = 0.5
    lora_rank: int = 0
    lora_alpha: Optional[float] = None
    lora_targets: Tuple[str, ...] = ("query", "value")
    save_adapters_only: bool = False
    freeze: Optional[Tuple[str, ...]] = None
    unfreeze_every_steps: int = 0
    layer_lr_decay: float = 1.0
    l2sp: float = 0.0
    init_from: Optional[str] = None
    label_map: Optional[Tuple[str, ...]] = None
    replay_data: Optional[str] = None
    replay_fraction: float = 0.2
    retain_eval_data: Optional[str] = None
    teacher: Optional[str] = None
    teacher_signature: Optional[str] = None
    teacher_output: Optional[str] = None
    teacher_label_map: Optional[Tuple[str, ...]] = None
    teacher_batch_size: int = 64
    teacher_timeout: float = 60.0
    unlabeled_data: Optional[str] = None
    unlabeled_column: Optional[str] = None
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5
    student_layers: int = 0
    student_layer_choice: str = "every_other"
    cv_folds: int = 0
    cv_fold: int = -1
    subtasks: Optional[Tuple[str, ...]] = None
    task_sampling: str = "proportional"
    task_temperature: float = 2.0
    subtask_name: Optional[str] = None
    loss_weight: float = 1.0
    cache_frozen_features: bool = False
    tfds_data_dir: Optional[str] = None
    strategy: str = "auto"
    tpu: Optional[str] = None
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1

    def replace(self, **changes):
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def save(self, model_dir):
        """Writes experiment.json and a flags.cfg that re-runs this experiment, each atomically."""
        values = dataclasses.asdict(self)
        files.write_atomically(os.path.join(model_dir, EXPERIMENT_FILE), json.dumps(values, indent=2))
        files.write_atomically(os.path.join(model_dir, FLAGFILE), self.flagfile())

    def flagfile(self):
        """A flagfile's text (one --flag=value a line) that re-runs this experiment."""
        lines = ["# Re-run with: python -m tfimitate.train --flagfile=<this file>"]
        for name, value in dataclasses.asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{name}" if value else f"--no{name}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"--{name}={','.join(value)}")
            else:
                lines.append(f"--{name}={value}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, model_dir):
        """Reads the experiment saved in `model_dir` by a training run."""
        path = os.path.join(model_dir, EXPERIMENT_FILE)
        if not files.isfile(path):
            raise UserError(
                f"--model_dir={model_dir} holds no {EXPERIMENT_FILE}; point it at "
                "the directory of a tfimitate.train run.")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            values = json.loads(files.read_bytes(path).decode("utf-8"))
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
            values = {k: tuple(v) if isinstance(v, list) else v
                      for k, v in values.items() if k in known}
            cfg = cls(**values)
        except (ValueError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError too
            flagfile = os.path.join(model_dir, FLAGFILE)
            rewrite = (f"delete it and re-run training with --flagfile={flagfile} "
                       f"--model_dir={model_dir} to rewrite it (training resumes from the last "
                       "checkpoint)"
                       if files.isfile(flagfile) else "restore it from a backup")
            reason = " ".join(str(error).split())[:120]
            raise UserError(f"{path} is damaged ({reason}); {rewrite}.") from None
        return cfg


# What a field takes beyond its type, as its flag declares it in flags.py (the typed
# flagfile reader checks them; tests/test_config.py keeps both in step). --task is checked
# by the task registry.
CHOICES = {
    "tagging_scheme": ("auto", "iob2", "iobes"),
    "image_normalization": ("auto", "raw", "unit", "symmetric", "imagenet"),
    "student_layer_choice": ("every_other", "bottom"),
    "task_sampling": ("proportional", "temperature", "round_robin"),
    "strategy": ("auto", "one_device", "mirrored", "multi_worker", "tpu"),
    "precision": ("float32", "mixed_float16", "mixed_bfloat16"),
}
BOUNDS = {  # (lowest, highest), None: no bound
    "holdout_fraction": (0.0, 0.5), "sequence_length": (8, None), "dropout": (0.0, 0.9),
    "image_size": (0, None), "batch_size": (1, None), "epochs": (1, None),
    "max_steps": (0, None), "learning_rate": (0.0, None), "warmup_ratio": (0.0, 1.0),
    "weight_decay": (0.0, None), "eval_steps": (0, None), "early_stopping_patience": (0, None),
    "checkpoint_steps": (1, None), "keep_checkpoints": (1, None),
    "freeze_backbone_steps": (0, None), "fine_tune_layers": (0, None),
    "fine_tune_learning_rate": (0.0, None), "lora_rank": (0, None), "lora_alpha": (0.0, None),
    "unfreeze_every_steps": (0, None), "layer_lr_decay": (0.0, 1.0), "l2sp": (0.0, None),
    "replay_fraction": (0.0, 0.9), "teacher_batch_size": (1, None),
    "teacher_timeout": (0.001, None), "distill_temperature": (0.01, None),
    "distill_alpha": (0.0, 1.0), "student_layers": (0, None), "cv_folds": (0, None),
    "cv_fold": (-1, None), "task_temperature": (1.0, None), "loss_weight": (0.0, None),
    "steps_per_execution": (1, None),
}
_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")


@functools.lru_cache(maxsize=None)
def field_types():
    """{field name: its type without Optional} of Experiment: str, int, float, bool or
    tuple (a Tuple[str, ...], written as a comma list)."""
    types = {}
    for name, hint in typing.get_type_hints(Experiment).items():
        if typing.get_origin(hint) is typing.Union:  # Optional[X]
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        types[name] = tuple if typing.get_origin(hint) is tuple else hint
    return types


def parse_value(name, text, where):
    """The value of Experiment field `name` written as `--name=text` in a flagfile, typed as
    the field is; one UserError naming `where` (file:line) for a value the field refuses.

    Example:
        parse_value("labels", "neg,pos", "a.cfg:3")        # ("neg", "pos")
        parse_value("batch_size", "big", "a.cfg:4")        # UserError: a.cfg:4: 'big' is not
                                                           # a valid --batch_size (not an integer); ...
    """
    kind = field_types()[name]
    problem = None
    if kind is bool:
        value = text.lower() in _TRUE if text.lower() in _TRUE + _FALSE else None
        problem = "not true or false" if value is None else None
    elif kind is tuple:
        value = tuple(part.strip() for part in text.split(",")) if text else ()
    elif kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            value, problem = None, "not an integer" if kind is int else "not a number"
    else:
        value = text
    low, high = BOUNDS.get(name, (None, None))
    if problem is None and low is not None and value < low:
        problem = f"it must be at least {low}"
    elif problem is None and high is not None and value > high:
        problem = f"it must be at most {high}"
    elif problem is None and name in CHOICES and value not in CHOICES[name]:
        problem = f"it must be one of {', '.join(CHOICES[name])}"
    if problem:
        raise UserError(f"{where}: '{text}' is not a valid --{name} ({problem}); fix the value.")
    return value


def read_flagfile(path, flag="--flagfile", check=None):
    """{field name: typed value} of the `--name=value` lines of flagfile `path` (also
    `--name`/`--noname` for true/false fields; `#` and `//` comment lines; a nested
    `--flagfile=FILE` is read in its place; a later line wins). `check(name, where)`, if
    given, may refuse a field before its value is read. Anything else is one UserError
    naming file:line: a line that is not a flag of Experiment, a value its field refuses,
    a quoted value, a nested flagfile that cannot be read.

    Example:
        read_flagfile("configs/subtasks/sentiment.cfg", "--subtasks")
        # {"task": "text_classification", "train_data": "...", "loss_weight": 1.0}
    """
    files.check_readable_file(path, flag)
    values = {}
    _read_lines(path, values, check, [_same_file(path)])
    return values


def _same_file(path):
    """`path` as compared to find a flagfile that includes itself."""
    return path if files.is_remote(path) else os.path.realpath(path)


def _read_lines(path, values, check, reading):
    from tfimitate.data import readers

    text = readers.decode_utf8(files.read_bytes(path), path, "save it as UTF-8.")
    types = field_types()
    for number, line in enumerate(text.splitlines(), start=1):
        line, where = line.strip(), f"{path}:{number}"
        if not line or line.startswith(("#", "//")):
            continue
        name, equals, value = line[2:].partition("=") if line.startswith("--") else ("", "", "")
        if name == "flagfile" and equals:
            _read_nested(os.path.expanduser(value.strip()), where, values, check, reading)
            continue
        if not equals and name.startswith("no") and types.get(name[2:]) is bool:
            name, value = name[2:], "false"
        elif not equals and types.get(name) is bool:
            value = "true"
        if name not in types:
            raise UserError(f"{where}: '{line}' is not a --flag=value line of a known flag; "
                            "fix the line (see --helpfull).")
        if check:
            check(name, where)
        if not equals and types[name] is not bool:
            raise UserError(f"{where}: --{name} needs a value; write --{name}=VALUE.")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            raise UserError(f"{where}: a flagfile takes values literally, so the quotes would "
                            f"become part of the value; write --{name}={value[1:-1]}.")
        values[name] = parse_value(name, value, where)


def _read_nested(path, where, values, check, reading):
    if _same_file(path) in reading:
        raise UserError(f"{where}: --flagfile={path} is already being read (the flagfiles "
                        "include each other); remove the line.")
    if not files.isfile(path):
        raise UserError(f"{where}: --flagfile={path} does not exist; check the path.")
    _read_lines(path, values, check, reading + [_same_file(path)])


def experiment_from_flags():
    """Builds the Experiment from parsed absl flags (train's view of them)."""
    from absl import flags

    values = {}
    for field in dataclasses.fields(Experiment):
        value = flags.FLAGS[field.name].value
        if isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    cfg = Experiment(**values)
    validate_for_training(cfg)
    return cfg


# Data flags a user gives as paths; checked before TensorFlow is imported.
DATA_FLAGS = ("train_data", "eval_data", "test_data", "replay_data", "retain_eval_data",
              "unlabeled_data")


def check_inputs_exist(cfg, names=DATA_FLAGS):
    """Refuses a malformed `tfds:` input or a local data path that does not exist, without
    importing TensorFlow, so that a typo is told in about a second.

    Example:
        check_inputs_exist(Experiment(train_data="missing.tsv"))  # UserError
    """
    for name in names:
        check_input_exists(getattr(cfg, name), f"--{name}")


def check_input_exists(spec, flag):
    """The check of check_inputs_exist for one input `spec` given as `flag` (None passes).

    Example:
        check_input_exists("tfds:glue/sst2:validation", "--input")  # parses the spec only
    """
    from tfimitate.data import readers, tfds_source

    if not spec or spec.startswith(readers.PACKAGE_PREFIX) or files.is_remote(spec):
        return
    if tfds_source.is_tfds(spec):
        tfds_source.parse(spec, flag)
        return
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise UserError(f"{flag}={spec}: file {path} does not exist; check the path.")


def validate_for_training(cfg):
    """Raises UserError for flag combinations that cannot train."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{field.name}={value}: give a finite number.")
    if not cfg.model_dir:
        raise UserError("--model_dir is required: say where checkpoints and logs go.")
    if not cfg.train_data and not cfg.subtasks:  # multi_task: data is in the subtask files
        raise UserError("--train_data is required: give a .csv, .tsv or .jsonl file.")
    if cfg.labels is not None and len(set(cfg.labels)) != len(cfg.labels):
        raise UserError(f"--labels lists a label twice ({','.join(cfg.labels)}); list each once.")
    if cfg.drop_unlisted_labels and cfg.labels is None:
        raise UserError("--drop_unlisted_labels needs --labels: list the labels to keep.")
    if cfg.serving_version is not None:
        from tfimitate.serving import releases

        releases.release(cfg.serving_version)
    if cfg.strategy == "tpu" and not cfg.tpu:
        raise UserError("--strategy=tpu needs --tpu=ADDRESS (or --tpu=local on a TPU VM).")
