"""What classification tasks share: one label per example, out of a label set.

`ClassificationTask` holds the label-set story, whatever the examples are: the label
set (--labels, a TFDS ClassLabel's names, or the training labels), label checks
(an unknown label is refused, or dropped with --drop_unlisted_labels), the hold-out,
probabilities -> prediction records, the classification report (accuracy, macro F1,
per-class P/R/F1, confusion matrix), scoring an exported model by the labels it serves,
and the serving module: the task's front end (tokenizer, image decoding) in the graph
before the model, and a label table (the labels.txt asset) after it, so that
`serving_default` returns `label`, `class_id` and `probabilities`.

A subclass says what its examples are, in eight methods: `read` (a file as a Split
with `.labels` and `.lines`), `example` (an example as its record fields),
`make_preprocessor`, `build_head`, `train_dataset`, `prediction_batches`,
`serving_signature` (serving_default's inputs and its front end in TF ops) and
`serving_inputs` (examples as raw serving inputs, also the warmup and parity examples).
Hooks with defaults: `validate`, `training_split`, `usable`, `line`, `score_probabilities`,
`serving_examples`, `perturbed`.

Example (a minimal topic classifier of texts; plus its line in tasks/__init__.py TASKS):
    import keras
    import tensorflow as tf

    from tfimitate import backbones
    from tfimitate.tasks import common, text_classification
    from tfimitate.tasks.classification import ClassificationTask

    class Topics(ClassificationTask):
        NAME, INPUTS, RESUME_FIELDS = "topics", ("text",), ("text_column", "label_column")

        def read(self, path, cfg, flag, with_labels=True):
            return text_classification.read_split(path, cfg, flag, with_labels)

        def example(self, split, i):
            return {"text": split.texts[i]}

        def make_preprocessor(self, cfg):
            return backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)

        def build_head(self, cfg, backbone, num_outputs):
            pooled = backbone(backbone.input)["pooled_output"]
            logits = common.logits_head(pooled, cfg, num_outputs, "topic")
            return keras.Model(backbone.input, logits)

        def train_dataset(self, run, split, extras=None):  # no extras: no distillation
            ids = self.label_ids(split, run.labels)
            texts = tf.data.Dataset.from_tensor_slices((split.texts, ids))
            return (texts.shuffle(len(split), run.cfg.seed).repeat().batch(run.cfg.batch_size)
                    .map(lambda text, label: (run.preprocessor(text), label)))

        def prediction_batches(self, run, split):
            texts = tf.data.Dataset.from_tensor_slices((split.texts, tf.range(len(split))))
            return texts.batch(run.cfg.batch_size).map(
                lambda text, index: (run.preprocessor(text), index))

        def serving_signature(self, run):
            return ({"text": tf.TensorSpec([None], tf.string, name="text")},
                    lambda inputs: run.preprocessor(inputs["text"]))

        def serving_inputs(self, split, indices):
            return {"text": [split.texts[i] for i in indices]}
"""

import abc
import dataclasses
import functools
import os
from typing import Any, Callable, ClassVar, Dict, Iterable, Tuple

import numpy as np

from tfimitate.data import splits, tfds_source
from tfimitate.errors import UserError
from tfimitate.outputs import SAVED_MODEL_ADVICE
from tfimitate.outputs import check as check_outputs
from tfimitate.tasks import base, common


