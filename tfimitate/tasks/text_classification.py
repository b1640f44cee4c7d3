"""Text classification: one label per text (or text pair), from CSV/TSV/JSONL to TF Serving.

Data: `--text_column` (and `--text_pair_column`) and `--label_column` of the
files. Model: a keras-hub backbone, its pooled output (or first token), dropout
and a float32 dense layer of logits. Metrics: accuracy, macro F1, per-class
precision/recall/F1 and the confusion matrix. Serving: `serving_default` takes
raw strings and returns `label`, `class_id` and `probabilities`.

Example:
    data = load_data(cfg)
    evaluation = evaluate(Run(cfg, model, make_preprocessor(cfg), strategy), data.eval)
"""

import dataclasses
import functools
import os
import re
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfimitate import backbones
from tfimitate.data import pipelines, readers, splits, tfds_source
from tfimitate.errors import UserError
from tfimitate.serving import lengths
from tfimitate.serving.module import ServingModule
from tfimitate.tasks import base, common
from tfimitate.training import inference

NAME = "text_classification"
RESUME_FIELDS = ("text_column", "text_pair_column", "label_column")
# What its training batches are made of (the techniques it takes: techniques.INPUTS).
INPUTS = ("text", "word_pieces")
PREDICT_BATCH = 64
SIGNATURES = ("serving_default",)  # what serving_module exports


@dataclasses.dataclass(eq=False)
class Split:
    """Examples of one data file, in file order (compared and hashed by identity).

    A label of None is the "no label" marker (unlabelled training text, see `add_unlabeled`).
    """

    source: str
    texts: List[str]
    pairs: Optional[List[str]]
    labels: List[Optional[str]]
    lines: List[int]

    def __len__(self):
        return len(self.texts)

    def subset(self, indices, source):
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return Split(source, pick(self.texts), pick(self.pairs), pick(self.labels),
                     pick(self.lines))


def read_split(path, cfg, flag, with_labels=True, column_flag="--text_column"):
    """Reads one file into a Split; rows with an empty text are dropped and counted."""
    columns = [cfg.text_column]
    if cfg.text_pair_column:
        columns.append(cfg.text_pair_column)
    if with_labels:
        columns.append(cfg.label_column)
    rows = readers.read_rows(path, columns, flag, cfg.tfds_data_dir)
    texts, pairs, labels, lines = [], [], [], []
    empty = 0
    for row in rows:
        values = [str(v) if v is not None else "" for v in row.values]
        if not values[0].strip():
            empty += 1
            continue
        if with_labels and not values[-1].strip():
            raise UserError(f"{path}:{row.line}: the label (--label_column={cfg.label_column}) "
                            "is empty; fill it in or remove the row.")
        texts.append(values[0])
        if cfg.text_pair_column:
            pairs.append(values[1])
        labels.append(values[-1].strip() if with_labels else "")
        lines.append(row.line)
    if empty:
        logging.warning("%s: skipped %d rows with an empty text.", path, empty)
    if not texts:
        raise UserError(f"{flag}={path}: no examples with a non-empty text; check the file and {column_flag}.")
    return Split(path, texts, pairs if cfg.text_pair_column else None, labels, lines)


def _drop_duplicates(split):
    seen, keep, conflicts = {}, [], 0
    for i, key in enumerate(zip(split.texts, split.pairs or split.texts)):
        if key in seen:
            conflicts += split.labels[seen[key]] != split.labels[i]
            continue
        seen[key] = i
        keep.append(i)
    dropped = len(split) - len(keep)
    if dropped:
        logging.warning("%s: dropped %d duplicate texts (%d of them with a different label "
                        "than their first copy).", split.source, dropped, conflicts)
    return split.subset(keep, split.source)


def _check_labels(split, labels, flag, drop_unlisted):
    known = set(labels)
    return common.keep_known_labels(
        split, labels, flag, drop_unlisted,
        lambda i: None if split.labels[i] in known else (split.lines[i], split.labels[i]))


def read_file(path, cfg, flag, with_labels=True):
    """A labelled file checked against the model's labels, or texts to predict: a .txt
    file (one per line) or a table read with --text_column."""
    if with_labels:
        return _check_labels(read_split(path, cfg, flag), cfg.labels, flag, cfg.drop_unlisted_labels)
    if readers.base_suffix(path) != ".txt":
        return read_split(path, cfg, flag, with_labels=False)
    numbered = common.read_text_lines(path, flag, "text")
    return Split(path, [line for _, line in numbered], None, [""] * len(numbered),
                 [i for i, _ in numbered])


