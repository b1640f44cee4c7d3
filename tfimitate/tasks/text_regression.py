"""Text regression: one number per text (or text pair), from CSV/TSV/JSONL to TF Serving.

Data: `--text_column` (and `--text_pair_column`) and a numeric `--label_column`, and
optional side features (`--numeric_columns`, `--categorical_columns`: tasks/side_features.py).
Model: a keras-hub backbone, its pooled output (or first token) joined with the encoded side
features, dropout and one float32 output.
Targets, loss, metrics and the serving module are the regression story
(tasks/regression.py): `serving_default` takes raw strings (`text`, and `text_pair` for
pairs, and each side column) and returns `score`; `regress` takes them as tf.Example
features.

Example:
    python -m tfimitate.train --task=text_regression --train_data=stsb_train.tsv \
        --text_column=sentence1 --text_pair_column=sentence2 --label_column=score \
        --normalize_targets --model_dir=runs/stsb
"""

import dataclasses
import functools
import json
from typing import Dict, List, Optional

import numpy as np
from absl import logging

from tfimitate import backbones
from tfimitate.data import readers
from tfimitate.errors import UserError
from tfimitate.tasks import common, regression, side_features
from tfimitate.tasks.regression import RegressionTask, parse_target


@dataclasses.dataclass(eq=False)
class Split:
    """Examples of one data file, in file order (compared and hashed by identity); a target
    of None marks an example without a label; `side`: side column -> its values (floats,
    NaN when missing; strings, "" when missing)."""

    source: str
    texts: List[str]
    pairs: Optional[List[str]]
    targets: List[Optional[float]]
    lines: List[int]
    side: Dict[str, list] = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.texts)

    def subset(self, indices, source):
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return Split(source, pick(self.texts), pick(self.pairs), pick(self.targets),
                     pick(self.lines), {name: pick(v) for name, v in self.side.items()})


def read_split(path, cfg, flag, with_labels=True):
    """One table (or tfds: split) as a Split; rows with an empty text are dropped and counted."""
    side = {name: [] for name in sum(side_features.columns(cfg), ())}
    columns = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    columns += side
    if with_labels:
        columns.append(cfg.label_column)
    texts, pairs, targets, lines, empty = [], [], [], [], 0
    first = 1 + bool(cfg.text_pair_column)
    for row in readers.read_rows(path, columns, flag, cfg.tfds_data_dir):
        values = ["" if v is None else str(v) for v in row.values]
        if not values[0].strip():
            empty += 1
            continue
        texts.append(values[0])
        if cfg.text_pair_column:
            pairs.append(values[1])
        for name, value in side_features.read_row(row.values[first:first + len(side)], cfg,
                                                  f"{path}:{row.line}").items():
            side[name].append(value)
        targets.append(parse_target(row.values[-1], f"{path}:{row.line}",
                                    f"--label_column={cfg.label_column}")
                       if with_labels else None)
        lines.append(row.line)
    if empty:
        logging.warning("%s: skipped %d rows with an empty text.", path, empty)
    if not texts:
        raise UserError(f"{flag}={path}: no examples with a non-empty text; check the file "
                        "and --text_column.")
    return Split(path, texts, pairs if cfg.text_pair_column else None, targets, lines, side)


