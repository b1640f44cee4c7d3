"""The transfer recipe (a technique): train the head on a frozen backbone, then fine-tune.

Phase 1 (`--freeze_backbone_steps=N`, or `--freeze_backbone_fraction=F` of the run's
steps, what image_classification's recipe sets) trains only the head at `--learning_rate`, the
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
    options.number(
        "freeze_backbone_fraction", 0.0,
        "Transfer recipe, phase 1 as a fraction of the run's steps (e.g. 0.75: the head trains "
        "alone for the first 3/4); instead of --freeze_backbone_steps. 0: no frozen phase.",
        lower=0.0, upper=1.0),
    options.integer(
        "fine_tune_layers", 0,
        "Transfer recipe, phase 2: unfreeze only the top N backbone layers that have weights "
        "(0: all of them).", lower=0),
    options.number(
        "fine_tune_learning_rate", 0.0,
        "Transfer recipe, phase 2: peak learning rate after the frozen phase (0: --learning_rate "
        "/ 10).", lower=0.0),
)

RESUME_FIELDS = ("freeze_backbone_steps", "freeze_backbone_fraction", "fine_tune_layers",
                 "fine_tune_learning_rate")
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

    def __init__(self, flag, fine_tune_layers, fine_tune_learning_rate):
        self.flag = flag
        self.fine_tune_layers = fine_tune_layers
        self.fine_tune_learning_rate = fine_tune_learning_rate

    def phases(self, cfg, total_steps):
        freeze_steps = frozen_steps(cfg, total_steps)
        fine_tune = Phase(freeze_steps, self.fine_tune_learning_rate or cfg.learning_rate,
                          functools.partial(unfreeze_backbone, top_layers=self.fine_tune_layers))
        if not freeze_steps:
            return [fine_tune]
        if freeze_steps >= total_steps:
            return [Phase(0, cfg.learning_rate, freeze_backbone)]
        return [Phase(0, cfg.learning_rate, freeze_backbone), fine_tune]


def frozen_steps(cfg, total_steps):
    """The steps of phase 1 in a run of `total_steps`: --freeze_backbone_steps, or
    --freeze_backbone_fraction of them (at least one step when the fraction is set).

    Example:
        frozen_steps(cfg.replace(freeze_backbone_fraction=0.75), 80)   # 60
    """
    if cfg.freeze_backbone_fraction:
        return max(1, round(cfg.freeze_backbone_fraction * total_steps))
    return cfg.freeze_backbone_steps


def from_config(cfg):
    """Transfer when --freeze_backbone_steps, --freeze_backbone_fraction or
    --fine_tune_layers ask for it, else None."""
    frozen = cfg.freeze_backbone_steps or cfg.freeze_backbone_fraction
    if not frozen and not cfg.fine_tune_layers:
        if cfg.fine_tune_learning_rate:
            raise UserError("--fine_tune_learning_rate sets phase 2 of the transfer recipe; "
                            "also set --freeze_backbone_steps (or --fine_tune_layers).")
        return None
    if cfg.freeze_backbone_steps and cfg.freeze_backbone_fraction:
        raise UserError(f"--freeze_backbone_steps={cfg.freeze_backbone_steps} and "
                        f"--freeze_backbone_fraction={cfg.freeze_backbone_fraction:g} both set "
                        "the frozen phase; give one of them.")
    if cfg.max_steps and cfg.freeze_backbone_steps > cfg.max_steps:
        raise UserError(f"--freeze_backbone_steps={cfg.freeze_backbone_steps} is more than "
                        f"--max_steps={cfg.max_steps}, so the backbone would never be "
                        f"fine-tuned; give at most {cfg.max_steps} (equal: train the head only).")
    learning_rate = cfg.fine_tune_learning_rate or (
        cfg.learning_rate / 10 if frozen else cfg.learning_rate)
    flag = ("--freeze_backbone_steps" if cfg.freeze_backbone_steps else
            "--freeze_backbone_fraction" if cfg.freeze_backbone_fraction else "--fine_tune_layers")
    return Transfer(flag, cfg.fine_tune_layers, learning_rate)