def add_unlabeled(split, path, cfg, flag, column=None, exclude=()):
    """`split` plus the texts of `path` without a label: a .txt file (one text per line)
    or the `column` (default --text_column) of a table. Texts already in `split` or an
    `exclude` split, and repeats, are dropped and counted; texts count as equal when their
    lower-cased letters and digits are (SST-2's "it 's" is Rotten Tomatoes' "It's")."""
    if readers.base_suffix(path) == ".txt":
        if cfg.text_pair_column:
            raise UserError(f"{flag}={path}: a text-pair task needs a table with the "
                            f"--text_pair_column={cfg.text_pair_column} column, not a .txt file.")
        numbered = common.read_text_lines(path, flag, "text")
        extra = Split(path, [line for _, line in numbered], None, [None] * len(numbered),
                      [i for i, _ in numbered])
    else:
        extra = read_split(path, cfg.replace(text_column=column or cfg.text_column), flag,
                           with_labels=False, column_flag="--unlabeled_column")
        extra.labels = [None] * len(extra)
    seen = {_text_key(s, i) for s in (split, *exclude) for i in range(len(s))}
    keep = []
    for i in range(len(extra)):
        if _text_key(extra, i) not in seen:
            seen.add(_text_key(extra, i))
            keep.append(i)
    if len(keep) < len(extra):
        logging.warning("%s: dropped %d unlabelled texts that repeat a text of the training, "
                        "eval or test data (or of the file itself).", path, len(extra) - len(keep))
    if not keep:
        raise UserError(f"{flag}={path}: every text is already in the training, eval or test "
                        "data; give other unlabelled text.")
    pick = lambda values, extra_values: None if values is None else values + [extra_values[i] for i in keep]
    return Split(f"{split.source} + {path} (unlabelled)", pick(split.texts, extra.texts),
                 pick(split.pairs, extra.pairs), pick(split.labels, extra.labels),
                 pick(split.lines, extra.lines))


def letters(text):
    """The text as compared across splits: its lower-cased letters and digits
    (SST-2's "it 's" equals Rotten Tomatoes' "It's")."""
    return re.sub(r"[\W_]+", "", text.lower())


def _text_key(split, i):
    """Example i of `split` as compared across splits: its text(s)' lower-cased letters and digits."""
    return letters(split.texts[i]), letters(split.pairs[i]) if split.pairs is not None else None


def validate(cfg):
    """Text classification needs at least two labels."""
    if cfg.labels is not None and len(cfg.labels) < 2:
        raise UserError("--labels needs at least two labels for text_classification.")


def load_data(cfg):
    """Reads and checks train/eval/test data; holds out eval data if none is given."""
    train = _drop_duplicates(read_split(cfg.train_data, cfg, "--train_data"))
    labels = cfg.labels or tfds_source.class_names(cfg) or tuple(sorted(set(train.labels)))
    for label in labels:
        if not label or "\n" in label:
            raise UserError(f"--labels: label {label!r} is empty or has a line break; rename it.")
    train = _check_labels(train, labels, "--train_data", cfg.drop_unlisted_labels)
    splits.warn_rare_labels(train.labels, train.source)
    if len(labels) < 2:
        raise UserError(
            f"--train_data={cfg.train_data}: only one label ({labels[0]}) in the data; a "
            "classifier needs at least two, check --label_column.")
    train, evaluation, test = splits.eval_and_test(train, cfg, lambda path, flag: _check_labels(
        read_split(path, cfg, flag), labels, flag, cfg.drop_unlisted_labels))
    _warn_shared_texts(train, (evaluation, test))
    return splits.Data(train, evaluation, test, tuple(labels))


def _warn_shared_texts(train, scored):
    """Warns when texts of an eval or test split are also training texts (compared on
    lower-cased letters and digits): their scores then overstate accuracy on new text.
    SST-2's test sentences, for one, are snippets of Rotten Tomatoes reviews."""
    trained = {_text_key(train, i) for i in range(len(train))}
    for split in scored:
        shared = sum(_text_key(split, i) in trained for i in range(len(split))) if split else 0
        if shared:
            logging.warning("%s: %d of its %d texts are also in the training data (%s); its "
                            "scores overstate accuracy on unseen text.", split.source, shared,
                            len(split), train.source)


