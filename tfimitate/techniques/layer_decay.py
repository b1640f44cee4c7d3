"""Layer-wise learning-rate decay (a technique): lower layers train more slowly.

With `--layer_lr_decay=d` and a backbone of L numbered layers, layer i (0-based) trains at
the learning rate times d^(L - i), the embeddings at d^(L + 1), and what lies above the
layers (pooler) and the task's head at the full rate (ELECTRA's recipe). The factor
scales each weight's whole AdamW update (training/optim.py FactoredAdamW).

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --layer_lr_decay=0.9
"""

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques.parts import Parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.number(
        "layer_lr_decay", 1.0,
        "Layer-wise learning-rate decay: layer i of L trains at rate * decay^(L - i), the "
        "embeddings at decay^(L + 1), the head at the full rate. 1.0: off.", lower=0.0, upper=1.0),
)

RESUME_FIELDS = ("layer_lr_decay",)


class LayerDecay(Technique):
    name, flag, order = "layer_decay", "--layer_lr_decay", 50

    def __init__(self, decay):
        self.decay = decay

    def learning_rate_factors(self, model, cfg):
        parts = Parts(model, "--layer_lr_decay")
        top = len(parts.layers) + 1
        return {variable.path: self.decay ** (top - parts.depth(variable))
                for variable in parts.weights if parts.depth(variable) < top}


def from_config(cfg):
    """LayerDecay when --layer_lr_decay is below 1, else None."""
    if cfg.layer_lr_decay <= 0.0:
        raise UserError(f"--layer_lr_decay={cfg.layer_lr_decay} would stop every backbone layer; "
                        "give a decay in (0, 1], e.g. 0.9 (or --freeze=backbone).")
    return LayerDecay(cfg.layer_lr_decay) if cfg.layer_lr_decay < 1.0 else None
