"""Freezing (a technique): backbone parts that never train, and gradual unfreezing.

`--freeze=embeddings,layers:0-3` makes those weights non-trainable: they get no gradient,
no optimizer slots and no update, so they stay bit-for-bit as loaded (names:
techniques/parts.py). `--unfreeze_every_steps=N` starts with the whole backbone
held still and lets one more part train every N steps, from the top: at step 0 the head
(and what lies above the numbered layers, like the pooler), at N the top layer, ..., the
embeddings last. Parts waiting their turn get a learning-rate factor of 0 (their Adam
moments follow their gradients meanwhile, so they start with warm statistics); parts
named in --freeze never train.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --freeze=embeddings,layers:0-2
"""

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques import parts as backbone_parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.names(
        "freeze", None,
        "Backbone parts that never train: `embeddings`, `layers:I-J` (0-based, inclusive) or "
        "`layers:I`, `backbone`, or a backbone layer's name (e.g. pooled_dense)."),
    options.integer(
        "unfreeze_every_steps", 0,
        "If > 0, gradual unfreezing: training starts with the backbone frozen and every this "
        "many steps the next layer from the top starts to train (embeddings last).", lower=0),
)

RESUME_FIELDS = ("freeze", "unfreeze_every_steps")


class Freezing(Technique):
    name, order = "freezing", 40
    claims = {"trainable_weights"}

    def __init__(self, freeze, unfreeze_every_steps):
        self.freeze = freeze
        self.unfreeze_every_steps = unfreeze_every_steps
        self.flag = "--freeze" if freeze else "--unfreeze_every_steps"

    def adapt_model(self, model, cfg):
        if self.freeze:
            parts = backbone_parts.Parts(model, "--freeze")
            frozen = parts.select(self.freeze, "--freeze")
            for variable in frozen:
                variable.trainable = False
            ids = {id(v) for v in frozen}
            for layer in backbone_parts.sublayers(parts.backbone):
                if layer.weights and all(id(v) in ids for v in layer.weights):
                    layer.trainable = False  # e.g. a BatchNormalization then runs in inference mode
            if not model.trainable_weights:
                raise UserError(f"--freeze={','.join(self.freeze)} leaves no weight to train.")
        return model

    def learning_rate_factors(self, model, cfg):
        if not self.unfreeze_every_steps:
            return {}
        import tensorflow as tf

        parts = backbone_parts.Parts(model, "--unfreeze_every_steps")
        top = len(parts.layers) + 1
        factors = {}
        for variable in parts.weights:
            # depth top trains from step 0, depth top - k from step k * N.
            start = (top - parts.depth(variable)) * self.unfreeze_every_steps
            if start and variable.trainable:
                factors[variable.path] = lambda step, start=start: tf.cast(step >= start, tf.float32)
        return factors


def from_config(cfg):
    """Freezing when --freeze or --unfreeze_every_steps ask for it, else None."""
    if not cfg.freeze and not cfg.unfreeze_every_steps:
        return None
    freeze = tuple(name.strip() for name in cfg.freeze or () if name.strip())
    if cfg.freeze and not freeze:
        raise UserError("--freeze is empty; name parts like embeddings,layers:0-3.")
    return Freezing(freeze, cfg.unfreeze_every_steps)
