"""What regression tasks share: one number per example, whatever the examples are.

`RegressionTask` holds the targets' story: a numeric `--label_column` (a value that is not
a finite number is refused with its file:line), optional standardisation
(`--normalize_targets`: mean and std learned on the training split, saved with the run as
--target_mean/--target_std, undone in every score the run reports, predicts or serves), the
loss (`--regression_loss=mse|huber`, delta 1), the metrics (RMSE, MAE, Pearson, Spearman,
R²; the score, which drives early stopping and the best checkpoint, is -RMSE, higher is
better), a predicted-vs-true scatter plot and a residual histogram in eval/, prediction
records with the `score`, scoring an exported model, and the serving module:
`serving_default` (the task's raw inputs -> `score`, float32 [None]) and `regress`
(serialized tf.Examples with the same features -> `outputs`: TF Serving's Regress API).

A subclass says what its examples are, in eight methods: `read` (a file as a split with
`.targets` (floats; None: no label), `.lines`, `.source`, `subset`), `example`,
`make_preprocessor`, `build_head`, `train_dataset` (with `training_targets` as labels),
`prediction_batches`, `serving_signature` and `serving_inputs`; see text_regression.py and
image_regression.py.

Example:
    task = tasks.get_task("text_regression")
    evaluation = task.evaluate(run, data.eval)
    evaluation.metrics["pearson"], evaluation.score   # 0.86, -0.62 (-RMSE)
"""

import abc
import dataclasses
import functools
import math
import os
from typing import Any, Callable, ClassVar, Dict, Iterable, Tuple

import numpy as np
from absl import logging

from tfimitate import options
from tfimitate.data import splits
from tfimitate.errors import UserError
from tfimitate.tasks import base, common

# The one output of a regression model: its name in the label set, labels.txt and serving.
SCORE = "score"
HUBER_DELTA = 1.0
RECORD_DIGITS = 4  # evaluation rounds scores, so a checkpoint's and its export's reports agree

# Every regression task reads these; text_regression declares them (an option has one owner).
OPTIONS = (
    options.choice(
        "regression_loss", "mse", ("mse", "huber"),
        "Regression tasks: the loss of the (optionally standardised) targets: mse, or huber "
        "(delta 1; less swayed by outliers)."),
    options.boolean(
        "normalize_targets", False,
        "Regression tasks: standardise the targets (mean 0, std 1) for the loss; the mean and "
        "std are learned on the training split, saved with the run as --target_mean and "
        "--target_std, and undone in evaluation, predictions and the export."),
    options.number(
        "target_mean", None,
        "With --normalize_targets: the targets' mean (default: learned on the training split "
        "and saved with the run)."),
    options.number(
        "target_std", None,
        "With --normalize_targets: the targets' standard deviation (default: learned on the "
        "training split and saved with the run)."),
)


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


