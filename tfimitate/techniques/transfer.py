"""The transfer recipe (a technique): train the head on a frozen backbone, then fine-tune.

Phase 1 (`--freeze_backbone_steps=N`) trains only the head at `--learning_rate`, the
backbone frozen: its weights get no update and its BatchNorm layers run in inference mode
(Keras runs a non-trainable BatchNormalization with its moving statistics), the classic
pitfall of fine-tuning. Phase 2 unfreezes the backbone, all of it or only its top
`--fine_tune_layers` layers with weights, at `--fine_tune_learning_rate` (default: a tenth
of --learning_rate), with its own warmup and decay.

The backbone is the largest Keras model nested in the task's model (a keras-hub Backbone
or the cut Keras model file), so the recipe works for every task.

Example:
    technique = from_config(cfg.replace(freeze_backbone_steps=500))
    technique.phases(cfg, total_steps=2000)
    # [Phase(start=0, learning_rate=1e-3, ...), Phase(start=500, learning_rate=1e-4, ...)]
"""

import functools

from tfimitate.errors import UserError
from tfimitate.training.techniques import Phase, Technique

RESUME_FIELDS = ("freeze_backbone_steps", "fine_tune_layers", "fine_tune_learning_rate")


def backbone_of(model):
    """The largest Keras model nested in `model` (by weight count)."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not nested:
        raise UserError("--freeze_backbone_steps/--fine_tune_layers: the model has no nested "
                        "backbone model to freeze; drop these flags.")
    return max(nested, key=lambda layer: sum(int(w.shape.num_elements() or 0)
                                             for w in layer.weights))


def layers_with_weights(backbone):
    """The backbone's innermost layers that own weights, input to output."""
    return [layer for layer in backbone._flatten_layers(include_self=False)
            if not list(layer._flatten_layers(include_self=False)) and layer.weights]


def freeze_backbone(model):
    """Phase 1: the backbone is frozen (no updates; BatchNorm in inference mode)."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model, top_layers=0):
    """Phase 2: the whole backbone trains, or only its top `top_layers` layers with weights."""
    backbone = backbone_of(model)
    backbone.trainable = True
    if top_layers:
        layers = layers_with_weights(backbone)
        for layer in layers[:-top_layers]:
            layer.trainable = False


class Transfer(Technique):
    """Frozen-backbone phase then fine-tuning (see the module docstring)."""

    name = "transfer"

    def __init__(self, freeze_steps, fine_tune_layers, fine_tune_learning_rate):
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
    if cfg.lora_rank or cfg.freeze or cfg.unfreeze_every_steps:
        raise UserError("--freeze_backbone_steps/--fine_tune_layers set which backbone layers "
                        "train, and so do --lora_rank, --freeze and --unfreeze_every_steps; "
                        "use one of them.")
    learning_rate = cfg.fine_tune_learning_rate or (
        cfg.learning_rate / 10 if cfg.freeze_backbone_steps else cfg.learning_rate)
    return Transfer(cfg.freeze_backbone_steps, cfg.fine_tune_layers, learning_rate)
