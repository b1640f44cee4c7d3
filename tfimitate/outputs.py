"""The one check of a model's outputs before anything uses them.

Evaluation, prediction, export and distillation teachers all read class scores. An
overflowing model (finite weights, NaN logits) or a broken teacher would otherwise pass
without a word: NaN argmaxes to class 0, `"probability": NaN` is not even JSON, and a
student would learn from garbage. Every such reader calls `check` on what it got.

Example:
    check(logits, "the model of --model_dir=runs/sst2", "train it again with a lower "
          "--learning_rate")
    check(probs, "--teacher=grpc://host:8500/sst2", "fix the teacher", probabilities=True,
          names=texts)  # also refuses negative rows and rows not summing to 1
"""

import numpy as np

from tfimitate.errors import UserError

# How far a row of probabilities may sum from 1 (or a value fall below 0): float16 rounding.
TOLERANCE = 1e-2

# What to do about a model whose outputs overflow (finite weights: restoring checks those).
OVERFLOW_ADVICE = ("its weights overflow (e.g. after too high a --learning_rate), so nothing was "
                   "written: train again into a new --model_dir with a lower --learning_rate")

# What to do about an exported model whose outputs are not numbers.
SAVED_MODEL_ADVICE = ("its weights overflow, so nothing was written: evaluate the run's checkpoint "
                      "(--model_dir) or export a model trained with a lower --learning_rate")


class BadOutputs(UserError):
    """Outputs that are not numbers, or not probabilities where probabilities were due."""


def check(values, what, advice, probabilities=False, names=None):
    """Raises BadOutputs naming `what`, the first bad example and `advice` unless every
    value of `values` ([examples, ..., classes]) is finite and, with `probabilities`,
    each last-axis row is >= 0 and sums to 1 (or is all 0: padding).

    `names` (one per example: its text, or its number in the data) name the bad example;
    by default its number in `values`.
    """
    values = np.asarray(values)
    if not values.size:
        return
    rows = values.reshape(len(values), -1)
    bad = ~np.isfinite(rows).all(axis=1)
    problem = "NaN or infinite values"
    if probabilities and not bad.any():
        sums = values.sum(axis=-1).reshape(len(values), -1)
        bad = (rows < -TOLERANCE).any(axis=1) | (
            (np.abs(sums - 1) > TOLERANCE) & (sums != 0)).any(axis=1)
        problem = "probabilities that are negative or do not sum to 1"
    if bad.any():
        first = int(np.argmax(bad))
        name = first + 1 if names is None else names[first]
        example = f"'{_short(name)}'" if isinstance(name, str) else f"number {name}"
        raise BadOutputs(f"{what} gives {problem} for {int(bad.sum())} example(s), the first "
                         f"being {example}; {advice}.")


def _short(name, limit=60):
    text = " ".join(str(name).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