class RegressionTask(common.ServedInputs, base.Task):
    """A task that gives each example one number (see the module)."""

    # Besides the subclass's own input columns.
    RESUME_FIELDS = ("label_column", "regression_loss", "normalize_targets")
    # The head starts at zero: targets far from 0 (films' ratings around 6.4) cost a short
    # run most of its steps just moving the bias (test Pearson 0.21 in 150 steps on the
    # films with their catalogue columns, defaults benchmark).
    RECIPE = (
        options.Recipe("normalize_targets", True,
                       "the head starts at zero, so it learns targets scaled to mean 0 and "
                       "std 1 (the export undoes the scaling)"),
    )
    # serving_default (raw inputs) and regress (tf.Examples, TF Serving's Regress API).
    SIGNATURES = ("serving_default", "regress")
    # Examples per call of an exported model's signature (evaluate_saved_model).
    PREDICT_BATCH: ClassVar[int] = 64

    _loss = "mse"  # the run's --regression_loss, set by `training_targets`

    # ---- What a subclass implements -------------------------------------------------

    @abc.abstractmethod
    def read(self, path, cfg, flag, with_labels=True) -> Any:
        """One file as a split: len(), `.source`, `.subset(indices, source)`, `.targets`
        (floats, checked by `parse_target`; None without labels) and `.lines`."""

    @abc.abstractmethod
    def example(self, split, i) -> Dict[str, Any]:
        """Example `i` of `split` as the fields that name it in records, e.g. {"text": ...}."""

    @abc.abstractmethod
    def prediction_batches(self, run, split) -> Any:
        """Finite tf.data of (model inputs, example index) batches over `split`."""

    @abc.abstractmethod
    def serving_signature(self, run) -> Tuple[Dict[str, Any], Callable[[Dict[str, Any]], Any]]:
        """serving_default's inputs ({name: tf.TensorSpec}) and its front end in TF ops."""

    @abc.abstractmethod
    def serving_inputs(self, split, indices: Iterable[int]) -> Dict[str, list]:
        """The examples `indices` of `split` as raw serving_default inputs."""

    # ---- Data ------------------------------------------------------------------------

    def validate(self, cfg):
        """Refuses --labels (a regression has none) and a target std that is not positive."""
        if cfg.labels:
            raise UserError(f"--labels={','.join(cfg.labels)}: --task={self.NAME} predicts a "
                            "number, not labels; remove --labels.")
        if cfg.target_std is not None and not cfg.target_std > 0:
            raise UserError(f"--target_std={cfg.target_std:g}: give a positive number, or leave "
                            "it unset to learn it from the training data.")

    def load_data(self, cfg):
        """Train, eval (given or held out) and test splits; with --normalize_targets the
        targets' mean and std learned on the training split (unless given)."""
        train = self.read(cfg.train_data, cfg, "--train_data")
        train, evaluation, test = splits.eval_and_test(
            train, cfg, lambda path, flag: self.read_file(path, cfg, flag))
        return splits.Data(train, evaluation, test, (SCORE,), self.learn_scale(train, cfg))

    def learn_scale(self, train, cfg):
        """{"target_mean", "target_std"} of the training targets with --normalize_targets
        (a given value kept), else {}."""
        if not cfg.normalize_targets:
            return {}
        targets = np.array(train.targets, np.float64)
        std = float(targets.std())
        if cfg.target_std is None and not std > 0:
            raise UserError(f"--train_data={cfg.train_data}: every target is {targets[0]:g}; "
                            "there is nothing to learn (or to standardise); check --label_column.")
        learned = {"target_mean": float(targets.mean()) if cfg.target_mean is None
                   else cfg.target_mean,
                   "target_std": std if cfg.target_std is None else cfg.target_std}
        logging.info("--normalize_targets: mean %.4g, std %.4g (of %d training targets).",
                     learned["target_mean"], learned["target_std"], len(targets))
        return learned

    def read_file(self, path, cfg, flag, with_labels=True):
        """A labelled file, or inputs to predict."""
        return self.read(path, cfg, flag, with_labels)

    def training_targets(self, split, cfg):
        """The split's targets as the model learns them (standardised with
        --normalize_targets), float32, NaN for an example without a target; also takes the
        run's --regression_loss for `example_loss`."""
        self._loss = cfg.regression_loss
        mean, std = target_scale(cfg)
        raw = np.array([math.nan if t is None else t for t in split.targets], np.float64)
        return ((raw - mean) / std).astype(np.float32)

    # ---- Model and training ----------------------------------------------------------

    def num_outputs(self, labels):
        """One output: the (standardised) score."""
        del labels
        return 1

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

    # ---- Scores and predictions ------------------------------------------------------

    def scores(self, run, split):
        """The model's score (in the targets' units) for every example of `split`."""
        from tfimitate.tasks import inference

        mean, std = target_scale(run.cfg)
        result = np.full([len(split)], np.nan, np.float32)
        batches = self.prediction_batches(run, split)
        for outputs, index in inference.collect_outputs(run.model, batches, run.strategy):
            result[index] = outputs[:, 0] * std + mean
        return result

    def score_split(self, split, predicted):
        """The regression report of `predicted` scores on the labelled `split`, with a
        record per example; scores are rounded to RECORD_DIGITS decimals first, so that a
        checkpoint and its export (equal within 1e-5) give the same report."""
        predicted = np.round(np.asarray(predicted, np.float64), RECORD_DIGITS)
        evaluation = regression_evaluation(np.array(split.targets, np.float64), predicted,
                                           os.path.basename(os.path.normpath(split.source)))
        records = [dict(self.example(split, i), label=split.targets[i],
                        predicted=float(p))
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
        for start in range(0, len(split), self.PREDICT_BATCH):
            inputs = self.serving_inputs(split, range(start, min(start + self.PREDICT_BATCH,
                                                                 len(split))))
            outputs = serve(**{name: tf.constant(values) for name, values in inputs.items()})
            predicted.extend(outputs[SCORE].numpy().tolist())
        return self.score_split(split, np.array(predicted, np.float32))

    def predict(self, run, split):
        """One record per example: its input and the model's score."""
        return [dict(self.example(split, i), score=float(score))
                for i, score in enumerate(self.scores(run, split))]

    # ---- Soft targets (distillation from a regression teacher) ------------------------

    def probabilities(self, run, split):
        """The model's scores as per-example soft targets: float32 [examples, 1], in the
        targets' units (tasks/base.py SoftTargets; a teacher's scores for distillation)."""
        return self.scores(run, split)[:, np.newaxis]

    def served_probabilities(self, split, predict):
        """The scores of a served regressor (`predict("serving_default", inputs)` returns
        one `score` per example) as float32 [examples, 1]."""
        inputs = self.serving_inputs(split, range(len(split)))
        return np.asarray(predict("serving_default", inputs), np.float32).reshape(-1, 1)

    def score_probabilities(self, split, probabilities, labels):
        """The regression report of per-example scores [examples, 1] on `split`."""
        del labels
        return self.score_split(split, np.asarray(probabilities)[:, 0])

    def soft_target_loss(self, teacher, outputs, cfg):
        """Per-example squared error between the (standardised) output and the teacher's
        score standardised likewise: what distillation uses instead of a KL divergence."""
        import tensorflow as tf

        mean, std = target_scale(cfg)
        return tf.square(outputs[:, 0] - (teacher[:, 0] - mean) / std)

    # ---- Serving ---------------------------------------------------------------------

    def serving_module(self, run, labels_file):
        """`serving_default`: raw inputs -> `score`; `regress`: the same inputs as the
        features of serialized tf.Examples -> `outputs` (TF Serving's Regress API)."""
        specs, front = self.serving_signature(run)
        return _server_class()(run.model, self.serving_assets(labels_file), specs, front,
                               self.served_forward(run), target_scale(run.cfg),
                               self.example_defaults(run))

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


@functools.lru_cache(maxsize=1)
def _server_class():
    import tensorflow as tf

    from tfimitate.serving.module import ServingModule, example_signature

    class RegressorServer(ServingModule):
        """What TF Serving runs: raw inputs in, the score (in the targets' units) out."""

        def __init__(self, model, assets, specs, front, forward, scale, defaults):
            super().__init__(model=model)
            for name, asset in assets.items():
                setattr(self, name, asset)
            self._front, self._forward, (self._mean, self._std) = front, forward, scale
            names = list(specs)
            self.serve = tf.function(lambda *inputs: self._score(dict(zip(names, inputs))),
                                     input_signature=list(specs.values()))
            self.regress = example_signature(self.serve, specs, defaults,
                                             lambda outputs: {"outputs": outputs[SCORE]})

        def serving_signatures(self):
            """Signature name -> tf.function, as saved in the SavedModel."""
            return {"serving_default": self.serve, "regress": self.regress}

        def _score(self, inputs):
            outputs = self._forward(self._front(inputs))
            return {SCORE: outputs[:, 0] * self._std + self._mean}

    return RegressorServer
