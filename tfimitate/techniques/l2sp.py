"""L2-SP (a technique): regularise toward the starting point, not toward zero.

`--l2sp=λ` adds λ/2 · Σ ||w - w0||² over the backbone's trainable weights to every
example's loss (so once to the batch mean), where w0 are the weights the backbone had
when the model was built for training: the pretrained ones (Li et al., 2018, "Explicit
inductive bias for transfer learning"). The head, which has no starting point, keeps
the usual --weight_decay, which also still applies to the backbone. The anchor is copied
before a resumed run restores its checkpoint, so it stays the pretrained weights.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --l2sp=0.01
"""

from tfimitate.errors import UserError
from tfimitate.training.backbone_parts import find_backbone
from tfimitate.training.techniques import Technique

RESUME_FIELDS = ("l2sp",)


class L2SP(Technique):
    name = "l2sp"

    def __init__(self, strength):
        self.strength = strength

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        backbone = find_backbone(run.model)
        if backbone is None:
            raise UserError("--l2sp: the model has no keras-hub backbone to anchor; drop --l2sp.")
        weights = [v for v in backbone.trainable_weights]
        with run.strategy.scope():
            anchors = [tf.Variable(tf.identity(v), trainable=False, name="l2sp_anchor")
                       for v in weights]
        self.anchors = dict(zip([v.path for v in weights], anchors))
        strength = self.strength

        def penalised(model, inputs, labels):
            losses = step_loss(model, inputs, labels)
            distance = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32) - a))
                                 for v, a in zip(weights, anchors)])
            return losses + 0.5 * strength * distance

        return penalised


def from_config(cfg):
    """L2SP when --l2sp > 0, else None."""
    if not cfg.l2sp:
        return None
    if cfg.lora_rank:
        raise UserError("--l2sp with --lora_rank: LoRA keeps the backbone's weights where they "
                        "started, so there is nothing to pull back; drop one of them.")
    return L2SP(cfg.l2sp)