class ClassificationTask(common.ServedInputs, base.Task):
    """A task that gives each example one label of the run's label set (see the module)."""

    # Examples per call of an exported model's signature (evaluate_saved_model).
    PREDICT_BATCH: ClassVar[int] = 64
    # serving_default (raw inputs) and classify (tf.Examples, TF Serving's Classify API).
    SIGNATURES = ("serving_default", "classify")
    # Ends "a classifier needs at least two" when the training data has one label.
    ONE_LABEL_ADVICE: ClassVar[str] = ", check --label_column"

    # ---- What a subclass implements -------------------------------------------------

    @abc.abstractmethod
    def read(self, path, cfg, flag, with_labels=True) -> Any:
        """One file (or TFDS split) as a Split, labels not yet checked: len(), `.source`,
        `.subset(indices, source)`, `.labels` (one per example; "" without labels) and
        `.lines` (where each example is, for messages)."""

    @abc.abstractmethod
    def example(self, split, i) -> Dict[str, Any]:
        """Example `i` of `split` as the fields that name it in evaluation records, e.g.
        {"text": ...}; a prediction record names it by the first of them."""

    @abc.abstractmethod
    def prediction_batches(self, run, split) -> Any:
        """Finite tf.data of (model inputs, example index) batches over `split`."""

    @abc.abstractmethod
    def serving_signature(self, run) -> Tuple[Dict[str, Any], Callable[[Dict[str, Any]], Any]]:
        """serving_default's inputs ({name: tf.TensorSpec}) and its front end: a function
        (inputs: name -> tensor) -> model inputs, in TF ops that TF Serving runs."""

    @abc.abstractmethod
    def serving_inputs(self, split, indices: Iterable[int]) -> Dict[str, list]:
        """The examples `indices` of `split` as raw serving_default inputs
        (name -> list of str/bytes)."""

    # ---- Hooks with defaults --------------------------------------------------------

    def validate(self, cfg):
        """A classifier needs at least two labels."""
        if cfg.labels is not None and len(cfg.labels) < 2:
            raise UserError(f"--labels needs at least two labels for {self.NAME}.")

    def training_split(self, split):
        """The training file's split before its label set is taken. Default: as read."""
        return split

    def usable(self, split, cfg, flag):
        """A split (labels checked, if it has them) without the examples the model cannot
        read. Default: all of them."""
        del cfg, flag
        return split

    def line(self, split, i):
        """Where example `i` of `split` is, after `split.source:` in messages: its line."""
        return split.lines[i]

    # ---- Data ------------------------------------------------------------------------

    def load_data(self, cfg):
        """Reads and checks train/eval/test data; holds out eval data if none is given.
        The label set is --labels, a TFDS ClassLabel's names, or the training labels."""
        train = self.training_split(self.read(cfg.train_data, cfg, "--train_data"))
        labels = cfg.labels or tfds_source.class_names(cfg) or tuple(sorted(set(train.labels)))
        train = self.check_labels(train, labels, "--train_data", cfg.drop_unlisted_labels)
        splits.warn_rare_labels(train.labels, train.source)
        self.check_label_set(labels, cfg)
        cfg = cfg.replace(labels=tuple(labels))
        train = self.usable(train, cfg, "--train_data")
        train, evaluation, test = splits.eval_and_test(
            train, cfg, lambda path, flag: self.read_file(path, cfg, flag))
        return splits.Data(train, evaluation, test, tuple(labels))

    def check_label_set(self, labels, cfg):
        """Refuses an empty label, one with a line break, or fewer than two labels."""
        for label in labels:
            if not label or "\n" in label:
                raise UserError(f"--labels: label {label!r} is empty or has a line break; rename it.")
        if len(labels) < 2:
            raise UserError(
                f"--train_data={cfg.train_data}: only one label ({labels[0]}) in the data; a "
                f"classifier needs at least two{self.ONE_LABEL_ADVICE}.")

    def read_file(self, path, cfg, flag, with_labels=True):
        """A labelled file checked against the model's labels, or inputs to predict."""
        split = self.read(path, cfg, flag, with_labels)
        if with_labels:
            split = self.check_labels(split, cfg.labels, flag, cfg.drop_unlisted_labels)
        return self.usable(split, cfg, flag)

    def check_labels(self, split, labels, flag, drop_unlisted):
        """Refuses (or with `drop_unlisted`, drops) examples whose label is not in `labels`."""
        known = set(labels)
        return common.keep_known_labels(
            split, labels, flag, drop_unlisted,
            lambda i: None if split.labels[i] in known else (self.line(split, i), split.labels[i]))

    @staticmethod
    def label_ids(split, labels):
        """Class id of every example of `split`; -1 for examples without a label (None)."""
        index = {label: i for i, label in enumerate(labels)}
        return np.array([-1 if label is None else index[label] for label in split.labels],
                        np.int32)

    # ---- Training --------------------------------------------------------------------

    def example_loss(self, labels, outputs):
        """Per-example cross-entropy of the logits: of class ids (0 for id -1, no label),
        or of class distributions (image MixUp/CutMix mix the labels)."""
        import keras
        import tensorflow as tf

        if labels.dtype.is_floating:
            return keras.losses.categorical_crossentropy(labels, outputs, from_logits=True)
        known = labels >= 0
        losses = keras.losses.sparse_categorical_crossentropy(
            tf.where(known, labels, 0), outputs, from_logits=True)
        return tf.where(known, losses, 0.0)

    # ---- Scores and predictions ------------------------------------------------------

    def probabilities(self, run, split):
        """Class probabilities of every example of `split`, in split order
        ([examples, labels]; NaN for an example the batches left out)."""
        import tensorflow as tf

        from tfimitate.tasks import inference

        result = np.full([len(split), len(run.labels)], np.nan, np.float32)
        batches = self.prediction_batches(run, split)
        for logits, index in inference.collect_outputs(run.model, batches, run.strategy):
            result[index] = tf.nn.softmax(logits).numpy()
        return result

    def score_probabilities(self, split, probabilities, labels):
        """Accuracy (the score), macro F1, per-class scores and the confusion matrix of
        class `probabilities` (columns: `labels`) on the labelled `split`."""
        return self.scores(split, probabilities.argmax(axis=-1), labels)

    def scores(self, split, predicted, labels):
        """The classification report of predicted class ids, with a record per example."""
        evaluation = classification_evaluation(
            self.label_ids(split, labels), predicted, labels,
            os.path.basename(os.path.normpath(split.source)))
        records = [dict(self.example(split, i), label=split.labels[i], predicted=labels[int(p)])
                   for i, p in enumerate(predicted)]
        return dataclasses.replace(evaluation, predictions=records)

    def evaluate(self, run, split):
        """Metrics of the model on `split`; the score is the accuracy."""
        return self.score_probabilities(split, self.probabilities(run, split), run.labels)

    def predict(self, run, split):
        """One record per example: its input, its label and the probability of each class."""
        labels, records = run.labels, []
        for i, probs in enumerate(self.probabilities(run, split)):
            name, value = next(iter(self.example(split, i).items()))
            records.append({name: value, "label": labels[int(probs.argmax())],
                            "probability": float(probs.max()),
                            "probabilities": {label: float(v) for label, v in zip(labels, probs)}})
        return records

    def evaluate_saved_model(self, saved_model, split, labels):
        """The metrics of `evaluate` for an exported classifier, from the labels its
        `serving_default` signature gives the split's raw inputs."""
        import tensorflow as tf

        serve = saved_model.signatures["serving_default"]
        index = {label: i for i, label in enumerate(labels)}
        predicted = []
        for start in range(0, len(split), self.PREDICT_BATCH):
            inputs = self.serving_inputs(split, range(start, min(start + self.PREDICT_BATCH,
                                                                 len(split))))
            outputs = serve(**{name: tf.constant(values) for name, values in inputs.items()})
            check_outputs(outputs["probabilities"].numpy(), "--saved_model", SAVED_MODEL_ADVICE,
                          names=range(start + 1, start + len(outputs["label"]) + 1))
            for label in outputs["label"].numpy():
                label = label.decode()
                if label not in index:
                    raise UserError(f"--saved_model predicts the label '{label}', which is not "
                                    f"one of the run's labels ({', '.join(labels)}); give the "
                                    "--model_dir of a run with the same labels.")
                predicted.append(index[label])
        return self.scores(split, np.array(predicted, np.int64), labels)

    def served_probabilities(self, split, predict):
        """Class probabilities of a served classifier for every example of `split`
        (`predict("serving_default", serving inputs)`)."""
        inputs = self.serving_inputs(split, range(len(split)))
        return np.stack(predict("serving_default", inputs)).astype(np.float32)

    # ---- Serving ---------------------------------------------------------------------

    def serving_module(self, run, labels_file):
        """The tf.Module to save: `serving_default` classifies raw inputs, `classify` the same
        inputs as the features of serialized tf.Examples (TF Serving's Classify API)."""
        specs, front = self.serving_signature(run)
        return _server_class()(run.model, run.preprocessor, self.serving_assets(labels_file),
                               specs, front, self.served_forward(run), self.example_defaults(run))

    def parity(self, run, examples):
        """`serving_default`'s inputs and the in-memory model's probabilities for them,
        through the same front end."""
        import tensorflow as tf

        specs, front = self.serving_signature(run)
        inputs = {name: tf.constant(examples[name]) for name in specs}
        logits = tf.cast(run.model(front(inputs), training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1).numpy()
        return {"serving_default": (inputs, {"probabilities": probabilities}),
                "classify": _classify_check(examples, specs, run.labels, probabilities)}


def classification_evaluation(true, predicted, labels, title):
    """Accuracy (the score), macro F1, per-class P/R/F1 and the confusion matrix (+ figure)
    of class ids `true` vs `predicted`.

    Example:
        classification_evaluation(np.array([0, 1]), np.array([0, 0]), ("neg", "pos"), "dev").score  # 0.5
    """
    from sklearn import metrics as skm

    from tfimitate import reports

    ids = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true, predicted, labels=ids, zero_division=0)
    matrix = skm.confusion_matrix(true, predicted, labels=ids).tolist()
    accuracy = float(skm.accuracy_score(true, predicted))
    metrics = {
        "accuracy": accuracy,
        "macro_f1": float(np.mean(f1)),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]),
                    "f1": float(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)},
        "confusion_matrix": matrix,
        "labels": list(labels),
        "examples": len(true),
    }
    report = skm.classification_report(
        true, predicted, labels=ids, target_names=list(labels), digits=4, zero_division=0)
    figure = lambda path: reports.plot_confusion_matrix(matrix, labels, path, title)
    return base.Evaluation(accuracy, metrics, report, {"confusion_matrix": figure})


