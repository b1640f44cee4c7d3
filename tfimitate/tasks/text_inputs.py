"""The text tasks' shared inputs: a split of texts (and pairs, and side columns) as raw
examples, encoded by a keras-hub preprocessor, padded and batched.

Text classification and text regression both use it (their Split has `texts`, `pairs`
(or None) and `side`), and their task methods on those inputs (`TextInputs`).

Example:
    batches = text_inputs.prediction_batches(split, preprocessor, 32, 128, None)
"""

import dataclasses
import functools
import json
from typing import List, Optional

import numpy as np

from absl import logging

from tfimitate import backbones
from tfimitate.data import readers
from tfimitate.errors import UserError
from tfimitate.tasks import common, side_features


@dataclasses.dataclass(eq=False)
class TextSplit:
    """The texts (and pairs, or None) of one data file, in file order (compared and hashed
    by identity); a task's Split adds its per-example fields (lists; `side` a dict of them).

    Example:
        split.subset([0, 2], "train.tsv (2 examples)")   # the same Split class, 2 examples
    """

    source: str
    texts: List[str]
    pairs: Optional[List[str]]

    def __len__(self):
        return len(self.texts)

    def subset(self, indices, source):
        """The examples `indices` (every per-example field picked) as a Split of `source`."""
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return dataclasses.replace(self, source=source, **{
            field.name: ({name: pick(v) for name, v in value.items()}
                         if isinstance(value, dict) else pick(value))
            for field in dataclasses.fields(self) if field.name != "source"
            for value in [getattr(self, field.name)]})


def read_table(path, cfg, flag, label=None, column_flag="--text_column"):
    """(texts, pairs or None, labels or None, lines, side) of the rows of a table (or tfds:
    split) with a non-empty text (the others are dropped and counted); `label(cell, where)`
    reads the --label_column cell, None for a table without labels.

    Example:
        texts, pairs, targets, lines, side = read_table("t.tsv", cfg, "--train_data", float)
    """
    side = {name: [] for name in sum(side_features.columns(cfg), ())}
    columns = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    first = len(columns)
    columns += side
    if label:
        columns.append(cfg.label_column)
    texts, pairs, labels, lines, empty = [], [], [], [], 0
    for row in readers.read_rows(path, columns, flag, cfg.tfds_data_dir):
        values = ["" if v is None else str(v) for v in row.values]
        if not values[0].strip():
            empty += 1
            continue
        where = f"{path}:{row.line}"
        if label:
            labels.append(label(row.values[-1], where))
        texts.append(values[0])
        if cfg.text_pair_column:
            pairs.append(values[1])
        for name, value in side_features.read_row(row.values[first:first + len(side)], cfg,
                                                  where).items():
            side[name].append(value)
        lines.append(row.line)
    if empty:
        logging.warning("%s: skipped %d rows with an empty text.", path, empty)
    if not texts:
        raise UserError(f"{flag}={path}: no examples with a non-empty text; check the file "
                        f"and {column_flag}.")
    return (texts, pairs if cfg.text_pair_column else None, labels if label else None, lines,
            side)


def examples(split, extra):
    """The split's raw examples: `text` (and `pair`) strings, the side columns
    (side_features.example_columns) plus the `extra` per-example values."""
    import tensorflow as tf

    raw = {"text": tf.constant(split.texts)}
    if split.pairs is not None:
        raw["pair"] = tf.constant(split.pairs)
    raw.update(side_features.example_columns(split.side))
    raw.update({key: tf.constant(values) for key, values in extra.items()})
    return raw


def encoder(preprocessor, side_feature_stats=None):
    """A batch of examples -> the preprocessor's features, the encoded side features
    (`side_features`, with `side_feature_stats`) plus the other values."""
    stats = json.loads(side_feature_stats) if side_feature_stats else None

    def encode(batch):
        batch = dict(batch)
        text = batch.pop("text")
        # x= keeps a (texts, pairs) tuple one input; positionally keras-hub reads it as (x, y).
        features = preprocessor(x=(text, batch.pop("pair")) if "pair" in batch else text)
        side_features.add_encoded(batch, features, stats)
        features.update(batch)
        return features

    return encode


def pads(preprocessor):
    """The padding value of each padded feature: {"token_ids": the tokenizer's pad id}."""
    return {"token_ids": preprocessor.tokenizer.pad_token_id}


