"""Pieces several tasks share: label checks, plain-text inputs, heads, training batches.

Example:
    split = keep_known_labels(split, ("neg", "pos"), "--eval_data", drop_unlisted=False,
                              first_unknown=lambda i: (split.lines[i], split.labels[i])
                              if split.labels[i] not in known else None)
"""

from absl import logging

from tfimitate.data import pipelines, readers
from tfimitate.errors import UserError

# Real examples kept for the export's parity check and warmup requests.
SERVING_EXAMPLES = 32


def keep_known_labels(split, labels, flag, drop_unlisted, first_unknown, what="label",
                      advice="add it to --labels"):
    """Refuses (or with `drop_unlisted`, drops) examples with a label outside `labels`.

    Args:
        split: the task's Split (len(), .source, .subset(indices, source)).
        labels: the model's labels.
        flag: the flag that named the file, for the message.
        drop_unlisted: drop such examples (counted in the log) instead of refusing.
        first_unknown: example index -> (line, label) of its first unknown label, or None.
        what: "label" or "tag", for the message.
        advice: how to fix it besides editing the file.
    """
    unknown = [first_unknown(i) for i in range(len(split))]
    keep = [i for i, found in enumerate(unknown) if found is None]
    if len(keep) == len(split):
        return split
    if not drop_unlisted:
        line, label = next(found for found in unknown if found is not None)
        raise UserError(
            f"{split.source}:{line}: {what} '{label}' is not one of the model's {what}s "
            f"({', '.join(labels)}); fix the row in {flag}, {advice}, or pass --drop_unlisted_labels.")
    logging.warning("%s: dropped %d examples with a %s that is not in --labels.",
                    split.source, len(split) - len(keep), what)
    return split.subset(keep, split.source)


def read_text_lines(path, flag, what):
    """Non-empty lines of a .txt input as (line number, text) pairs.

    Example:
        read_text_lines("reviews.txt", "--input", "text")  # [(1, "a gripping film"), ...]
    """
    text = readers.read_text(readers.resolve_path(path, flag), flag)
    numbered = [(i, line) for i, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{flag}={path}: the file holds no text; give one {what} per line.")
    return numbered


def logits_head(features, cfg, num_outputs, name):
    """Dropout and a float32 dense layer of `num_outputs` logits on `features`."""
    import keras

    features = keras.layers.Dropout(cfg.dropout, name=f"{name}_dropout")(features)
    return keras.layers.Dense(num_outputs, dtype="float32", name="logits")(features)


def training_batches(run, features, pad_values, length_key=pipelines.LENGTH_KEY,
                     split_labels=("labels",)):
    """Endless, reshuffled-per-pass training batches of per-example `features`
    (static shapes when the strategy needs them, e.g. TPU); `split_labels` are the
    features that form the labels (one: the tensor itself; several: a dict)."""
    from tfimitate import runtime

    return pipelines.batches(
        features, run.cfg.batch_size, run.cfg.sequence_length, pad_values,
        shuffle_seed=run.cfg.seed, repeat=True, length_key=length_key,
        static_length=runtime.needs_static_shapes(run.strategy), split_labels=split_labels)