def make_preprocessor(cfg):
    """The backbone's keras-hub preprocessor (tokenizer + packer) at --sequence_length."""
    return backbones.load_text_preprocessor(cfg.backbone, cfg.sequence_length)


def build_head(cfg, backbone, num_outputs):
    """Backbone + dropout + float32 logits on the pooled output (or the first token)."""
    inputs = backbone.input
    outputs = backbone(inputs)
    if isinstance(outputs, dict):
        pooled = outputs.get("pooled_output")
        if pooled is None:
            pooled = outputs["sequence_output"][:, 0, :]
    else:
        pooled = outputs[:, 0, :]
    logits = common.logits_head(pooled, cfg, num_outputs, "classifier")
    return keras.Model(inputs, logits, name="text_classifier")


def example_loss(labels, outputs):
    """Per-example cross-entropy of the logits; 0 for label id -1 (no label)."""
    known = labels >= 0
    losses = keras.losses.sparse_categorical_crossentropy(
        tf.where(known, labels, 0), outputs, from_logits=True)
    return tf.where(known, losses, 0.0)


def _examples(split, extra):
    """The split's raw examples: `text` (and `pair`) strings plus the `extra` per-example values."""
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


def _features(split, preprocessor, extra):
    """Tokenized, cached examples of `split` with the `extra` per-example values."""
    return pipelines.encoded(tf.data.Dataset.from_tensor_slices(_examples(split, extra)),
                             _encoder(preprocessor))


def label_ids(split, labels):
    """Class id of every example of `split`; -1 for examples without a label."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([-1 if label is None else index[label] for label in split.labels], np.int32)


def train_dataset(run, split, extras=None):
    """Endless, reshuffled-per-pass batches of (features, label ids), or of (features,
    {"labels": label ids, **extras}) with per-example `extras`; the run's text transforms
    (augmentation) may change texts and pairs every pass."""
    extras = dict(extras or {})
    examples = _examples(split, {"labels": label_ids(split, run.labels), **extras})
    texts = ("text",) if split.pairs is None else ("text", "pair")
    return common.training_batches(run, examples, _encoder(run.preprocessor),
                                   _pads(run.preprocessor), texts,
                                   split_labels=("labels", *extras), untrimmed=tuple(extras))


def _pads(preprocessor):
    return {"token_ids": preprocessor.tokenizer.pad_token_id}


@functools.lru_cache(maxsize=8)
def _prediction_batches(split, preprocessor, batch_size, sequence_length):
    """Tokenized, cached batches of (features, example index), built once per split."""
    features = _features(split, preprocessor, {"index": np.arange(len(split), dtype=np.int64)})
    return pipelines.batches(features, batch_size, sequence_length, _pads(preprocessor),
                             split_labels=("index",))


def probabilities(run, split):
    """Class probabilities for every example of `split`, in file order ([examples, labels])."""
    dataset = _prediction_batches(split, run.preprocessor, run.cfg.batch_size,
                                  run.cfg.sequence_length)
    result = np.zeros([len(split), run.model.output.shape[-1]], np.float32)
    for logits, index in inference.collect_outputs(run.model, dataset, run.strategy):
        result[index] = tf.nn.softmax(logits).numpy()
    return result


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


def served_probabilities(split, predict):
    """Class probabilities of a served classifier for every example of `split`
    (`predict("serving_default", {"text": [...], "text_pair": [...]})`)."""
    inputs = {"text": split.texts}
    if split.pairs is not None:
        inputs["text_pair"] = split.pairs
    return np.stack(predict("serving_default", inputs)).astype(np.float32)


def score_probabilities(split, probs, labels):
    """Accuracy (the score), macro F1 ... of class probabilities `probs` on `split`."""
    return _evaluation(split, probs.argmax(axis=-1), labels)


def evaluate(run, split):
    """Metrics of the model on `split`; the score is the accuracy."""
    return score_probabilities(split, probabilities(run, split), run.labels)


def _evaluation(split, predicted, labels):
    evaluation = classification_evaluation(label_ids(split, labels), predicted, labels,
                                           os.path.basename(split.source))
    records = [dict({"text": split.texts[i]}, **({"pair": split.pairs[i]} if split.pairs else {}),
                    label=split.labels[i], predicted=labels[int(p)])
               for i, p in enumerate(predicted)]
    return dataclasses.replace(evaluation, predictions=records)


def evaluate_saved_model(saved_model, split, labels):
    """Accuracy and the rest of `evaluate`'s metrics of an exported classifier, from the
    labels its `serving_default` signature gives the split's raw texts."""
    serve = saved_model.signatures["serving_default"]
    index = {label: i for i, label in enumerate(labels)}
    predicted = []
    for start in range(0, len(split), PREDICT_BATCH):
        inputs = {"text": tf.constant(split.texts[start:start + PREDICT_BATCH])}
        if split.pairs is not None:
            inputs["text_pair"] = tf.constant(split.pairs[start:start + PREDICT_BATCH])
        for label in serve(**inputs)["label"].numpy():
            label = label.decode()
            if label not in index:
                raise UserError(f"--saved_model predicts the label '{label}', which is not one "
                                f"of the run's labels ({', '.join(labels)}); give the --model_dir "
                                "of a run with the same labels.")
            predicted.append(index[label])
    return _evaluation(split, np.array(predicted, np.int64), labels)


