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
from typing import Dict, List, Optional

from absl import logging

from tfimitate import options
from tfimitate.data import readers
from tfimitate.errors import UserError
from tfimitate.tasks import common, regression, side_features, text_inputs
from tfimitate.tasks.regression import RegressionTask, parse_target


@dataclasses.dataclass(eq=False)
class Split(text_inputs.TextSplit):
    """Examples of one data file (text_inputs.TextSplit); a target of None marks an example
    without a label; `side`: side column -> its values (floats, NaN when missing; strings,
    "" when missing)."""

    targets: List[Optional[float]]
    lines: List[int]
    side: Dict[str, list] = dataclasses.field(default_factory=dict)


def read_split(path, cfg, flag, with_labels=True):
    """One table (or tfds: split) as a Split (text_inputs.read_table)."""
    target = lambda cell, where: parse_target(cell, where, f"--label_column={cfg.label_column}")
    texts, pairs, targets, lines, side = text_inputs.read_table(
        path, cfg, flag, target if with_labels else None)
    return Split(path, texts, pairs, targets or [None] * len(texts), lines, side)


class TextRegression(text_inputs.TextInputs, RegressionTask):
    """Text regression (see the module)."""

    NAME = "text_regression"
    # The regression options (read by every regression task) are declared here; the side
    # features' by text_classification (an option has one owner).
    OPTIONS = regression.OPTIONS
    RESUME_FIELDS = ("text_column", "text_pair_column", "numeric_columns",
                     "categorical_columns") + RegressionTask.RESUME_FIELDS
    # Text classification's rate for the packaged MiniLM-L6 (the same backbone fine-tuned
    # the same way), and its head-first recipe with side columns; checked on STS-B and
    # films by benchmarks/defaults.py.
    RECIPE = (
        options.Recipe("learning_rate", 1.5e-4,
                       "the packaged MiniLM-L6 is small and fine-tunes best at 3x BERT's rate",
                       unless=("backbone",)),
    ) + side_features.HEAD_FIRST_RECIPE + RegressionTask.RECIPE

    def load_data(self, cfg):
        """The regression splits; with side columns, their preprocessing learned on the
        training split (unless given) as --side_feature_stats."""
        return side_features.with_learned(cfg, super().load_data(cfg))

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

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + dropout + one float32 output on the pooled output (or the first token),
        joined with the encoded side features (input `side_features`) if any."""
        import keras

        inputs, pooled = text_inputs.pooled(backbone)
        inputs, pooled = side_features.join(inputs, pooled, side_features.stats_of(cfg))
        score = common.logits_head(pooled, cfg, num_outputs, "regressor")
        return keras.Model(inputs, score, name="text_regressor")

    def train_dataset(self, run, split, extras=None):
        """Endless, reshuffled-per-pass batches of (features, standardised targets), or of
        (features, {"labels": targets, **extras}); the run's text transform (augmentation)
        may change texts and pairs every pass."""
        return text_inputs.training_batches(run, split,
                                            self.training_targets(split, run.cfg), extras)

    def serving_signature(self, run):
        """Raw strings `text` (and `text_pair`) tokenized in the graph, as text
        classification serves them (tasks/text_classification.py), and the raw side columns
        (float32 or strings) encoded in the graph by side_features.encode."""
        from tfimitate.tasks import text_classification

        return side_features.serving(
            *text_classification.TextClassification().serving_signature(run),
            side_features.stats_of(run.cfg))
