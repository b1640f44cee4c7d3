"""Token classification (NER): one tag per word, from CoNLL/JSONL files to TF Serving.

Data: CoNLL or JSONL sentences (`tfimitate.data.conll`), IOB2 or IOBES tags.
Alignment: the backbone's keras-hub tokenizer splits words into pieces in
tf.data; the first piece of a word carries its tag, other pieces and special
tokens are masked out (`tfimitate.data.word_pieces`), and long sentences are
cut into windows, so every word is tagged and scored. Model: a keras-hub
backbone, dropout and float32 per-piece logits. Metrics: seqeval entity-level
precision/recall/F1, micro and per type. Serving: `serving_default` takes raw
sentences (`text`) and returns words, tags, scores and entity spans with byte
offsets; `tag_words` takes pre-split words.

Example:
    data = load_data(cfg)
    model = build_model(cfg, num_classes=len(data.labels))
"""

import dataclasses
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfimitate import backbones
from tfimitate.data import conll, pipelines, readers, splits
from tfimitate.data.word_pieces import backbone_windows
from tfimitate.errors import UserError
from tfimitate.serving.entities import entity_spans
from tfimitate.training import inference

NAME = "token_classification"
PARITY_EXAMPLES = 32
TOKENIZE_BATCH = 1024
PREDICT_BATCH = 64
# Words are split at whitespace and around every punctuation mark, as BERT's tokenizer does.
WORD_DELIMITERS = r"\s+|\p{P}|[[:punct:]]"
KEPT_DELIMITERS = r"\p{P}|[[:punct:]]"


@dataclasses.dataclass
class Split:
    """Sentences of one file, in file order; `texts` holds raw sentences to predict."""

    source: str
    sentences: List[conll.Sentence]
    texts: Optional[List[str]] = None

    def __len__(self):
        return len(self.texts if self.texts is not None else self.sentences)

    def subset(self, indices, source):
        return Split(source, [self.sentences[i] for i in indices])


class Preprocessor:
    """The word-piece windows of the backbone's tokenizer, plus the tag set."""

    def __init__(self, cfg):
        self.windows = backbone_windows(cfg.backbone, cfg.sequence_length)
        self.tokenizer = self.windows.tokenizer
        self.labels = tuple(cfg.labels or ())


def scheme(cfg, tags):
    """--tagging_scheme, or the scheme `tags` are written in when it is auto."""
    return conll.detect_scheme(tags) if cfg.tagging_scheme == "auto" else cfg.tagging_scheme


def read_split(path, cfg, flag):
    """Reads a CoNLL/JSONL file; I- tags that start an entity become B- (warned)."""
    sentences = conll.read_sentences(path, flag)
    tags = cfg.labels or [tag for s in sentences for tag in s.tags]
    return Split(path, conll.repair(sentences, scheme(cfg, tags), path))


def check_labels(split, labels, flag, drop_unlisted):
    """Refuses (or with `drop_unlisted`, drops) sentences with a tag outside `labels`."""
    known = set(labels)
    keep = [i for i, s in enumerate(split.sentences) if known.issuperset(s.tags)]
    if len(keep) == len(split):
        return split
    if not drop_unlisted:
        sentence = split.sentences[next(i for i in range(len(split)) if i not in set(keep))]
        i = next(i for i, tag in enumerate(sentence.tags) if tag not in known)
        raise UserError(
            f"{split.source}:{sentence.lines[i]}: tag '{sentence.tags[i]}' is not among the "
            f"model's tags ({', '.join(labels)}), which come from the training data and "
            f"--labels; fix the tag in {flag}, or add its type to the training data.")
    logging.warning("%s: dropped %d sentences with a tag that is not in --labels.",
                    split.source, len(split) - len(keep))
    return split.subset(keep, split.source)


def read_inputs(path, cfg):
    """Sentences to tag: a .txt file (one raw sentence per line) or CoNLL/JSONL words."""
    if readers.base_suffix(path) != ".txt":
        return read_split(path, cfg, "--input")
    text = readers.read_text(readers.resolve_path(path, "--input"), "--input")
    texts = [line for line in text.split("\n") if line.strip()]
    if not texts:
        raise UserError(f"--input={path}: the file holds no text; give one sentence per line.")
    return Split(path, [], texts)