def perturbed(split, change):
    """A copy of `split` whose texts and pairs are split at spaces into words, changed
    together by `change` and joined again with spaces."""
    texts = split.texts + (split.pairs or [])
    changed = [" ".join(words) for words in change([text.split() for text in texts], False)]
    pairs = None if split.pairs is None else changed[len(split):]
    return Split(f"{split.source} (perturbed)", changed[:len(split)], pairs, split.labels,
                 split.lines)


def predict(run, split):
    """One record per example: its label and the probability of each class."""
    labels = run.labels
    return [{"text": text, "label": labels[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {label: float(v) for label, v in zip(labels, p)}}
            for text, p in zip(split.texts, probabilities(run, split))]


class TextClassifierServer(ServingModule):
    """What TF Serving runs: raw strings in, labels and probabilities out.

    Tokenization runs inside the graph (TF Text ops); the label vocabulary is an
    asset file read into a lookup table.
    """

    def __init__(self, model, preprocessor, labels_file, pair):
        super().__init__(model=model)
        self.preprocessor = preprocessor
        self.labels_asset = tf.saved_model.Asset(labels_file)
        self.label_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
        spec = tf.TensorSpec([None], tf.string, name="text")
        if pair:
            pair_spec = tf.TensorSpec([None], tf.string, name="text_pair")
            self.serve = tf.function(lambda text, text_pair: self._classify((text, text_pair)),
                                     input_signature=[spec, pair_spec])
        else:
            self.serve = tf.function(lambda text: self._classify(text), input_signature=[spec])

    def serving_signatures(self):
        """Signature name -> tf.function, as saved in the SavedModel."""
        return dict(zip(SIGNATURES, (self.serve,)))

    def _classify(self, inputs):
        features = self.preprocessor(x=inputs)
        pad_id = self.preprocessor.tokenizer.pad_token_id
        longest = tf.reduce_max(tf.reduce_sum(
            tf.cast(features["token_ids"] != pad_id, tf.int32), axis=1))
        longest = lengths.served_length(longest, self.preprocessor.sequence_length)
        features = {k: v[:, :longest] for k, v in features.items()}
        logits = tf.cast(self.model(features, training=False), tf.float32)
        probs = tf.nn.softmax(logits, axis=-1)
        class_id = tf.argmax(probs, axis=-1, output_type=tf.int64)
        return {"label": self.label_table.lookup(class_id), "class_id": class_id,
                "probabilities": probs}


def serving_module(run, labels_file):
    """The tf.Module to save: `serving_default` classifies raw strings."""
    return TextClassifierServer(run.model, run.preprocessor, labels_file,
                                pair=bool(run.cfg.text_pair_column))


def serving_examples(split):
    """Up to 32 real examples as `serving_default` inputs (text, and text_pair for pairs)."""
    n = min(common.SERVING_EXAMPLES, len(split))
    examples = {"text": split.texts[:n]}
    if split.pairs is not None:
        examples["text_pair"] = split.pairs[:n]
    return examples


def parity(run, examples):
    """`serving_default`'s inputs and the in-memory model's probabilities for them."""
    inputs = {name: tf.constant(values) for name, values in examples.items()}
    features = run.preprocessor(x=inputs["text"] if "text_pair" not in inputs
                                else (inputs["text"], inputs["text_pair"]))
    logits = tf.cast(run.model(features, training=False), tf.float32)
    return {"serving_default": (inputs, {"probabilities": tf.nn.softmax(logits, axis=-1).numpy()})}
