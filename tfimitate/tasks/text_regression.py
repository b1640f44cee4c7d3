"""Text regression: one number per text (or text pair), from CSV/TSV/JSONL to TF Serving.

Data: `--text_column` (and `--text_pair_column`) and a numeric `--label_column` (a row
whose label is not a number is refused with its file:line and value). Model: a keras-hub
backbone, its pooled output (or first token), dropout and one float32 output. Targets may
be standardised for the loss (`--normalize_targets`: mean and standard deviation learned on
the training split, saved with the run as --target_mean/--target_std, undone in every
score the run reports, predicts or serves). Loss: `--regression_loss=mse|huber` (Huber's
delta is 1, in standardised units with --normalize_targets). Metrics: RMSE, MAE, Pearson,
Spearman, R²; the score (early stopping, best checkpoint) is -RMSE (higher is better);
eval/ gets a predicted-vs-true scatter plot and a residual histogram. Serving:
`serving_default` takes raw strings (`text`, and `text_pair` for pairs) and returns `score`
(float32 [None]); `regress` takes serialized tf.Examples with the same features and returns
`outputs` (TF Serving's Regress API).

Example:
    python -m tfimitate.train --task=text_regression --train_data=stsb_train.tsv \
        --text_column=sentence1 --text_pair_column=sentence2 --label_column=score \
        --normalize_targets --model_dir=runs/stsb
"""

import dataclasses
import functools
import math
import os
from typing import List, Optional

import numpy as np
from absl import logging

from tfimitate import backbones, options
from tfimitate.data import readers, splits
from tfimitate.errors import UserError
from tfimitate.tasks import base, common

# The one output of a regression model: its name in the label set, labels.txt and serving.
SCORE = "score"
HUBER_DELTA = 1.0
PREDICT_BATCH = 64
RECORD_DIGITS = 4  # evaluation records round scores, so checkpoint and export records agree


@dataclasses.dataclass(eq=False)
class Split:
    """Examples of one data file, in file order (compared and hashed by identity); a target
    of None marks an example without a label."""

    source: str
    texts: List[str]
    pairs: Optional[List[str]]
    targets: List[Optional[float]]
    lines: List[int]

    def __len__(self):
        return len(self.texts)

    def subset(self, indices, source):
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return Split(source, pick(self.texts), pick(self.pairs), pick(self.targets),
                     pick(self.lines))


def parse_target(value, where, flag_name):
    """`value` (a table cell) as a finite float; one UserError naming `where` otherwise.

    Example:
        parse_target("3.8", "train.tsv:2", "--label_column=score")  # 3.8
    """
    text = "" if value is None else str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"{where}: {flag_name} holds {text!r}, not a finite number; fix the "
                        "row (a regression label is a number) or remove it.")
    return number


def read_split(path, cfg, flag, with_labels=True):
    """One table (or tfds: split) as a Split; rows with an empty text are dropped and counted."""
    columns = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    if with_labels:
        columns.append(cfg.label_column)
    texts, pairs, targets, lines, empty = [], [], [], [], 0
    for row in readers.read_rows(path, columns, flag, cfg.tfds_data_dir):
        values = ["" if v is None else str(v) for v in row.values]
        if not values[0].strip():
            empty += 1
            continue
        texts.append(values[0])
        if cfg.text_pair_column:
            pairs.append(values[1])
        targets.append(parse_target(row.values[-1], f"{path}:{row.line}",
                                    f"--label_column={cfg.label_column}")
                       if with_labels else None)
        lines.append(row.line)
    if empty:
        logging.warning("%s: skipped %d rows with an empty text.", path, empty)
    if not texts:
        raise UserError(f"{flag}={path}: no examples with a non-empty text; check the file "
                        "and --text_column.")
    return Split(path, texts, pairs if cfg.text_pair_column else None, targets, lines)


