"""Checkpoints of a run: what they hold, where they live, and restoring the newest.

A training checkpoint holds the model's weights (all, or those a technique's `keep`
predicate picks, e.g. LoRA adapters), the optimizer's slots, the dropout seed states and
the loop's step; <model_dir>/checkpoints/ holds the newest few, checkpoints/best/ the
best one under early stopping. Only complete checkpoints are named in the state file, and
a damaged one is skipped for the one before it.

Example:
    step = restore_latest(model, "runs/sst2")     # None if the run has no checkpoint yet
"""

import os

import tensorflow as tf
from absl import logging

from tfimitate.errors import UserError

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "checkpoints/best"
# --keep_best_phase: the best phase end so far (training/loop.py BestPhaseEnd).
PHASE_END_SUBDIR = "checkpoints/phase_end"


def model_state(model, keep=None):
    """What a checkpoint holds of `model`: all of it, or (with a `keep(variable)`
    predicate, e.g. LoRA adapters only) those weights by path."""
    if keep is None:
        return {"model": model}
    weights = {v.path: v for v in model.weights if keep(v)}
    if len(weights) != len([v for v in model.weights if keep(v)]):
        raise RuntimeError("two weights of the model share a path; please report this.")
    return {"weights": weights}


def make_checkpoint(model, optimizer, keep=None):
    """The tf.train.Checkpoint holding what a resume needs.

    Besides weights (all, or those `keep` picks: see model_state) and optimizer slots it
    holds the dropout seed states (Keras does not track them), so a resumed run draws
    the masks an uninterrupted one would, and `batches_consumed`, the loop's step: a
    mixed_float16 step skipped for overflowing uses its batch but does not advance
    `optimizer.iterations`.
    """
    seeds = [v for v in model.variables if "seed_generator_state" in v.path]
    return tf.train.Checkpoint(optimizer=optimizer, dropout_seeds=seeds,
                               batches_consumed=tf.Variable(0, dtype=tf.int64, trainable=False),
                               **model_state(model, keep))


def restore_newest(checkpoint, directory):
    """Restores the newest complete, readable checkpoint in `directory` into `checkpoint`.

    A checkpoint whose files are damaged (e.g. truncated by a full disk) is skipped with
    a warning, falling back to the previous one. Returns the restored path, or None.
    """
    state = tf.train.get_checkpoint_state(directory)
    paths = list(state.all_model_checkpoint_paths) if state else []
    for newer, path in zip([None] + paths[::-1], paths[::-1]):  # already joined to `directory`
        try:
            status = checkpoint.restore(path)
        except Exception as error:  # a torn file fails in many ways (OpError, IndexError ...)
            logging.warning("Checkpoint %s cannot be read (%s); falling back to the previous one.",
                            path, str(error).strip().splitlines()[0][:200])
            continue
        if newer is not None:
            logging.warning("Skipped damaged newer checkpoints; restored %s.", path)
        return path, status
    if paths:
        raise UserError(f"{directory}: none of its checkpoints can be read (see the warnings "
                        "above); train into a new --model_dir.")
    return None, None


def restore_latest(model, model_dir, optimizer=None, keep=None):
    """Restores the newest complete checkpoint under `model_dir` (of the weights `keep`
    picks, see model_state); returns its step or None."""
    for subdir in (BEST_SUBDIR, CHECKPOINT_SUBDIR):
        checkpoint = tf.train.Checkpoint(**model_state(model, keep)) if optimizer is None \
            else make_checkpoint(model, optimizer, keep)
        path, status = restore_newest(checkpoint, os.path.join(model_dir, subdir))
        if path:
            status.expect_partial()
            return int(path.rsplit("-", 1)[1])
    return None
