"""Replay (a technique): mix examples of old data into every training batch.

`--replay_data=FILE --replay_fraction=f` reads FILE like --train_data (same format,
columns and labels; a label the model does not have is an error naming file:line) and
adds k = round(f * B / (1 - f)) of its examples to every batch of B new examples, so
that a share f of each batch is old data (B = 32, f = 0.2: 8 old examples, batches of
40). Old examples come from their own endless, seeded, reshuffled stream, so a resumed
run sees the same batches. Batches are joined after padding the shorter one's sequences
with zeros (ids, masks and ignored tags are 0-padded by the tasks as well).

Example:
    python -m tfimitate.train --flagfile=configs/quickstart.cfg --init_from=runs/sst2 \\
        --replay_data=sst2_as_rt.csv --replay_fraction=0.2
"""

import dataclasses

from absl import logging

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.data(
        "replay_data",
        "Old training data (same format, columns and labels as --train_data) mixed into every "
        "batch, against forgetting it."),
    options.number(
        "replay_fraction", 0.2,
        "With --replay_data: share of every batch that is old data (added to --batch_size new "
        "examples).", lower=0.0, upper=0.9),
)

RESUME_FIELDS = ("replay_data", "replay_fraction")


def join_batches(new, old):
    """One batch of `new` followed by `old` (nested tensors), sequences zero-padded alike."""
    import tensorflow as tf

    def join(a, b):
        if a.shape.rank >= 2 and not (a.shape[1] is not None and a.shape[1] == b.shape[1]):
            length = tf.maximum(tf.shape(a)[1], tf.shape(b)[1])
            pad = lambda t: tf.pad(t, [[0, 0], [0, length - tf.shape(t)[1]]]
                                   + [[0, 0]] * (t.shape.rank - 2))
            a, b = pad(a), pad(b)
        return tf.concat([a, b], axis=0)

    return tf.nest.map_structure(join, new, old)


class Replay(Technique):
    name, flag, order = "replay", "--replay_data", 70

    def __init__(self, path, fraction):
        self.path = path
        self.fraction = fraction
        self.old = None

    def initialize(self, run):
        from tfimitate.tasks import get_task

        task = get_task(run.cfg.task)
        split = task.read_file(self.path, run.cfg, "--replay_data")
        size = max(1, round(self.fraction * run.cfg.batch_size / (1.0 - self.fraction)))
        replay_run = dataclasses.replace(run, cfg=run.cfg.replace(batch_size=size))
        self.old = task.train_dataset(replay_run, split)
        logging.info("Replay: %d examples of %s (%d) join every batch of %d new ones.", size,
                     self.path, len(split), run.cfg.batch_size)

    def adapt_dataset(self, dataset, cfg):
        import tensorflow as tf

        return tf.data.Dataset.zip((dataset, self.old)).map(
            lambda new, old: join_batches(new, old), num_parallel_calls=tf.data.AUTOTUNE)


def from_config(cfg):
    """Replay when --replay_data is given, else None."""
    if not cfg.replay_data:
        return None
    if not 0.0 < cfg.replay_fraction < 1.0:
        raise UserError(f"--replay_fraction={cfg.replay_fraction}: give the old data's share of "
                        "every batch, between 0 and 1 (e.g. 0.2).")
    return Replay(cfg.replay_data, cfg.replay_fraction)