def tag_set(split, tagging_scheme):
    """O, then every prefix of the scheme for each entity type in `split`.

    Example:
        tag_set(Split("a", [conll.Sentence(["Paris"], ["B-LOC"], [1])]), "iob2")
        # ('O', 'B-LOC', 'I-LOC')
    """
    types = sorted({tag[2:] for s in split.sentences for tag in s.tags if tag != "O"})
    prefixes = "BIES" if tagging_scheme == "iobes" else "BI"
    return ("O",) + tuple(f"{p}-{kind}" for kind in types for p in prefixes)


def load_data(cfg):
    """Reads and checks train/eval/test data; holds out eval data if none is given."""
    train = read_split(cfg.train_data, cfg, "--train_data")
    labels = cfg.labels or tag_set(train, scheme(cfg, [t for s in train.sentences for t in s.tags]))
    for label in labels:
        if not conll.TAG_PATTERN.match(label):
            raise UserError(f"--labels: '{label}' is not O or B-/I-/E-/S-TYPE; fix the list.")
    train = check_labels(train, labels, "--train_data", cfg.drop_unlisted_labels)
    cfg = cfg.replace(labels=tuple(labels))
    train, evaluation, test = splits.eval_and_test(train, cfg, lambda path, flag: check_labels(
        read_split(path, cfg, flag), labels, flag, cfg.drop_unlisted_labels))
    return splits.Data(train, evaluation, test, tuple(labels))


def make_preprocessor(cfg):
    """Tokenizer, word-piece windows of --sequence_length and the tag set."""
    return Preprocessor(cfg)


def build_model(cfg, num_classes, load_weights=True):
    """Backbone + dropout + float32 logits per word piece. Call under `strategy.scope()`."""
    backbone = backbones.load_backbone(cfg.backbone, load_weights=load_weights)
    for layer in backbone.layers:
        if layer.name == "pooled_dense":  # a tagger never uses the pooled output: no gradient
            layer.trainable = False
    inputs = backbone.input
    outputs = backbone(inputs)
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    sequence = keras.layers.Dropout(cfg.dropout, name="tagger_dropout")(sequence)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(sequence)
    return keras.Model(inputs, logits, name="token_classifier")


