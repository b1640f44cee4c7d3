"""Continue another run's model (a technique): `--init_from=RUN_DIR [--label_map=NEW=OLD,...]`.

Before training, the newest checkpoint of RUN_DIR (a run of the same task and backbone)
is restored (through `restore_run`, `tfimitate.runs.restore` lent by techniques.chosen)
as that run would serve it (LoRA adapters merged), and its weights are copied
into this run's model by name. The head is kept when both runs have the same labels;
otherwise every label of this run must be one of RUN_DIR's, by name or through
--label_map (NEW=OLD pairs), and its head row is copied from that label's. A resumed run
continues from its own checkpoint; only the first start reads RUN_DIR, and this run's
checkpoints hold every weight, so evaluate/export never need RUN_DIR.

Example:
    python -m tfimitate.train --flagfile=configs/quickstart.cfg --init_from=runs/sst2_minilm \\
        --label_map=fresh=1,rotten=0
"""

import os

from absl import logging

from tfimitate import files, options, techniques
from tfimitate.errors import UserError
from tfimitate.techniques import parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.string(
        "init_from", None,
        "Start from the newest checkpoint of another run (its model_dir) of the same task and "
        "backbone instead of the pretrained backbone; the head is kept when the labels match "
        "(or are mapped with --label_map). With --l2sp the anchor is that run's weights."),
    options.names(
        "label_map", None,
        "With --init_from: NEW=OLD pairs naming, for labels of this run, the label of the "
        "--init_from run whose head row they continue (e.g. fresh=1,rotten=0)."),
)

RESUME_FIELDS = ("init_from", "label_map")


class InitFrom(Technique):
    name, flag, order = "init_from", "--init_from", 10
    excludes = {"partial_checkpoints": "{flag} with {other}: checkpoints holding only some "
                                       "weights rebuild the rest from --backbone, not from the "
                                       "{flag} run; drop one of them."}

    def __init__(self, run_dir, label_map):
        self.run_dir = run_dir
        self.label_map = label_map

    def initialize(self, run):
        import numpy as np

        from tfimitate import runtime
        from tfimitate.config import EXPERIMENT_FILE, Experiment

        cfg, flag = run.cfg, f"--init_from={self.run_dir}"
        if not files.isfile(os.path.join(self.run_dir, EXPERIMENT_FILE)):
            raise UserError(f"{flag} holds no {EXPERIMENT_FILE}; give the model_dir of a "
                            "finished tfimitate.train run.")
        if os.path.realpath(self.run_dir) == os.path.realpath(cfg.model_dir):
            raise UserError(f"{flag} is this run's --model_dir; re-running resumes it anyway, "
                            "so drop --init_from or choose a new --model_dir.")
        previous = Experiment.load(self.run_dir)
        for field in ("task", "backbone"):
            if getattr(previous, field) != getattr(cfg, field):
                raise UserError(
                    f"{flag} is a run with --{field}={getattr(previous, field)}, this one has "
                    f"--{field}={getattr(cfg, field)}; continue a run of the same {field}.")
        columns = _label_columns(cfg.labels, previous.labels, self.label_map, flag)
        remap = tuple(cfg.labels) != tuple(previous.labels) or bool(self.label_map)
        try:
            _, old, step = self.restore_run(self.run_dir, flag="--init_from")
        finally:
            runtime.set_precision(cfg.precision)  # restore sets the old run's policy
        source = techniques.prepare_export(techniques.chosen(old.cfg), old.model, old.cfg)
        backbone = {id(v) for v in parts.find_backbone(run.model, keras_hub=False).weights}
        old_weights = {v.path: v for v in source.weights}
        copied = 0
        for variable in run.model.weights:
            other = old_weights.get(variable.path)
            if other is None:
                continue
            value = other.numpy()
            head = id(variable) not in backbone
            if remap and head and value.shape[-1:] == (len(previous.labels),):
                value = np.take(value, columns, axis=-1)  # one head row per label
            if value.shape != tuple(variable.shape):
                raise UserError(f"{flag}: its weight {variable.path} has shape {value.shape}, "
                                f"this model's {tuple(variable.shape)}; continue a run of the "
                                "same model.")
            variable.assign(value)
            copied += 1
        logging.info("Initialised %d weights from %s (step %d)%s.", copied, self.run_dir, step,
                     ", head rows by label" if remap else "")


def _label_columns(labels, old_labels, label_map, flag):
    """For each label of this run, the index of the old run's label it continues."""
    pairs = dict(entry.split("=", 1) for entry in label_map or ())
    unknown = [new for new in pairs if new not in labels]
    if unknown:
        raise UserError(f"--label_map names '{unknown[0]}', which is not a label of this run "
                        f"({', '.join(labels)}).")
    columns = []
    for label in labels:
        old = pairs.get(label, label)
        if old not in old_labels and label in pairs:
            raise UserError(
                f"--label_map={label}={old}: '{old}' is not a label of the {flag} run "
                f"({', '.join(old_labels)}); map '{label}' to one of them.")
        if old not in old_labels:
            raise UserError(
                f"{flag}: label '{label}' of this run is not among that run's labels "
                f"({', '.join(old_labels)}); map it with --label_map={label}=OLD_LABEL.")
        columns.append(list(old_labels).index(old))
    return columns


def from_config(cfg):
    """InitFrom when --init_from is given, else None."""
    if not cfg.init_from:
        if cfg.label_map:
            raise UserError("--label_map needs --init_from: it maps this run's labels to "
                            "another run's.")
        return None
    seen = {}
    for entry in cfg.label_map or ():
        new, _, old = entry.partition("=")
        if not new.strip() or not old.strip() or new != new.strip() or old != old.strip():
            raise UserError(f"--label_map: '{entry}' is not NEW=OLD; write pairs like "
                            "fresh=1,rotten=0.")
        if new in seen:
            raise UserError(f"--label_map maps '{new}' twice ({seen[new]}, {entry}); give each "
                            "label of this run one OLD label.")
        seen[new] = entry
    return InitFrom(cfg.init_from, cfg.label_map)
