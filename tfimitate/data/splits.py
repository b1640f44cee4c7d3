"""Hold out a seeded evaluation set when the user gives none.

Example:
    train, evaluation = hold_out(train, fraction=0.1, seed=42, flag_value="train.csv")
"""

import random

from absl import logging

from tfimitate.errors import UserError


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
