"""The eval and test splits of an experiment: given files, or a seeded hold-out.

Example:
    train, evaluation, test = eval_and_test(train, cfg, read_checked)
"""

import collections
import dataclasses
import random
from typing import Any, Mapping, Optional, Tuple

from absl import logging

from tfimitate.errors import UserError


@dataclasses.dataclass
class Data:
    """A task's splits (its own Split type) and the model's label set; `learned`: Experiment
    fields the task learned from the training split (e.g. text_regression's target_mean and
    target_std), which the run saves with its experiment."""

    train: Any
    eval: Any
    test: Optional[Any]
    labels: Tuple[str, ...]
    learned: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def hold_out(split, fraction, seed, train_data):
    """Splits `split` (anything with len() and subset(indices, source)) into
    (train, held-out eval), both in file order; the same seed gives the same split.
    A split with `hold_out_keys()` (tf.string keys, see `example_key`) is split by the
    keyed hash `held_out`, as a stream of the same file is; others (and a hash that holds
    out none or all) by a seeded shuffle. At least one example is held out; a fraction of 0
    holds out nothing, so it is refused."""
    if not fraction > 0:
        raise UserError(f"--holdout_fraction={fraction:g} holds no evaluation data out of "
                        "--train_data; give --eval_data=FILE, or a fraction above 0.")
    order = list(range(len(split)))
    chosen = []
    if hasattr(split, "hold_out_keys"):  # the keyed hash a stream of the same file uses
        mask = held_out(split.hold_out_keys(), fraction, seed).numpy()
        chosen = [i for i in order if mask[i]]
    if not chosen or len(chosen) == len(order):
        random.Random(seed).shuffle(order)
        chosen = order[:max(1, int(round(len(order) * fraction)))]
    held = len(chosen)
    if held >= len(order):
        raise UserError(f"--train_data={train_data}: too few examples ({len(order)}) to hold out "
                        "an eval set; give --eval_data.")
    chosen = set(chosen)
    evaluation = split.subset(sorted(chosen), f"{split.source} (held out: {held} of {len(order)})")
    logging.info("No --eval_data: held out %d of %d training examples (seed %d) for evaluation.",
                 held, len(order), seed)
    return split.subset([i for i in range(len(split)) if i not in chosen], split.source), evaluation


def warn_rare_labels(labels, source):
    """Warns, naming them, about classes with a single training example (nothing to learn
    from, nothing to hold out); returns those labels.

    Example:
        warn_rare_labels(["pos", "neg", "pos", "odd"], "train.csv")  # logs a warning, ['odd']
    """
    counts = collections.Counter(labels)
    rare = sorted(label for label, count in counts.items() if count == 1)
    if rare:
        shown = ", ".join(rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
        logging.warning("%s: %d classes have a single example (%s); the model can hardly learn "
                        "them and a hold-out may leave them out of training. Add examples or "
                        "check --label_column.", source, len(rare), shown)
    return rare


def eval_and_test(train, cfg, read_checked):
    """Returns (train, eval, test): eval from --eval_data or held out of `train`, test
    from --test_data or None. `read_checked(path, flag)` reads one file and checks its
    labels against the model's."""
    if cfg.eval_data:
        evaluation = read_checked(cfg.eval_data, "--eval_data")
    else:
        train, evaluation = hold_out(train, cfg.holdout_fraction, cfg.seed, cfg.train_data)
    test = read_checked(cfg.test_data, "--test_data") if cfg.test_data else None
    return train, evaluation, test


HOLDOUT_BUCKETS = 1_000_000


def held_out(keys, fraction, seed):
    """Which examples a seeded hold-out of `fraction` takes: a keyed hash (SipHash, keyed by
    `seed`) of each example's key, so a streamed shard and a list in memory (or a Beam
    worker) pick the same examples, without reading the data twice.

    Args:
        keys: tf.string tensor (any shape) of example keys (`example_key`).
        fraction: the share held out (about; exact only in expectation).
        seed: the run's --seed.

    Example:
        held_out(tf.constant(["a good film", "dull"]), 0.1, 42)  # bool tensor, e.g. [False, False]
    """
    import tensorflow as tf

    bucket = tf.strings.to_hash_bucket_strong(keys, HOLDOUT_BUCKETS, key=[seed, 0])
    return bucket < int(round(fraction * HOLDOUT_BUCKETS))


def example_key(text, pair=None):
    """The hashed identity of a text (or text pair) example: tf.string, text TAB pair.

    Example:
        example_key(tf.constant(["a", "b"]), tf.constant(["x", "y"]))  # ["a\\tx", "b\\ty"]
    """
    import tensorflow as tf

    return text if pair is None else tf.strings.join([text, pair], separator="\t")
