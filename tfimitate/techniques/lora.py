"""LoRA (a technique): train low-rank adapters, serve them merged into the dense kernels.

`--lora_rank=R` freezes the whole backbone and gives each of its `--lora_targets` layers
(Keras Dense/EinsumDense/Embedding, matched by name: query, value ...) a trainable update
(lora_alpha / R) · A @ B through Keras's own `layer.enable_lora(rank, lora_alpha)`
(keras-hub's `Backbone.enable_lora` takes no alpha and also trains the targets' biases);
only A, B and the task's head train. `--save_adapters_only` keeps checkpoints to those
weights: restoring reloads the frozen backbone from --backbone first.

Export serves a copy of the model without adapters whose kernels are the merged
W + (alpha / R) · A @ B: Keras writes merged kernels when it saves a LoRA layer's weights,
and the copy, rebuilt from the model's config without LoRA, loads them. The SavedModel
has no LoRA variables and no extra ops, and the export's parity check compares it with
the trained (unmerged) model.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --lora_rank=8 --lora_alpha=16
"""

import os
import tempfile

import numpy as np

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques import parts
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.integer(
        "lora_rank", 0,
        "If > 0, train low-rank adapters (LoRA) of this rank on the --lora_targets layers of "
        "the backbone, which is otherwise frozen; only the adapters and the head train. The "
        "export merges the adapters into the dense kernels.", lower=0),
    options.number(
        "lora_alpha", None,
        "LoRA scale numerator: the update is (lora_alpha / lora_rank) * A @ B "
        "(default: lora_rank, a scale of 1).", lower=0.0),
    options.names(
        "lora_targets", ["query", "value"],
        "Names of the backbone's dense layers that get adapters (e.g. query,key,value,"
        "attention_output,feedforward_intermediate_dense)."),
    options.boolean(
        "save_adapters_only", False,
        "With --lora_rank: checkpoints hold only the weights that train (adapters and head); "
        "the frozen backbone is reloaded from --backbone when resuming or exporting."),
)

RESUME_FIELDS = ("lora_rank", "lora_alpha", "lora_targets", "save_adapters_only")
# Adapters start as a zero update and only they (and the head) train: at full fine-tuning's
# 5e-5 they barely move in a short run (chance accuracy on SST-2 after 150 steps). On SST-2
# dev, r=8, 150 steps, adapters on query and value: 2e-3 83.6%, 5e-3 85.6%, 1e-2 84.3%.
# With the packaged backbone they go on every dense layer of the encoder blocks (what
# QLoRA found closes the gap to full fine-tuning), where SST-2 dev preferred a lower rate:
# 1e-3 84.9%, 2e-3 86.5%, 5e-3 85.0% (benchmarks/results/defaults.md checks both on data
# they were not chosen on).
EVERY_DENSE = ("query", "key", "value", "attention_output", "feedforward_intermediate_dense",
               "feedforward_output_dense")
RECIPE = (
    options.Recipe("learning_rate", 5e-3,
                   "LoRA adapters start at zero and train alone, so they need a rate ~100x "
                   "full fine-tuning's"),
    options.Recipe("lora_targets", EVERY_DENSE,
                   "adapters on every dense layer of the packaged MiniLM-L6's blocks come "
                   "closest to full fine-tuning", unless=("backbone",)),
    options.Recipe("learning_rate", 2e-3,
                   "adapters on every dense layer of the packaged MiniLM-L6 train at a lower "
                   "rate than on query and value alone", unless=("backbone", "lora_targets")),
)
LORA_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")


def is_lora_weight(variable):
    return variable.path.rsplit("/", 1)[-1] in LORA_WEIGHTS