class TextRegression(RegressionTask):
    """Text regression (see the module)."""

    NAME = "text_regression"
    # The regression options (read by every regression task) are declared here; the side
    # features' by text_classification (an option has one owner).
    OPTIONS = regression.OPTIONS
    RESUME_FIELDS = ("text_column", "text_pair_column", "numeric_columns",
                     "categorical_columns") + RegressionTask.RESUME_FIELDS
    INPUTS = ("text", "word_pieces")

    def validate(self, cfg):
        """The regression checks, and side columns named once."""
        super().validate(cfg)
        side_features.check_columns(cfg, {"--text_column": cfg.text_column,
                                          "--text_pair_column": cfg.text_pair_column,
                                          "--label_column": cfg.label_column})

    def load_data(self, cfg):
        """The regression splits; with side columns, their preprocessing learned on the
        training split (unless given) as --side_feature_stats."""
        data = super().load_data(cfg)
        return dataclasses.replace(
            data, learned=dict(data.learned, **side_features.learned(cfg, data.train)))

    def read(self, path, cfg, flag, with_labels=True):
        """A labelled table, or inputs to predict: a .txt file (one text per line) or a table."""
        if not with_labels and readers.base_suffix(path) == ".txt":
            side_features.refuse_plain_text(cfg, path, flag)
            if cfg.text_pair_column:
                raise UserError(f"{flag}={path}: a text-pair task needs a table with the "
                                f"--text_pair_column={cfg.text_pair_column} column, not a .txt file.")
            numbered = common.read_text_lines(path, flag, "text")
            return Split(path, [text for _, text in numbered], None, [None] * len(numbered),
                         [line for line, _ in numbered])
        return read_split(path, cfg, flag, with_labels)

    def add_unlabeled(self, split, path, cfg, flag, column=None, exclude=()):
        """`split` plus the texts of `path` without a target (a .txt file, one text per line,
        or the `column`, default --text_column, of a table); texts already in `split` or an
        `exclude` split are dropped."""
        extra = self.read(path, cfg.replace(text_column=column or cfg.text_column), flag,
                          with_labels=False)
        key = lambda s, i: (s.texts[i], s.pairs[i] if s.pairs is not None else None)
        seen = {key(s, i) for s in (split, *exclude) for i in range(len(s))}
        keep = [i for i in range(len(extra)) if key(extra, i) not in seen]
        if len(keep) < len(extra):
            logging.warning("%s: dropped %d unlabelled texts already in the training, eval or "
                            "test data.", path, len(extra) - len(keep))
        if not keep:
            raise UserError(f"{flag}={path}: every text is already in the training, eval or test "
                            "data; give other unlabelled text.")
        if set(extra.side) != set(split.side) or (extra.pairs is None) != (split.pairs is None):
            raise UserError(f"{flag}={path}: give the same columns as the training data "
                            "(text pair and side columns).")
        extra = extra.subset(keep, path)
        join = lambda a, b: None if a is None else a + b
        return Split(f"{split.source} + {path} (unlabelled)", split.texts + extra.texts,
                     join(split.pairs, extra.pairs), split.targets + extra.targets,
                     split.lines + extra.lines,
                     {name: values + extra.side[name] for name, values in split.side.items()})

    def example(self, split, i):
        """{"text": ..., "pair": ..., side column: value} (the pair for text pairs; None for
        a missing side value)."""
        record = dict({"text": split.texts[i]}, **({"pair": split.pairs[i]} if split.pairs else {}))
        for name, values in split.side.items():
            record[name] = None if values[i] in ("",) or values[i] != values[i] else values[i]
        return record

    def make_preprocessor(self, cfg):
        """The backbone's keras-hub preprocessor (tokenizer + packer) at --sequence_length."""
        return backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + dropout + one float32 output on the pooled output (or the first token),
        joined with the encoded side features (input `side_features`) if any."""
        import keras

        inputs = backbone.input
        outputs = backbone(inputs)
        if isinstance(outputs, dict):
            pooled = outputs.get("pooled_output")
            if pooled is None:
                pooled = outputs["sequence_output"][:, 0, :]
        else:
            pooled = outputs[:, 0, :]
        inputs, pooled = side_features.join(inputs, pooled, side_features.stats_of(cfg))
        score = common.logits_head(pooled, cfg, num_outputs, "regressor")
        return keras.Model(inputs, score, name="text_regressor")

    def train_dataset(self, run, split, extras=None):
        """Endless, reshuffled-per-pass batches of (features, standardised targets), or of
        (features, {"labels": targets, **extras}); the run's text transform (augmentation)
        may change texts and pairs every pass."""
        extras = dict(extras or {})
        examples = _examples(split, {"labels": self.training_targets(split, run.cfg), **extras})
        texts = ("text",) if split.pairs is None else ("text", "pair")
        return common.training_batches(
            run, examples, _encoder(run.preprocessor, run.cfg.side_feature_stats),
            _pads(run.preprocessor), texts, split_labels=("labels", *extras),
            untrimmed=(side_features.INPUT, *extras))

    def prediction_batches(self, run, split):
        """Tokenized batches of (features, example index), cached per split."""
        return _prediction_batches(split, run.preprocessor, run.cfg.batch_size,
                                   run.cfg.sequence_length, run.cfg.side_feature_stats)

    def perturbed(self, split, change):
        """A copy of `split` whose texts and pairs are split at spaces into words, changed
        together by `change` and joined again with spaces."""
        texts = split.texts + (split.pairs or [])
        changed = [" ".join(words) for words in change([text.split() for text in texts], False)]
        pairs = None if split.pairs is None else changed[len(split):]
        return Split(f"{split.source} (perturbed)", changed[:len(split)], pairs, split.targets,
                     split.lines, split.side)

    def serving_signature(self, run):
        """Raw strings `text` (and `text_pair`) tokenized in the graph, as text
        classification serves them (tasks/text_classification.py), and the raw side columns
        (float32 or strings) encoded in the graph by side_features.encode."""
        from tfimitate.tasks import text_classification

        return side_features.serving(
            *text_classification.TextClassification().serving_signature(run),
            side_features.stats_of(run.cfg))

    def example_defaults(self, run):
        """A side feature left out of a tf.Example is missing."""
        stats = side_features.stats_of(run.cfg)
        return side_features.example_defaults(stats) if stats else {}

    def serving_inputs(self, split, indices):
        """{"text": [...]} (and "text_pair" for pairs, and each side column)."""
        indices = list(indices)
        inputs = {"text": [split.texts[i] for i in indices]}
        if split.pairs is not None:
            inputs["text_pair"] = [split.pairs[i] for i in indices]
        inputs.update({name: [values[i] for i in indices] for name, values in split.side.items()})
        return inputs


def _examples(split, extra):
    """The split's raw examples: `text` (and `pair`) strings, the side columns
    (side_features.example_columns) plus per-example values."""
    import tensorflow as tf

    examples = {"text": tf.constant(split.texts)}
    if split.pairs is not None:
        examples["pair"] = tf.constant(split.pairs)
    examples.update(side_features.example_columns(split.side))
    examples.update({key: tf.constant(values) for key, values in extra.items()})
    return examples


def _encoder(preprocessor, side_feature_stats):
    """A batch of examples -> the preprocessor's features, the encoded side features
    (`side_features`) and the other values."""
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


def _pads(preprocessor):
    return {"token_ids": preprocessor.tokenizer.pad_token_id}


@functools.lru_cache(maxsize=8)
def _prediction_batches(split, preprocessor, batch_size, sequence_length, side_feature_stats):
    """Tokenized, cached batches of (features, example index), built once per split."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    features = pipelines.encoded(
        tf.data.Dataset.from_tensor_slices(
            _examples(split, {"index": np.arange(len(split), dtype=np.int64)})),
        _encoder(preprocessor, side_feature_stats), untrimmed=(side_features.INPUT,))
    return pipelines.batches(features, batch_size, sequence_length, _pads(preprocessor),
                             split_labels=("index",))
