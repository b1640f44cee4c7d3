"""Cached frozen features (a technique): phase 1 of the transfer recipe in seconds.

While `--freeze_backbone_steps` (or `--freeze_backbone_fraction`) keeps the backbone
frozen, the model's frozen part (the backbone and the weightless layers around it, e.g.
rescaling and pooling) computes the same features of an example at every step. `--cache_frozen_features` computes them once
per training example before training (backbone in inference mode: BatchNorm with its
moving statistics, no dropout) and, while the backbone is frozen, the step runs only the
head (the rest of the model, with its dropout) on the cached features. Batches, their
order and the head's updates are those of the uncached recipe; phase 2 trains the whole
model on the inputs again.

How: `adapt_examples` gives every training example its row number (an extra that rides
in the labels, tasks/base.py train_dataset); `initialize` cuts the model's graph where
the frozen part ends (one tensor of [batch, features]) and fills the table from the
task's training batches that phase 1 will see (its first pass at most: it pays off most
when phase 1 is longer than a pass); `wrap_loss` looks rows up by number while the backbone
is frozen (checked when the step is traced, once per phase). The table lives in memory
only: a run resumed in phase 1 computes it again, one resumed in phase 2 skips it. Without
a table (larger than MAX_BYTES: a warning) phase 1 runs the frozen backbone as usual.

Example:
    cfg = cfg.replace(freeze_backbone_steps=2000, cache_frozen_features=True)
    technique = from_config(cfg)   # FeatureCache, or None without the flag
"""

import os
import time

import numpy as np
from absl import logging

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques import transfer
from tfimitate.training.hooks import Examples, Technique

OPTIONS = (
    options.boolean(
        "cache_frozen_features", False,
        "While --freeze_backbone_steps keeps the backbone frozen, train the head on the "
        "backbone's features computed once per training example (inference mode) instead of "
        "running the backbone at every step. Not with --image_augment/--augment/--adversarial."),
)

# The extra (per training example) holding its row in the feature table.
INDEX_EXTRA = "frozen_feature_row"
# Largest feature table built in memory (57,000 images x 1,280 floats take 290 MB).
MAX_BYTES = 2 << 30


def frozen_part(model, backbone):
    """(features model, head model): `model` cut after its frozen part, the backbone and
    the weightless, non-random layers fed only by it (rescaling, pooling, slicing).

    Raises UserError unless the frozen part ends in one [batch, features] tensor."""
    import keras

    frozen = {id(t) for t in model.inputs}
    ends = []
    # Keras 3 has no public walk over a functional model's call nodes; Functional keeps
    # them by depth (the inputs deepest).
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            inputs = node.input_tensors
            if not inputs:
                continue
            if all(id(t) in frozen for t in inputs) and (
                    node.operation is backbone or not node.operation.variables):
                frozen.update(id(t) for t in node.outputs)
            else:
                ends.extend(t for t in inputs if id(t) in frozen)
    ends = list({id(t): t for t in ends}.values())
    if len(ends) != 1 or len(ends[0].shape) != 2:
        raise UserError(
            "--cache_frozen_features caches one feature vector per example, but the model's "
            f"frozen backbone ends in {', '.join(str(tuple(t.shape)) for t in ends) or 'none'} "
            "(e.g. one vector per token); drop --cache_frozen_features.")
    return (keras.Model(model.inputs, ends[0], name="frozen_features"),
            keras.Model(ends[0], model.outputs, name="head_on_features"))


def phase_one_done(model_dir, freeze_steps):
    """True if the newest checkpoint (which a resumed run restores) is past the frozen phase.
    (If it cannot be read, an older one in phase 1 is restored: that phase then runs the
    backbone, as without a table.)"""
    import tensorflow as tf

    from tfimitate.training import checkpoints

    newest = tf.train.latest_checkpoint(os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR))
    return newest is not None and int(newest.rsplit("-", 1)[1]) >= freeze_steps


class FeatureCache(Technique):
    """Trains the head on cached features while the backbone is frozen (module doc)."""

    # Last: it numbers the final training split and wraps the others' losses.
    name, flag, order = "feature_cache", "--cache_frozen_features", 130
    excludes = {"changed_inputs": "{flag} caches the features of unchanged inputs, but {other} "
                                  "changes them at every step; drop one of the two."}

    def __init__(self):
        self.task = self.split = self.extras = None
        self.table = self.head = None

    def adapt_examples(self, examples, task, data, cfg):
        self.task, self.split = task, examples.split
        self.extras = dict(examples.extras, **{INDEX_EXTRA: np.arange(len(examples.split))})
        return Examples(examples.split, self.extras)

    def initialize(self, run):
        import tensorflow as tf

        from tfimitate.tasks import inference

        features, self.head = frozen_part(run.model, transfer.backbone_of(run.model))
        rows, width = len(self.split), int(features.output.shape[-1])
        frozen_steps = transfer.frozen_steps(run.cfg, run.total_steps)
        if phase_one_done(run.cfg.model_dir, frozen_steps):
            return
        if rows * width * 4 > MAX_BYTES:
            logging.warning("--cache_frozen_features: %d x %d features take %.1f GB, more than "
                            "%.1f GB; phase 1 runs the frozen backbone at every step instead.",
                            rows, width, rows * width * 4 / 2**30, MAX_BYTES / 2**30)
            return
        # Phase 1 trains on the stream's first batches: those of its first pass, at most.
        batch = run.cfg.batch_size
        batches = min(frozen_steps, -(-rows // batch))
        logging.info("Computing the frozen features of the %d training examples phase 1 "
                     "sees (%d each).", min(batches * batch, rows), width)
        dataset = (self.task.train_dataset(run, self.split, self.extras).take(batches)
                   .map(lambda inputs, labels: (inputs, labels[INDEX_EXTRA])))
        table = np.full([rows, width], np.nan, np.float32)
        started = time.monotonic()
        for values, index in inference.collect_outputs(features, dataset, run.strategy):
            table[index] = values
        logging.info("Computed the frozen features in %.1f s.", time.monotonic() - started)
        missing = min(batches * batch, rows) - int(np.sum(~np.isnan(table[:, 0])))
        if missing:
            raise UserError(f"--cache_frozen_features: {missing} training examples could not "
                            "be read any more (files changed since the run started); restore "
                            "them and re-run.")
        self.table = tf.constant(table)

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        def cached(model, inputs, labels):
            rows = labels[INDEX_EXTRA]
            rest = {k: v for k, v in labels.items() if k != INDEX_EXTRA}
            rest = rest["labels"] if list(rest) == ["labels"] else rest
            if self.table is None or transfer.backbone_of(model).trainable:
                return step_loss(model, inputs, rest)
            return step_loss(self.head, tf.gather(self.table, rows), rest)

        return cached


def from_config(cfg):
    """FeatureCache with --cache_frozen_features (with a frozen phase 1), else None."""
    if not cfg.cache_frozen_features:
        return None
    if not cfg.freeze_backbone_steps and not cfg.freeze_backbone_fraction:
        raise UserError("--cache_frozen_features caches features of the frozen backbone; set "
                        "--freeze_backbone_steps=N (or --freeze_backbone_fraction) for a "
                        "frozen phase 1.")
    return FeatureCache()
