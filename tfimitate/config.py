"""The resolved experiment: one frozen record built from the flags and saved with the model.

Example:
    cfg = experiment_from_flags()          # after absl parsed the command line
    cfg.save("runs/sst2")                  # experiment.json + re-runnable flags.cfg
    cfg = Experiment.load("runs/sst2")     # what evaluate/predict/export use
"""

import dataclasses
import json
import math
import os
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
