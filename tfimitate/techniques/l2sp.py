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

from tfimitate import options
from tfimitate.techniques import parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.number(
        "l2sp", 0.0,
        "L2-SP: adds l2sp/2 * squared distance of the backbone's weights to their starting "
        "(pretrained) values to the loss, alongside --weight_decay. 0: off.", lower=0.0),
)

RESUME_FIELDS = ("l2sp",)


class L2SP(Technique):
    name, flag, order = "l2sp", "--l2sp", 60
    excludes = {"frozen_backbone": "{flag} with {other}: {other} keeps the backbone's weights "
                                   "where they started, so there is nothing to pull back; drop "
                                   "one of them."}

    def __init__(self, strength):
        self.strength = strength

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        backbone = parts.require_backbone(run.model, self.flag, "to anchor")
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
    return L2SP(cfg.l2sp) if cfg.l2sp else None