def training_batches(run, split, labels, extras):
    """common.training_batches of the split's examples with `labels` and per-example
    `extras`; the run's text transform may change texts and pairs every pass."""
    extras = dict(extras or {})
    texts = ("text",) if split.pairs is None else ("text", "pair")
    return common.training_batches(
        run, examples(split, {"labels": labels, **extras}),
        encoder(run.preprocessor, run.cfg.side_feature_stats),
        pads(run.preprocessor), texts, split_labels=("labels", *extras),
        untrimmed=(side_features.INPUT, *extras))


@functools.lru_cache(maxsize=8)
def prediction_batches(split, preprocessor, batch_size, sequence_length, side_feature_stats):
    """Tokenized, cached batches of (features, example index), built once per split."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    features = pipelines.encoded(
        tf.data.Dataset.from_tensor_slices(
            examples(split, {"index": np.arange(len(split), dtype=np.int64)})),
        encoder(preprocessor, side_feature_stats), untrimmed=(side_features.INPUT,))
    return pipelines.batches(features, batch_size, sequence_length, pads(preprocessor),
                             split_labels=("index",))


def pooled(backbone):
    """(inputs, pooled output) of a keras-hub backbone: its pooled output, or the first token."""
    inputs = backbone.input
    outputs = backbone(inputs)
    if isinstance(outputs, dict):
        pooled_output = outputs.get("pooled_output")
        if pooled_output is None:
            pooled_output = outputs["sequence_output"][:, 0, :]
    else:
        pooled_output = outputs[:, 0, :]
    return inputs, pooled_output


def record(split, i):
    """Example i as {"text": ..., "pair": ..., side column: value} (the pair for text pairs;
    None for a missing side value)."""
    result = dict({"text": split.texts[i]}, **({"pair": split.pairs[i]} if split.pairs else {}))
    return dict(result, **side_features.record_values(split.side, i))


def serving_inputs(split, indices):
    """{"text": [...]} (and "text_pair" for pairs, and each side column) of the examples."""
    indices = list(indices)
    inputs = {"text": [split.texts[i] for i in indices]}
    if split.pairs is not None:
        inputs["text_pair"] = [split.pairs[i] for i in indices]
    inputs.update({name: [values[i] for i in indices] for name, values in split.side.items()})
    return inputs


class TextInputs:
    """The task methods of a text task on these inputs (a mixin before the task's base).

    Example:
        class TextRegression(text_inputs.TextInputs, RegressionTask): ...
    """

    INPUTS = ("text", "word_pieces")

    def validate(self, cfg):
        """The task base's checks, and side columns named once."""
        super().validate(cfg)
        side_features.check_columns(cfg, {"--text_column": cfg.text_column,
                                          "--text_pair_column": cfg.text_pair_column,
                                          "--label_column": cfg.label_column})

    def example(self, split, i):
        """{"text": ..., "pair": ..., side column: value} (`record`)."""
        return record(split, i)

    def make_preprocessor(self, cfg):
        """The backbone's keras-hub preprocessor (tokenizer + packer) at --sequence_length."""
        return backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)

    def prediction_batches(self, run, split):
        """Tokenized batches of (features, example index), cached per split."""
        return prediction_batches(split, run.preprocessor, run.cfg.batch_size,
                                  run.cfg.sequence_length, run.cfg.side_feature_stats)

    def served_forward(self, run):
        """The model on length-sorted groups of the served batch (serving/length_groups.py):
        each group is padded only to its own longest text."""
        from tfimitate.serving import length_groups

        return length_groups.grouped(super().served_forward(run),
                                     lambda name: name != side_features.INPUT)

    def example_defaults(self, run):
        """A side feature left out of a tf.Example is missing."""
        return side_features.example_defaults(run.cfg)

    def perturbed(self, split, change):
        """A copy of `split` whose texts and pairs are split at spaces into words, changed
        together by `change` and joined again with spaces."""
        texts = split.texts + (split.pairs or [])
        changed = [" ".join(words) for words in change([text.split() for text in texts], False)]
        return dataclasses.replace(
            split, source=f"{split.source} (perturbed)", texts=changed[:len(split)],
            pairs=None if split.pairs is None else changed[len(split):])

    def serving_inputs(self, split, indices):
        """{"text": [...]} (and "text_pair" for pairs, and each side column)."""
        return serving_inputs(split, indices)
