"""The resolved experiment: one frozen record built from the flags and saved with the model.

Example:
    cfg = experiment_from_flags()          # after absl parsed the command line
    cfg.save("runs/sst2")                  # experiment.json + re-runnable flags.cfg
    cfg = Experiment.load("runs/sst2")     # what evaluate/predict/export use
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

from tfimitate.errors import UserError

EXPERIMENT_FILE = "experiment.json"
FLAGFILE = "flags.cfg"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything that defines a training run. Field names are the flag names."""

    task: str = "text_classification"
    model_dir: Optional[str] = None
    export_dir: Optional[str] = None
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
    backbone: str = "minilm_l6"
    sequence_length: int = 128
    dropout: float = 0.1
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
    strategy: str = "auto"
    tpu: Optional[str] = None
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1

    def replace(self, **changes):
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def save(self, model_dir):
        """Writes experiment.json and a flags.cfg that re-runs this experiment."""
        values = dataclasses.asdict(self)
        with open(os.path.join(model_dir, EXPERIMENT_FILE), "w") as f:
            json.dump(values, f, indent=2)
        with open(os.path.join(model_dir, FLAGFILE), "w") as f:
            f.write("# Re-run with: python -m tfimitate.train --flagfile=<this file>\n")
            for name, value in values.items():
                if value is None:
                    continue
                if isinstance(value, bool):
                    f.write(f"--{name}\n" if value else f"--no{name}\n")
                elif isinstance(value, (list, tuple)):
                    f.write(f"--{name}={','.join(value)}\n")
                else:
                    f.write(f"--{name}={value}\n")

    @classmethod
    def load(cls, model_dir):
        """Reads the experiment saved in `model_dir` by a training run."""
        path = os.path.join(model_dir, EXPERIMENT_FILE)
        if not os.path.isfile(path):
            raise UserError(
                f"--model_dir={model_dir} holds no {EXPERIMENT_FILE}; point it at "
                "the directory of a tfimitate.train run.")
        with open(path) as f:
            values = json.load(f)
        known = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for name in ("labels", "teacher_label_map"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


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


def validate_for_training(cfg):
    """Raises UserError for flag combinations that cannot train."""
    if not cfg.model_dir:
        raise UserError("--model_dir is required: say where checkpoints and logs go.")
    if not cfg.train_data:
        raise UserError("--train_data is required: give a .csv, .tsv or .jsonl file.")
    if cfg.labels is not None and len(set(cfg.labels)) != len(cfg.labels):
        raise UserError(f"--labels lists a label twice ({','.join(cfg.labels)}); list each once.")
    if cfg.drop_unlisted_labels and cfg.labels is None:
        raise UserError("--drop_unlisted_labels needs --labels: list the labels to keep.")
    if cfg.strategy == "tpu" and not cfg.tpu:
        raise UserError("--strategy=tpu needs --tpu=ADDRESS (or --tpu=local on a TPU VM).")
