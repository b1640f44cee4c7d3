"""The transfer recipe (a technique): train the head on a frozen backbone, then fine-tune.

Phase 1 (`--freeze_backbone_steps=N`) trains only the head at `--learning_rate`, the
backbone frozen: its weights get no update and its BatchNorm layers run in inference mode
(Keras runs a non-trainable BatchNormalization with its moving statistics), the classic
pitfall of fine-tuning. Phase 2 unfreezes the backbone, all of it or only its top
`--fine_tune_layers` layers with weights, at `--fine_tune_learning_rate` (default: a tenth
of --learning_rate), with its own warmup and decay.

The backbone is the task model's keras-hub Backbone or its cut Keras model file
(techniques/parts.py), so the recipe works for every task.

Example:
    technique = from_config(cfg.replace(freeze_backbone_steps=500))
    technique.phases(cfg, total_steps=2000)
    # [Phase(start=0, learning_rate=1e-3, ...), Phase(start=500, learning_rate=1e-4, ...)]
"""

import functools

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques import parts
from tfimitate.training.hooks import Phase, Technique

OPTIONS = (
    options.integer(
        "freeze_backbone_steps", 0,
        "Transfer recipe, phase 1: train only the head for this many steps, the backbone frozen "
        "(its BatchNorm layers in inference mode) at --learning_rate; then phase 2 fine-tunes "
        "at --fine_tune_learning_rate. 0: no frozen phase.", lower=0),
    options.integer(
        "fine_tune_layers", 0,
        "Transfer recipe, phase 2: unfreeze only the top N backbone layers that have weights "
        "(0: all of them).", lower=0),
    options.number(
        "fine_tune_learning_rate", 0.0,
        "Transfer recipe, phase 2: peak learning rate after the frozen phase (0: --learning_rate "
        "/ 10).", lower=0.0),
)

RESUME_FIELDS = ("freeze_backbone_steps", "fine_tune_layers", "fine_tune_learning_rate")
FLAGS = "--freeze_backbone_steps/--fine_tune_layers"


def backbone_of(model):
    """The backbone the recipe freezes (parts.find_backbone, any kind); UserError if none."""
    return parts.require_backbone(model, FLAGS, "to freeze", keras_hub=False)


def freeze_backbone(model):
    """Phase 1: the backbone is frozen (no updates; BatchNorm in inference mode)."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model, top_layers=0):
    """Phase 2: the whole backbone trains, or only its top `top_layers` layers with weights."""
    backbone = backbone_of(model)
    backbone.trainable = True
    if top_layers:
        layers = parts.innermost_layers(backbone)
        for layer in layers[:-top_layers]:
            layer.trainable = False


class Transfer(Technique):
    """Frozen-backbone phase then fine-tuning (see the module docstring)."""

    name, order = "transfer", 20
    claims = {"trainable_weights"}

    def __init__(self, freeze_steps, fine_tune_layers, fine_tune_learning_rate):
        self.flag = "--freeze_backbone_steps" if freeze_steps else "--fine_tune_layers"
        self.freeze_steps = freeze_steps
        self.fine_tune_layers = fine_tune_layers
        self.fine_tune_learning_rate = fine_tune_learning_rate

    def phases(self, cfg, total_steps):
        fine_tune = Phase(self.freeze_steps, self.fine_tune_learning_rate or cfg.learning_rate,
                          functools.partial(unfreeze_backbone, top_layers=self.fine_tune_layers))
        if not self.freeze_steps:
            return [fine_tune]
        if self.freeze_steps >= total_steps:
            return [Phase(0, cfg.learning_rate, freeze_backbone)]
        return [Phase(0, cfg.learning_rate, freeze_backbone), fine_tune]


def from_config(cfg):
    """Transfer when --freeze_backbone_steps or --fine_tune_layers ask for it, else None."""
    if not cfg.freeze_backbone_steps and not cfg.fine_tune_layers:
        if cfg.fine_tune_learning_rate:
            raise UserError("--fine_tune_learning_rate sets phase 2 of the transfer recipe; "
                            "also set --freeze_backbone_steps (or --fine_tune_layers).")
        return None
    learning_rate = cfg.fine_tune_learning_rate or (
        cfg.learning_rate / 10 if cfg.freeze_backbone_steps else cfg.learning_rate)
    return Transfer(cfg.freeze_backbone_steps, cfg.fine_tune_layers, learning_rate)