def loss_fn(labels, logits):
    """Per-example mean cross-entropy over first pieces; labels are tag id + 1, 0 = ignored."""
    mask = tf.cast(labels > 0, tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(
        tf.maximum(labels - 1, 0), logits, from_logits=True)
    return tf.reduce_sum(losses * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)


def _windows(sentences, preprocessor, values):
    """Cached tf.data of word-piece windows, one element each, trimmed to its length.

    `values` maps a feature name to one int per word (flat, in order), put on
    the word's first piece.
    """
    lengths = [len(s.words) for s in sentences]
    words = tf.RaggedTensor.from_row_lengths(
        tf.constant([w for s in sentences for w in s.words], tf.string), lengths)
    ragged = {k: tf.RaggedTensor.from_row_lengths(tf.constant(v, tf.int64), lengths)
              for k, v in values.items()}

    def encode(index):
        return preprocessor.windows(
            tf.gather(words, index), {k: tf.gather(v, index).flat_values for k, v in ragged.items()})

    def trim(features):
        length = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32))
        return {k: v[:length] for k, v in features.items()}

    return (tf.data.Dataset.range(len(sentences)).batch(TOKENIZE_BATCH)
            .map(encode, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch().map(trim, num_parallel_calls=tf.data.AUTOTUNE).cache())


def tag_ids(split, labels):
    """Tag id + 1 of every word of `split`, flat (0 is kept for ignored pieces)."""
    index = {label: i + 1 for i, label in enumerate(labels)}
    return [index[tag] for s in split.sentences for tag in s.tags]


def train_dataset(split, preprocessor, cfg, labels, static_length=False):
    """Endless, reshuffled-per-pass batches of (features, per-piece labels)."""
    features = _windows(split.sentences, preprocessor, {"labels": tag_ids(split, labels)})
    return pipelines.batches(features, cfg.batch_size, preprocessor.tokenizer.pad_token_id,
                             cfg.sequence_length, shuffle_seed=cfg.seed, repeat=True,
                             static_length=static_length)


def word_probabilities(model, split, preprocessor, cfg, strategy):
    """Tag probabilities of every word of `split` (flat, file order), via its first piece."""
    total = sum(len(s.words) for s in split.sentences)
    features = _windows(split.sentences, preprocessor, {"word_ids": range(1, total + 1)})
    dataset = pipelines.batches(features, cfg.batch_size, preprocessor.tokenizer.pad_token_id,
                                cfg.sequence_length, split_labels=("word_ids",))
    result = np.zeros([total, model.output.shape[-1]], np.float32)
    for logits, word_ids in inference.collect_outputs(model, dataset, strategy):
        first = word_ids > 0
        result[word_ids[first] - 1] = tf.nn.softmax(logits[first]).numpy()
    return result


def _sentence_tags(probs, split, labels):
    tags, start = [], 0
    for sentence in split.sentences:
        ids = probs[start:start + len(sentence.words)].argmax(axis=-1)
        tags.append([labels[i] for i in ids])
        start += len(sentence.words)
    return tags


def entity_metrics(true, predicted):
    """seqeval entity-level micro P/R/F1, per-type scores and the printable report.

    Example:
        entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"]  # 1.0
    """
    from seqeval import metrics

    by_type = metrics.classification_report(true, predicted, output_dict=True, zero_division=0)
    return {
        "precision": float(metrics.precision_score(true, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(true, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(true, predicted, zero_division=0)),
        "per_type": {
            kind: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                   "f1": float(v["f1-score"]), "support": int(v["support"])}
            for kind, v in by_type.items() if not kind.endswith(" avg")},
        "sentences": len(true),
        "words": sum(len(tags) for tags in true),
        "report": metrics.classification_report(true, predicted, digits=4, zero_division=0),
    }


def evaluate(model, split, preprocessor, cfg, strategy, labels):
    """Entity-level metrics of `model` on `split`; `score` (micro F1) drives early stopping."""
    probs = word_probabilities(model, split, preprocessor, cfg, strategy)
    result = entity_metrics([s.tags for s in split.sentences], _sentence_tags(probs, split, labels))
    result["score"] = result["f1"]
    return result


class Tagger:
    """Words in, tags and entity spans out, in TF ops: the export graph and `predict`.

    Example:
        outputs = Tagger(model, preprocessor).tag_text(tf.constant(["Peter lives in Paris ."]))
        # outputs["tags"] [[b"B-PER", b"O", b"O", b"B-LOC", b"O"]], outputs["entity_start"] [[0, 15]]
    """

    def __init__(self, model, preprocessor):
        self.model = model
        self.windows = preprocessor.windows
        self.labels = tf.constant(preprocessor.labels)

    def _tag(self, words):
        flat_ids = tf.range(1, tf.size(words.flat_values, out_type=tf.int64) + 1)
        features = self.windows(words, {"word_ids": flat_ids})
        logits = self.model({k: features[k] for k in self.windows.input_names}, training=False)
        probs = tf.nn.softmax(tf.boolean_mask(tf.cast(logits, tf.float32), features["word_ids"] > 0))
        tags = words.with_flat_values(tf.gather(self.labels, tf.argmax(probs, axis=-1)))
        return tags, words.with_flat_values(tf.reduce_max(probs, axis=-1))

    def tag_text(self, text):
        """Splits raw sentences (tf.string [B]) into words; entity offsets are bytes of `text`."""
        import tensorflow_text as tf_text

        words, starts, ends = tf_text.regex_split_with_offsets(text, WORD_DELIMITERS, KEPT_DELIMITERS)
        tags, scores = self._tag(words)
        spans = entity_spans(tags)
        start = tf.gather(starts.flat_values, spans.first)
        end = tf.gather(ends.flat_values, spans.last)
        entity_text = tf.strings.substr(tf.gather(text, spans.rows), start, end - start)
        return _outputs(words, tags, scores, spans, entity_text, start, end)

    def tag_words(self, words):
        """Tags pre-split words (tf.string [B, W], "" padded); entity offsets are word indices."""
        words = tf.RaggedTensor.from_tensor(words, padding="").with_row_splits_dtype(tf.int64)
        tags, scores = self._tag(words)
        spans = entity_spans(tags)
        row_start = tf.gather(words.row_splits, spans.rows)
        entity_words = tf.gather(words.flat_values, tf.ragged.range(spans.first, spans.last + 1))
        entity_text = tf.strings.reduce_join(entity_words, axis=-1, separator=" ")
        return _outputs(words, tags, scores, spans, entity_text, spans.first - row_start,
                        spans.last + 1 - row_start)


def _outputs(words, tags, scores, spans, entity_text, start, end):
    per_entity = lambda values, pad: tf.RaggedTensor.from_value_rowids(
        values, spans.rows, nrows=words.nrows()).to_tensor(pad)
    return {
        "words": words.to_tensor(""), "tags": tags.to_tensor(""), "scores": scores.to_tensor(0.0),
        "entity_text": per_entity(entity_text, ""), "entity_type": per_entity(spans.types, ""),
        "entity_start": per_entity(tf.cast(start, tf.int64), -1),
        "entity_end": per_entity(tf.cast(end, tf.int64), -1),
    }


def predict(model, split, preprocessor, cfg, strategy, labels):
    """One record per sentence: words, tags, per-word scores and entities."""
    del cfg, strategy, labels  # the Tagger holds what it needs and runs on the default device
    tagger = Tagger(model, preprocessor)
    if split.texts is not None:
        run, inputs, key = tf.function(tagger.tag_text), split.texts, "text"
    else:
        run, inputs, key = tf.function(tagger.tag_words), [s.words for s in split.sentences], "words"
    records = []
    for start in range(0, len(inputs), PREDICT_BATCH):
        batch = inputs[start:start + PREDICT_BATCH]
        tensor = tf.constant(batch) if key == "text" else tf.ragged.constant(batch).to_tensor("")
        outputs = {k: v.numpy() for k, v in run(tensor).items()}
        for i, item in enumerate(batch):
            records.append(_record(key, item, outputs, i))
    return records


def _record(key, item, outputs, i):
    n = int(np.sum(outputs["words"][i] != b""))
    entities = [{"text": text.decode(), "type": kind.decode(), "start": int(start), "end": int(end)}
                for text, kind, start, end in zip(outputs["entity_text"][i], outputs["entity_type"][i],
                                                  outputs["entity_start"][i], outputs["entity_end"][i])
                if kind]
    return {key: item, "words": [w.decode() for w in outputs["words"][i][:n]],
            "tags": [t.decode() for t in outputs["tags"][i][:n]],
            "scores": [round(float(s), 6) for s in outputs["scores"][i][:n]],
            "entities": entities}


class TokenTaggerServer(tf.Module):
    """What TF Serving runs: `serving_default` on raw sentences, `tag_words` on split words."""

    def __init__(self, model, preprocessor, labels_file):
        super().__init__()
        self.model = model
        self.tokenizer = preprocessor.tokenizer
        self.labels_asset = tf.saved_model.Asset(labels_file)  # ships labels.txt with the model
        tagger = Tagger(model, preprocessor)
        self.serve = tf.function(tagger.tag_text, input_signature=[
            tf.TensorSpec([None], tf.string, name="text")])
        self.tag_words = tf.function(tagger.tag_words, input_signature=[
            tf.TensorSpec([None, None], tf.string, name="words")])

    def extra_signatures(self):
        """Signatures saved besides `serving_default`."""
        return {"tag_words": self.tag_words}


def serving_module(model, preprocessor, labels_file, cfg):
    """The tf.Module to save; `serve` becomes `serving_default`, plus `tag_words`."""
    del cfg
    return TokenTaggerServer(model, preprocessor, labels_file)


def parity_inputs(split):
    """Up to 32 real sentences (words joined by spaces) as the signature's `text`."""
    sentences = split.sentences[:PARITY_EXAMPLES]
    return {"text": tf.constant([" ".join(s.words) for s in sentences])}


def keras_outputs(model, preprocessor, inputs):
    """The in-memory model's outputs for `parity_inputs`, run eagerly."""
    outputs = Tagger(model, preprocessor).tag_text(inputs["text"])
    return {k: v.numpy() for k, v in outputs.items()}