def target_scale(cfg):
    """(mean, std) that the model's output is scaled by: the learned ones with
    --normalize_targets, else (0, 1)."""
    if not cfg.normalize_targets:
        return 0.0, 1.0
    return float(cfg.target_mean), float(cfg.target_std)


def regression_evaluation(true, predicted, title):
    """RMSE, MAE, Pearson, Spearman and R² of `predicted` against `true` (score: -RMSE),
    with a predicted-vs-true scatter plot and a residual histogram.

    Example:
        regression_evaluation(np.array([1.0, 2.0]), np.array([1.5, 2.0]), "dev").metrics["mae"]  # 0.25
    """
    from scipy import stats
    from sklearn import metrics as skm

    true, predicted = np.asarray(true, np.float64), np.asarray(predicted, np.float64)
    varied = len(true) > 1 and np.ptp(true) > 0 and np.ptp(predicted) > 0
    correlation = lambda fn: float(fn(true, predicted)[0]) if varied else None
    rmse = float(np.sqrt(np.mean((predicted - true) ** 2)))
    metrics = {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(predicted - true))),
        "pearson": correlation(stats.pearsonr),
        "spearman": correlation(stats.spearmanr),
        "r2": float(skm.r2_score(true, predicted)) if len(true) > 1 and np.ptp(true) > 0 else None,
        "examples": len(true),
    }
    show = lambda v: "n/a (constant)" if v is None else f"{v:.4f}"
    report = "\n".join(f"{name:>9} {show(metrics[key])}" for name, key in (
        ("RMSE", "rmse"), ("MAE", "mae"), ("Pearson", "pearson"), ("Spearman", "spearman"),
        ("R²", "r2"))) + f"\n{'examples':>9} {len(true)}"
    figures = {"scatter": lambda path: _plot_scatter(true, predicted, path, title),
               "residuals": lambda path: _plot_residuals(true, predicted, path, title)}
    return base.Evaluation(-rmse, metrics, report, figures)


def _plot_scatter(true, predicted, path, title):
    from tfimitate import reports

    figure, axes = reports.pyplot().subplots(figsize=(5, 5))
    axes.scatter(true, predicted, s=8, alpha=0.5)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=1)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(title)
    reports.save_png(figure, path)