class LoRA(Technique):
    name, flag, order = "lora", "--lora_rank", 30

    def __init__(self, rank, alpha, targets, adapters_only):
        self.rank = rank
        self.alpha = alpha
        self.targets = targets
        self.adapters_only = adapters_only
        # Only adapters train; the backbone stays as loaded (and, with --save_adapters_only,
        # is rebuilt from --backbone, not from checkpoints).
        self.claims = {"trainable_weights": self.flag, "frozen_backbone": self.flag}
        if adapters_only:
            self.claims["partial_checkpoints"] = "--save_adapters_only"

    def adapt_model(self, model, cfg):
        backbone = parts.require_backbone(model, self.flag, "to put adapters on")
        layers = [layer for layer in parts.sublayers(backbone)
                  if hasattr(layer, "enable_lora") and layer.weights]
        for target in self.targets:
            if not any(layer.name == target for layer in layers):
                names = sorted({layer.name for layer in layers})
                raise UserError(f"--lora_targets: no layer of the backbone is named '{target}'; "
                                f"choose among {', '.join(names)}.")
        for layer in layers:
            if layer.name in self.targets:
                self._check_rank(layer)
        for variable in backbone.weights:
            variable.trainable = False
        for layer in layers:
            if layer.name in self.targets:
                layer.enable_lora(self.rank, lora_alpha=self.alpha)
        return model

    def _check_rank(self, layer):
        """Refuses a rank at which A @ B is no longer low-rank (as large as the kernel)."""
        shape = tuple((layer.embeddings if hasattr(layer, "embeddings") else layer.kernel).shape)
        limit = min(shape[0], int(np.prod(shape[1:])))
        if self.rank >= limit:
            raise UserError(f"--lora_rank={self.rank} is not below the size of layer "
                            f"'{layer.name}' ({'x'.join(map(str, shape))}), so its adapters would "
                            f"not be low-rank; give --lora_rank below {limit}.")

    def checkpoint_filter(self):
        if not self.adapters_only:
            return None
        return lambda variable: variable.trainable

    def prepare_export(self, model, cfg):
        """A copy of `model` without LoRA whose kernels hold the merged updates."""
        merged = model.__class__.from_config(_without_lora(model.get_config()))
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "merged.weights.h5")
            model.save_weights(path)  # Keras saves a LoRA layer's kernel merged
            merged.load_weights(path)
        left = [v.path for v in merged.weights if is_lora_weight(v)]
        if left or len(merged.weights) != len(model.weights) - len(
                [v for v in model.weights if is_lora_weight(v)]):
            raise RuntimeError(f"merging LoRA left adapter weights ({left[:2]}); please report this.")
        return merged


def _without_lora(config):
    """`config` with every layer's lora_rank/lora_alpha removed (nested configs too)."""
    if isinstance(config, dict):
        return {k: _without_lora(v) for k, v in config.items()
                if k not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [_without_lora(v) for v in config]
    return config


def from_config(cfg):
    """LoRA when --lora_rank > 0, else None."""
    if not cfg.lora_rank:
        if cfg.save_adapters_only:
            raise UserError("--save_adapters_only needs --lora_rank: only LoRA adapters can be "
                            "saved without the backbone.")
        default_targets = next(o.default for o in OPTIONS if o.name == "lora_targets")
        for name, unset in (("lora_alpha", cfg.lora_alpha is None),
                            ("lora_targets", tuple(cfg.lora_targets or ()) == tuple(default_targets))):
            if not unset:
                raise UserError(f"--{name} needs --lora_rank=R (R > 0): without it no adapters "
                                "are trained and the whole model is fine-tuned.")
        return None
    targets = tuple(name.strip() for name in cfg.lora_targets or () if name.strip())
    if not targets:
        raise UserError("--lora_targets is empty; name the layers that get adapters, e.g. "
                        "query,value.")
    if cfg.lora_alpha is not None and cfg.lora_alpha <= 0:
        raise UserError(f"--lora_alpha={cfg.lora_alpha}: give a positive scale, e.g. 16.")
    return LoRA(cfg.lora_rank, cfg.lora_alpha, targets, cfg.save_adapters_only)
