"""The eval and test splits of an experiment: given files, or a seeded hold-out.

Example:
    train, evaluation, test = eval_and_test(train, cfg, read_checked)
"""

import dataclasses
import random
from typing import Any, Optional, Tuple

from absl import logging

from tfimitate.errors import UserError


@dataclasses.dataclass
class Data:
    """A task's splits (its own Split type) and the model's label set."""

    train: Any
    eval: Any
    test: Optional[Any]
    labels: Tuple[str, ...]


def hold_out(split, fraction, seed, train_data):
    """Splits `split` (anything with len() and subset(indices, source)) into
    (train, held-out eval), both in file order; the same seed gives the same split."""
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    held = max(1, int(round(len(order) * fraction)))
    if held >= len(order):
        raise UserError(f"--train_data={train_data}: too few examples ({len(order)}) to hold out "
                        "an eval set; give --eval_data.")
    evaluation = split.subset(sorted(order[:held]), f"{split.source} (held-out {fraction:.0%})")
    logging.info("No --eval_data: held out %d of %d training examples (seed %d) for evaluation.",
                 held, len(order), seed)
    return split.subset(sorted(order[held:]), split.source), evaluation


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