def _plot_residuals(true, predicted, path, title):
    from tfimitate import reports

    figure, axes = reports.pyplot().subplots(figsize=(5, 4))
    axes.hist(predicted - true, bins=min(50, max(5, len(true) // 4)))
    axes.set_xlabel("predicted - true")
    axes.set_ylabel("examples")
    axes.set_title(title)
    reports.save_png(figure, path)


class TextRegression(base.Task):
    """Text regression (see the module)."""

    NAME = "text_regression"
    OPTIONS = (
        options.choice(
            "regression_loss", "mse", ("mse", "huber"),
            "Regression tasks: the loss of the (optionally standardised) targets: mse, or "
            "huber (delta 1; less swayed by outliers)."),
        options.boolean(
            "normalize_targets", False,
            "Regression tasks: standardise the targets (mean 0, std 1) for the loss; the mean "
            "and std are learned on the training split, saved with the run as --target_mean "
            "and --target_std, and undone in evaluation, predictions and the export."),
        options.number(
            "target_mean", None,
            "With --normalize_targets: the targets' mean (default: learned on the training "
            "split and saved with the run)."),
        options.number(
            "target_std", None,
            "With --normalize_targets: the targets' standard deviation (default: learned on "
            "the training split and saved with the run)."),
    )
    RESUME_FIELDS = ("text_column", "text_pair_column", "label_column", "regression_loss",
                     "normalize_targets")
    SIGNATURES = ("serving_default", "regress")
    INPUTS = ("text", "word_pieces")

    def validate(self, cfg):
        """Refuses --labels (a regression has none) and a target std that is not positive."""
        if cfg.labels:
            raise UserError(f"--labels={','.join(cfg.labels)}: --task={self.NAME} predicts a "
                            "number, not labels; remove --labels.")
        if cfg.target_std is not None and not cfg.target_std > 0:
            raise UserError(f"--target_std={cfg.target_std:g}: give a positive number, or leave "
                            "it unset to learn it from the training data.")

    # ---- Data ------------------------------------------------------------------------

    def load_data(self, cfg):
        """Train, eval (given or held out) and test splits; with --normalize_targets the
        targets' mean and std learned on the training split (unless given)."""
        train = read_split(cfg.train_data, cfg, "--train_data")
        train, evaluation, test = splits.eval_and_test(
            train, cfg, lambda path, flag: self.read_file(path, cfg, flag))
        learned = {}
        if cfg.normalize_targets:
            targets = np.array(train.targets, np.float64)
            std = float(targets.std())
            if cfg.target_std is None and not std > 0:
                raise UserError(f"--train_data={cfg.train_data}: every target is {targets[0]:g}; "
                                "there is nothing to learn (or to standardise); check "
                                "--label_column.")
            learned = {"target_mean": float(targets.mean()) if cfg.target_mean is None
                       else cfg.target_mean,
                       "target_std": std if cfg.target_std is None else cfg.target_std}
            logging.info("--normalize_targets: mean %.4g, std %.4g (of %d training targets).",
                         learned["target_mean"], learned["target_std"], len(targets))
        return splits.Data(train, evaluation, test, (SCORE,), learned)

    def read_file(self, path, cfg, flag, with_labels=True):
        """A labelled table, or inputs to predict: a .txt file (one text per line) or a table."""
        if not with_labels and readers.base_suffix(path) == ".txt":
            if cfg.text_pair_column:
                raise UserError(f"{flag}={path}: a text-pair task needs a table with the "
                                f"--text_pair_column={cfg.text_pair_column} column, not a .txt file.")
            numbered = common.read_text_lines(path, flag, "text")
            return Split(path, [text for _, text in numbered], None, [None] * len(numbered),
                         [line for line, _ in numbered])
        return read_split(path, cfg, flag, with_labels)

    def example(self, split, i):
        """{"text": ..., "pair": ...} (the pair for text pairs)."""
        return dict({"text": split.texts[i]}, **({"pair": split.pairs[i]} if split.pairs else {}))

    def normalized_targets(self, split, cfg):
        """The split's targets as the model learns them (standardised with
        --normalize_targets), float32; NaN for an example without a target."""
        mean, std = target_scale(cfg)
        raw = np.array([math.nan if t is None else t for t in split.targets], np.float64)
        return ((raw - mean) / std).astype(np.float32)

    # ---- Model and training ----------------------------------------------------------

    def make_preprocessor(self, cfg):
        """The backbone's keras-hub preprocessor (tokenizer + packer) at --sequence_length."""
        return backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)

    def num_outputs(self, labels):
        """One output: the (standardised) score."""
        del labels
        return 1

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + dropout + one float32 output on the pooled output (or the first token)."""
        import keras

        outputs = backbone(backbone.input)
        if isinstance(outputs, dict):
            pooled = outputs.get("pooled_output")
            if pooled is None:
                pooled = outputs["sequence_output"][:, 0, :]
        else:
            pooled = outputs[:, 0, :]
        score = common.logits_head(pooled, cfg, num_outputs, "regressor")
        return keras.Model(backbone.input, score, name="text_regressor")

    def example_loss(self, labels, outputs):
        """Per-example squared error (or Huber loss, --regression_loss) of the one output
        against the standardised targets; 0 for a target of NaN (no label)."""
        import tensorflow as tf

        known = tf.math.is_finite(labels)
        error = outputs[:, 0] - tf.where(known, labels, 0.0)
        if self._loss == "huber":
            size = tf.abs(error)
            loss = tf.where(size <= HUBER_DELTA, 0.5 * tf.square(error),
                            HUBER_DELTA * (size - 0.5 * HUBER_DELTA))
        else:
            loss = tf.square(error)
        return tf.where(known, loss, 0.0)

    _loss = "mse"  # set from the run's config by train_dataset (a task holds no other state)

    def train_dataset(self, run, split, extras=None):
        """Endless, reshuffled-per-pass batches of (features, standardised targets), or of
        (features, {"labels": targets, **extras}); the run's text transform (augmentation)
        may change texts and pairs every pass."""
        self._loss = run.cfg.regression_loss
        extras = dict(extras or {})
        examples = _examples(split, {"labels": self.normalized_targets(split, run.cfg), **extras})
        texts = ("text",) if split.pairs is None else ("text", "pair")
        return common.training_batches(run, examples, _encoder(run.preprocessor),
                                       _pads(run.preprocessor), texts,
                                       split_labels=("labels", *extras), untrimmed=tuple(extras))

    # ---- Scores and predictions ------------------------------------------------------

    def scores(self, run, split):
        """The model's score (in the targets' units) for every example of `split`."""
        from tfimitate.tasks import inference

        mean, std = target_scale(run.cfg)
        result = np.full([len(split)], np.nan, np.float32)
        batches = _prediction_batches(split, run.preprocessor, run.cfg.batch_size,
                                      run.cfg.sequence_length)
        for outputs, index in inference.collect_outputs(run.model, batches, run.strategy):
            result[index] = outputs[:, 0] * std + mean
        return result

    def score_split(self, split, predicted):
        """The regression report of `predicted` scores on the labelled `split`, with a
        record per example."""
        evaluation = regression_evaluation(np.array(split.targets, np.float64), predicted,
                                           os.path.basename(os.path.normpath(split.source)))
        records = [dict(self.example(split, i), label=split.targets[i],
                        predicted=round(float(p), RECORD_DIGITS))
                   for i, p in enumerate(predicted)]
        return dataclasses.replace(evaluation, predictions=records)

    def evaluate(self, run, split):
        """RMSE, MAE, Pearson, Spearman, R² on `split`; the score is -RMSE."""
        return self.score_split(split, self.scores(run, split))

    def evaluate_saved_model(self, saved_model, split, labels):
        """The metrics of `evaluate` for an exported regressor, from the `score` its
        `serving_default` signature gives the split's raw inputs."""
        import tensorflow as tf

        del labels
        serve = saved_model.signatures["serving_default"]
        predicted = []
        for start in range(0, len(split), PREDICT_BATCH):
            inputs = self.serving_inputs(split, range(start, min(start + PREDICT_BATCH,
                                                                 len(split))))
            outputs = serve(**{name: tf.constant(values) for name, values in inputs.items()})
            predicted.extend(outputs[SCORE].numpy().tolist())
        return self.score_split(split, np.array(predicted, np.float32))

    def predict(self, run, split):
        """One record per example: its input and the model's score."""
        return [dict(self.example(split, i), score=float(score))
                for i, score in enumerate(self.scores(run, split))]

    def perturbed(self, split, change):
        """A copy of `split` whose texts and pairs are split at spaces into words, changed
        together by `change` and joined again with spaces."""
        texts = split.texts + (split.pairs or [])
        changed = [" ".join(words) for words in change([text.split() for text in texts], False)]
        pairs = None if split.pairs is None else changed[len(split):]
        return Split(f"{split.source} (perturbed)", changed[:len(split)], pairs, split.targets,
                     split.lines)

    # ---- Serving ---------------------------------------------------------------------

    def serving_signature(self, run):
        """Raw strings `text` (and `text_pair`) tokenized in the graph, as text
        classification serves them (tasks/text_classification.py)."""
        from tfimitate.tasks import text_classification

        return text_classification.TextClassification().serving_signature(run)

    def serving_inputs(self, split, indices):
        """{"text": [...]} (and "text_pair" for pairs)."""
        inputs = {"text": [split.texts[i] for i in indices]}
        if split.pairs is not None:
            inputs["text_pair"] = [split.pairs[i] for i in indices]
        return inputs

    def serving_examples(self, split):
        """The first 32 examples of `split` as serving_default inputs."""
        return self.serving_inputs(split, range(min(common.SERVING_EXAMPLES, len(split))))

    def serving_module(self, run, labels_file):
        """`serving_default`: raw inputs -> `score`; `regress`: the same inputs as the
        features of serialized tf.Examples -> `outputs` (TF Serving's Regress API)."""
        specs, front = self.serving_signature(run)
        return _server_class()(run.model, self.serving_assets(labels_file), specs, front,
                               target_scale(run.cfg))

    def parity(self, run, examples):
        """Both signatures' inputs and the in-memory model's scores for them."""
        import tensorflow as tf

        from tfimitate.serving import inference

        specs, front = self.serving_signature(run)
        inputs = {name: tf.constant(examples[name]) for name in specs}
        mean, std = target_scale(run.cfg)
        outputs = tf.cast(run.model(front(inputs), training=False), tf.float32)
        scores = (outputs[:, 0] * std + mean).numpy()
        serialized = inference.to_examples({name: list(examples[name]) for name in specs})
        return {"serving_default": (inputs, {SCORE: scores}),
                "regress": ({"inputs": tf.constant(serialized)}, {"outputs": scores})}


def _examples(split, extra):
    """The split's raw examples: `text` (and `pair`) strings plus per-example values."""
    import tensorflow as tf

    examples = {"text": tf.constant(split.texts)}
    if split.pairs is not None:
        examples["pair"] = tf.constant(split.pairs)
    examples.update({key: tf.constant(values) for key, values in extra.items()})
    return examples


def _encoder(preprocessor):
    """A batch of examples -> the preprocessor's features plus the other values."""
    def encode(batch):
        batch = dict(batch)
        text = batch.pop("text")
        # x= keeps a (texts, pairs) tuple one input; positionally keras-hub reads it as (x, y).
        features = preprocessor(x=(text, batch.pop("pair")) if "pair" in batch else text)
        features.update(batch)
        return features

    return encode


def _pads(preprocessor):
    return {"token_ids": preprocessor.tokenizer.pad_token_id}


@functools.lru_cache(maxsize=8)
def _prediction_batches(split, preprocessor, batch_size, sequence_length):
    """Tokenized, cached batches of (features, example index), built once per split."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    features = pipelines.encoded(
        tf.data.Dataset.from_tensor_slices(
            _examples(split, {"index": np.arange(len(split), dtype=np.int64)})),
        _encoder(preprocessor))
    return pipelines.batches(features, batch_size, sequence_length, _pads(preprocessor),
                             split_labels=("index",))


@functools.lru_cache(maxsize=1)
def _server_class():
    import tensorflow as tf

    from tfimitate.serving.module import ServingModule

    class RegressorServer(ServingModule):
        """What TF Serving runs: raw inputs in, the score (in the targets' units) out."""

        def __init__(self, model, assets, specs, front, scale):
            super().__init__(model=model)
            for name, asset in assets.items():
                setattr(self, name, asset)
            self._front, (self._mean, self._std) = front, scale
            names = list(specs)
            self.serve = tf.function(lambda *inputs: self._score(dict(zip(names, inputs))),
                                     input_signature=list(specs.values()))
            features = {name: tf.io.FixedLenFeature(spec.shape[1:], spec.dtype)
                        for name, spec in specs.items()}
            self.regress = tf.function(  # calls serve's graph (traced once) on the features
                lambda inputs: {"outputs": self.serve(*map(
                    tf.io.parse_example(inputs, features).get, names))[SCORE]},
                input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])

        def serving_signatures(self):
            """Signature name -> tf.function, as saved in the SavedModel."""
            return {"serving_default": self.serve, "regress": self.regress}

        def _score(self, inputs):
            outputs = tf.cast(self.model(self._front(inputs), training=False), tf.float32)
            return {SCORE: outputs[:, 0] * self._std + self._mean}

    return RegressorServer