def _classify_check(examples, specs, labels, probabilities):
    """The `classify` signature's parity check: the serving examples as tf.Examples, and
    every label with its probability."""
    import tensorflow as tf

    from tfimitate.serving import inference

    serialized = inference.to_examples({name: list(examples[name]) for name in specs})
    classes = np.array([[label.encode() for label in labels]] * len(serialized), dtype=object)
    return ({"inputs": tf.constant(serialized)}, {"classes": classes, "scores": probabilities})


@functools.lru_cache(maxsize=1)
def _server_class():
    import tensorflow as tf

    from tfimitate.serving.module import ServingModule, example_signature

    class ClassifierServer(ServingModule):
        """What TF Serving runs: raw inputs in, labels and probabilities out.

        The task's front end (tokenizer, image decoding) runs inside the graph; the label
        vocabulary is the asset `labels_asset` read into a lookup table.
        """

        def __init__(self, model, preprocessor, assets, specs, front, forward, defaults):
            super().__init__(model=model)
            self.preprocessor = preprocessor
            for name, asset in assets.items():
                setattr(self, name, asset)
            self.label_table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                    tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
            self._front, self._forward = front, forward
            names = list(specs)
            self.serve = tf.function(lambda *inputs: self._classify(dict(zip(names, inputs))),
                                     input_signature=list(specs.values()))
            self.classify = example_signature(self.serve, specs, defaults,
                                              self._classify_examples)

        def serving_signatures(self):
            """Signature name -> tf.function, as saved in the SavedModel."""
            return {"serving_default": self.serve, "classify": self.classify}

        def _classify_examples(self, outputs):
            """TF Serving's Classify outputs from serve's: every label (`classes`) and its
            probability (`scores`), [examples, labels] each."""
            probs = outputs["probabilities"]
            labels = self.label_table.lookup(tf.range(tf.shape(probs)[1], dtype=tf.int64))
            return {"classes": tf.tile(labels[tf.newaxis], [tf.shape(probs)[0], 1]),
                    "scores": probs}

        def _classify(self, inputs):
            probs = tf.nn.softmax(self._forward(self._front(inputs)), axis=-1)
            class_id = tf.argmax(probs, axis=-1, output_type=tf.int64)
            return {"label": self.label_table.lookup(class_id), "class_id": class_id,
                    "probabilities": probs}

    return ClassifierServer
