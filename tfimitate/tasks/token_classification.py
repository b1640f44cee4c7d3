"""Token classification (NER): one tag per word, from CoNLL/JSONL files to TF Serving.

Data: CoNLL or JSONL sentences (`tfimitate.data.conll`; a data flag may name a file
pattern or a comma-separated list, read in memory and joined), or a TFDS split of words
and ClassLabel tags (`tfimitate.data.tfds_source`), IOB2 or IOBES tags.
Alignment: the backbone's keras-hub tokenizer splits words into pieces in
tf.data; the first piece of a word carries its tag, other pieces and special
tokens are masked out (`tfimitate.data.word_pieces`), and long sentences are
cut into windows, so every word is tagged and scored. Model: a keras-hub
backbone, dropout and float32 per-piece logits. Metrics: seqeval entity-level
precision/recall/F1, micro and per type. Serving: `serving_default` takes raw
sentences (`text`) and returns words, tags, scores and entity spans with byte
offsets; `tag_words` takes pre-split words. The tagging graph both run (and `predict`)
is tasks/tagger.py.

Example:
    task = TokenClassification()
    data = task.load_data(cfg)
    evaluation = task.evaluate(Run(cfg, model, task.make_preprocessor(cfg), strategy), data.eval)
"""

import dataclasses
import itertools
from typing import List, Optional

import numpy as np
from absl import logging

from tfimitate import backbones, options
from tfimitate.data import conll, readers, splits, streams, tfds_source
from tfimitate.errors import UserError
from tfimitate.outputs import SAVED_MODEL_ADVICE
from tfimitate.outputs import check as check_outputs
from tfimitate.tasks import base, common, side_features

PREDICT_BATCH = 64
# Served entity F1 this far below the in-framework F1 is worth a warning.
SKEW_WARNING = 0.005


@dataclasses.dataclass
class Split:
    """Sentences of one data flag (its files joined in order); `texts` holds raw
    sentences to predict.

    A sentence whose `tags` is None has no label (unlabelled training text, see
    `add_unlabeled`); its words are ignored by the tag loss. Each sentence names its own
    file (`Sentence.file`), so messages name the file and line, not the pattern.
    """

    source: str
    sentences: List[conll.Sentence]
    texts: Optional[List[str]] = None

    def __len__(self):
        return len(self.texts if self.texts is not None else self.sentences)

    def subset(self, indices, source):
        return Split(source, [self.sentences[i] for i in indices])

    def parts(self):
        """The split cut into runs of sentences of one file, each a Split named by its file.

        Example:
            [part.source for part in split.parts()]  # ["data/train-00.txt", "data/train-01.txt"]
        """
        runs = itertools.groupby(self.sentences, key=lambda s: s.file or self.source)
        return [Split(file, list(sentences)) for file, sentences in runs]


class Preprocessor:
    """The word-piece windows of the backbone's tokenizer, plus the tag set."""

    def __init__(self, cfg):
        self.windows = backbones.word_piece_windows(cfg.backbone, cfg.sequence_length)
        self.tokenizer = self.windows.tokenizer
        self.labels = tuple(cfg.labels or ())


class TokenClassification(base.Task):
    """Token classification: one tag per word (see the module)."""

    NAME = "token_classification"
    OPTIONS = (
        options.choice(
            "tagging_scheme", "auto", ["auto", "iob2", "iobes"],
            "token_classification: tag scheme of the data. auto: iobes if any tag starts "
            "with E- or S-, else iob2. I- tags that follow O (IOB1) become B- with a warning."),
    )
    RESUME_FIELDS = ("tagging_scheme",)
    # The packaged MiniLM-L6, 150 steps of 32, CoNLL-2003 test entity F1: 63.8 at 5e-5,
    # 77.2 at 1.5e-4, 77.6 at 4.5e-4 (benchmarks/results/defaults.md); a chosen --backbone
    # keeps 5e-5.
    RECIPE = (
        options.Recipe("learning_rate", 4.5e-4,
                       "the packaged MiniLM-L6 is small and its new per-word head learns "
                       "best at 9x BERT's rate",
                       unless=("backbone",)),
    )
    SIGNATURES = ("serving_default", "tag_words")  # what serving_module exports
    INPUTS = ("text", "word_pieces")

    def validate(self, cfg):
        """--labels, if given, must be tags: O or B-/I-/E-/S-TYPE; no side columns."""
        side_features.refuse(cfg, self.NAME, "tags each word of a sentence")
        for label in cfg.labels or ():
            if not conll.TAG_PATTERN.match(label):
                raise UserError(f"--labels: '{label}' is not O or B-/I-/E-/S-TYPE; fix the list.")

    def load_data(self, cfg):
        """Reads and checks train/eval/test data; holds out eval data if none is given. The tag
        set is --labels, the names of a TFDS ClassLabel --label_column, or the training tags."""
        cfg = cfg.replace(labels=cfg.labels or tfds_source.class_names(cfg))
        train = read_split(cfg.train_data, cfg, "--train_data")
        labels = cfg.labels or tag_set(train, scheme(cfg, [t for s in train.sentences for t in s.tags]))
        train = _check_labels(train, labels, "--train_data", cfg.drop_unlisted_labels)
        if not any(tag != "O" for s in train.sentences for tag in s.tags):
            raise UserError(
                f"--train_data={cfg.train_data}: every tag is O, so there is no entity to learn; "
                "check the tag column (the last one) and the file.")
        cfg = cfg.replace(labels=tuple(labels))
        train, evaluation, test = splits.eval_and_test(train, cfg, lambda path, flag: _check_labels(
            read_split(path, cfg, flag), labels, flag, cfg.drop_unlisted_labels))
        return splits.Data(train, evaluation, test, tuple(labels))

    def read_file(self, path, cfg, flag, with_labels=True):
        """A labelled CoNLL/JSONL file checked against the model's tags, or sentences to tag:
        a .txt file (one raw sentence per line) or CoNLL/JSONL words."""
        if with_labels:
            return _check_labels(read_split(path, cfg, flag), cfg.labels, flag, cfg.drop_unlisted_labels)
        text_files = _text_files(path, flag)
        if not text_files:
            return Split(path, read_sentences(path, cfg, flag, with_tags=False))
        return Split(path, [], [line for file in text_files
                                for _, line in common.read_text_lines(file, flag, "sentence")])

    def add_unlabeled(self, split, path, cfg, flag, column=None, exclude=()):
        """`split` plus untagged sentences of `path`: .txt files (one raw sentence per line,
        split into words as serving splits them) or CoNLL/JSONL words (`column` is not used);
        sentences already in `split` or an `exclude` split (ignoring case), and repeats, are
        dropped."""
        del column
        text_files = _text_files(path, flag)
        if text_files:
            import tensorflow as tf

            from tfimitate.tasks import ner_words

            lines = [(file, number, line) for file in text_files
                     for number, line in common.read_text_lines(file, flag, "sentence")]
            words = ner_words.split_words(tf.constant([line for *_, line in lines])).words.to_list()
            extra = [conll.Sentence([w.decode() for w in row], None, [number] * len(row), file)
                     for (file, number, _), row in zip(lines, words) if row]
        else:
            extra = [s._replace(tags=None) for s in read_sentences(path, cfg, flag, with_tags=False)]
        key = lambda sentence: tuple(word.lower() for word in sentence.words)
        seen = {key(s) for part in (split, *exclude) for s in part.sentences}
        keep = []
        for sentence in extra:
            if key(sentence) not in seen:
                seen.add(key(sentence))
                keep.append(sentence)
        if len(keep) < len(extra):
            logging.warning("%s: dropped %d unlabelled sentences that repeat a sentence of the "
                            "training, eval or test data (or of the file itself).", path,
                            len(extra) - len(keep))
        if not keep:
            raise UserError(f"{flag}={path}: every sentence is already in the training, eval or "
                            "test data; give other unlabelled text.")
        return Split(f"{split.source} + {path} (unlabelled)", split.sentences + keep)

    def make_preprocessor(self, cfg):
        """Tokenizer, word-piece windows of --sequence_length and the tag set."""
        return Preprocessor(cfg)

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + dropout + float32 logits per word piece."""
        import keras

        for layer in backbone.layers:
            if layer.name == "pooled_dense":  # a tagger never uses the pooled output: no gradient
                layer.trainable = False
        inputs = backbone.input
        outputs = backbone(inputs)
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        logits = common.logits_head(sequence, cfg, num_outputs, "tagger")
        return keras.Model(inputs, logits, name="token_classifier")

    def example_loss(self, labels, outputs):
        """Per-example mean cross-entropy over first pieces; labels are tag id + 1, 0 = ignored."""
        import keras
        import tensorflow as tf

        mask = tf.cast(labels > 0, tf.float32)
        losses = keras.losses.sparse_categorical_crossentropy(
            tf.maximum(labels - 1, 0), outputs, from_logits=True)
        return tf.reduce_sum(losses * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)

    def train_dataset(self, run, split, extras=None):
        """Endless, reshuffled-per-pass batches of (features, per-piece labels), or of
        (features, {"labels": ..., **extras}) with per-word `extras` put on first pieces; the
        run's text transforms (augmentation) may change words every pass, never their number."""
        extras = dict(extras or {})
        examples = _examples(split.sentences, {"labels": tag_ids(split, run.labels), **extras})
        return common.training_batches(run, examples, _encoder(run.preprocessor),
                                       _pads(run.preprocessor), texts=("words",),
                                       keep_word_count=True, split_labels=("labels", *extras))

    def probabilities(self, run, split):
        """Tag probabilities of every word of `split` ([words, tags], flat, file order), via
        its first piece."""
        import tensorflow as tf

        from tfimitate.data import pipelines
        from tfimitate.tasks import inference

        total = sum(len(s.words) for s in split.sentences)
        features = _windows(split.sentences, run.preprocessor, {"word_ids": range(1, total + 1)})
        dataset = pipelines.batches(features, run.cfg.batch_size, run.cfg.sequence_length,
                                    _pads(run.preprocessor), split_labels=("word_ids",))
        result = np.zeros([total, run.model.output.shape[-1]], np.float32)
        for logits, word_ids in inference.collect_outputs(run.model, dataset, run.strategy):
            first = word_ids > 0
            result[word_ids[first] - 1] = tf.nn.softmax(logits[first]).numpy()
        return result

    def served_probabilities(self, split, predict):
        """Tag probabilities of a served tagger for every word of `split` ([words, tags]),
        from its `tag_words` signature (per sentence: [padded words, tags])."""
        rows = predict("tag_words", {"words": [s.words for s in split.sentences]})
        return np.concatenate([row[:len(s.words)] for row, s in zip(rows, split.sentences)]
                              ).astype(np.float32)

    def score_probabilities(self, split, probs, labels):
        """Entity-level metrics of per-word tag probabilities `probs` on `split`; the score
        is the micro F1."""
        metrics = entity_metrics([s.tags for s in split.sentences],
                                 _sentence_tags(probs, split, labels))
        report = metrics.pop("report")
        return base.Evaluation(metrics["f1"], metrics, report)

    def evaluate(self, run, split):
        """Entity-level metrics of the model on `split`; the score is the micro F1.

        Also what serving does to these sentences (`served_skew`): `served_word_match` and
        `served_f1`, with a warning when serving loses more than half a point of F1.
        """
        probs = self.probabilities(run, split)
        predicted = _sentence_tags(probs, split, run.labels)
        evaluation = self.score_probabilities(split, probs, run.labels)
        metrics, report = dict(evaluation.metrics), evaluation.report
        match, served = served_skew(run, split, predicted)
        metrics.update(served_word_match=match.share, served_f1=served["f1"])
        report += (f"\nServed from raw text (sentences joined by spaces): {match.share:.2%} split "
                   f"into the file's words; entity span F1 {served['f1']:.4f} "
                   f"(P {served['precision']:.4f}, R {served['recall']:.4f}).\n")
        if metrics["f1"] - served["f1"] > SKEW_WARNING:
            logging.warning(
                "%s: served from raw text, entity F1 drops from %.4f to %.4f: %d of %d sentences "
                "split into other words than the file's, e.g. %s", split.source, metrics["f1"],
                served["f1"], match.mismatched, match.sentences,
                "; ".join(f"{e['words']} -> {e['split']}" for e in match.examples[:3]))
        return base.Evaluation(metrics["f1"], metrics, report,
                               predictions=_records(split, predicted))

    def evaluate_saved_model(self, saved_model, split, labels):
        """Entity-level metrics of an exported tagger, from the tags its `tag_words` signature
        gives the split's words (so perturbed words stay aligned with the gold tags)."""
        import tensorflow as tf

        del labels  # seqeval compares tag strings
        tag = saved_model.signatures["tag_words"]
        predicted = []
        for start in range(0, len(split), PREDICT_BATCH):
            batch = [s.words for s in split.sentences[start:start + PREDICT_BATCH]]
            outputs = tag(words=tf.ragged.constant(batch).to_tensor(""))
            if "probabilities" in outputs:
                check_outputs(outputs["probabilities"].numpy(), "--saved_model",
                              SAVED_MODEL_ADVICE, names=range(start + 1, start + len(batch) + 1))
            tags = outputs["tags"].numpy()
            predicted += [[t.decode() for t in row[:len(words)]] for words, row in zip(batch, tags)]
        metrics = entity_metrics([s.tags for s in split.sentences], predicted)
        report = metrics.pop("report")
        return base.Evaluation(metrics["f1"], metrics, report, predictions=_records(split, predicted))

    def perturbed(self, split, change):
        """A copy of `split` whose sentences' words are `change`d, never their number."""
        words = change([s.words for s in split.sentences], True)
        if any(len(new) != len(s.words) for new, s in zip(words, split.sentences)):
            raise ValueError("a perturbation changed the number of words of a sentence")
        return Split(f"{split.source} (perturbed)",
                     [s._replace(words=list(new)) for s, new in zip(split.sentences, words)])

    def predict(self, run, split):
        """One record per sentence: words, tags, per-word scores and entities."""
        import tensorflow as tf

        from tfimitate.tasks.tagger import Tagger

        tagger = Tagger(run.model, run.preprocessor)  # runs on the default device
        if split.texts is not None:
            tag, inputs, key = tf.function(tagger.tag_text), split.texts, "text"
        else:
            tag, inputs, key = tf.function(tagger.tag_words), [s.words for s in split.sentences], "words"
        records = []
        for start in range(0, len(inputs), PREDICT_BATCH):
            batch = inputs[start:start + PREDICT_BATCH]
            tensor = tf.constant(batch) if key == "text" else tf.ragged.constant(batch).to_tensor("")
            outputs = {k: v.numpy() for k, v in tag(tensor).items()}
            for i, item in enumerate(batch):
                records.append(_record(key, item, outputs, i))
        return records

    def serving_module(self, run, labels_file):
        """The tf.Module to save: `serving_default` tags raw sentences, `tag_words` split words."""
        from tfimitate.tasks.tagger import TokenTaggerServer

        return TokenTaggerServer(run.model, run.preprocessor, self.serving_assets(labels_file))

    def serving_examples(self, split):
        """Up to 32 real sentences (words joined by spaces) as `serving_default`'s `text`."""
        return {"text": [" ".join(s.words) for s in split.sentences[:common.SERVING_EXAMPLES]]}

    def parity(self, run, examples):
        """Both signatures' inputs and the in-memory model's outputs for them, run eagerly."""
        import tensorflow as tf

        from tfimitate.tasks import ner_words
        from tfimitate.tasks.tagger import Tagger

        tagger = Tagger(run.model, run.preprocessor)
        text = tf.constant(examples["text"])
        words = {"words": ner_words.split_words(text).words.to_tensor("")}
        numpy = lambda outputs: {k: v.numpy() for k, v in outputs.items()}
        return {"serving_default": ({"text": text}, numpy(tagger.tag_text(text))),
                "tag_words": (words, numpy(tagger.tag_words(words["words"])))}


def scheme(cfg, tags):
    """--tagging_scheme, or the scheme `tags` are written in when it is auto."""
    return conll.detect_scheme(tags) if cfg.tagging_scheme == "auto" else cfg.tagging_scheme


def read_sentences(path, cfg, flag, with_tags=True):
    """conll.read_sentences of a file, or of a tfds: split (--text_column: words,
    --label_column: tags)."""
    return conll.read_sentences(path, flag, with_tags, (cfg.text_column, cfg.label_column),
                                cfg.tfds_data_dir)


def read_split(path, cfg, flag):
    """Reads a CoNLL/JSONL file or TFDS split; I- tags that start an entity become B- (warned)."""
    sentences = read_sentences(path, cfg, flag)
    tags = cfg.labels or [tag for s in sentences for tag in s.tags]
    return Split(path, conll.repair(sentences, scheme(cfg, tags), path))


def _text_files(spec, flag):
    """The files of `spec` if they are .txt files of raw sentences, else None (CoNLL,
    JSONL, tfds:); a mix of both is refused."""
    if tfds_source.is_tfds(spec):
        return None
    paths = streams.expand(spec, flag)
    text = [path for path in paths if readers.base_suffix(path) == ".txt"]
    if text and len(text) < len(paths):
        other = next(path for path in paths if readers.base_suffix(path) != ".txt")
        raise UserError(f"{flag}={spec} mixes .txt files of raw sentences ({text[0]}) with "
                        f"CoNLL/JSONL files ({other}); give files of one kind.")
    return text or None


def _check_labels(split, labels, flag, drop_unlisted):
    """Refuses (or with `drop_unlisted`, drops) sentences with a tag outside `labels`,
    file by file, so that the message names the sentence's own file and line."""
    known = set(labels)

    def checked(part):
        def first_unknown(i):
            sentence = part.sentences[i]
            return next(((line, tag) for line, tag in zip(sentence.lines, sentence.tags)
                         if tag not in known), None)

        return common.keep_known_labels(part, labels, flag, drop_unlisted, first_unknown, "tag",
                                        "add its type to the training data")

    parts = split.parts()
    kept = [checked(part) for part in parts]
    if all(len(a) == len(b) for a, b in zip(kept, parts)):
        return split
    return Split(split.source, [s for part in kept for s in part.sentences])


def tag_set(split, tagging_scheme):
    """O, then every prefix of the scheme for each entity type in `split`.

    Example:
        tag_set(Split("a", [conll.Sentence(["Paris"], ["B-LOC"], [1])]), "iob2")
        # ('O', 'B-LOC', 'I-LOC')
    """
    types = sorted({tag[2:] for s in split.sentences for tag in s.tags if tag != "O"})
    prefixes = "BIES" if tagging_scheme == "iobes" else "BI"
    return ("O",) + tuple(f"{p}-{kind}" for kind in types for p in prefixes)


def _examples(sentences, values):
    """Raw examples: each sentence's `words` and, per name of `values` (one int, or one
    float row, per word, flat, in order), its words' values, as ragged rows."""
    import tensorflow as tf

    lengths = [len(s.words) for s in sentences]
    rows = lambda flat, dtype: tf.RaggedTensor.from_row_lengths(tf.constant(flat, dtype), lengths)
    examples = {"words": rows([w for s in sentences for w in s.words], tf.string)}
    for name, flat in values.items():
        flat = np.asarray(flat)
        examples[name] = rows(flat, tf.float32 if flat.dtype.kind == "f" else tf.int64)
    return examples


def _encoder(preprocessor):
    """A ragged batch of examples -> word-piece windows, each value on its word's first piece."""
    def encode(batch):
        batch = dict(batch)
        words = batch.pop("words")
        return preprocessor.windows(words, {name: v.flat_values for name, v in batch.items()})

    return encode


def _windows(sentences, preprocessor, values):
    """Cached tf.data of word-piece windows, one element each, trimmed to its length."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    return pipelines.encoded(tf.data.Dataset.from_tensor_slices(_examples(sentences, values)),
                             _encoder(preprocessor))


def tag_ids(split, labels):
    """Tag id + 1 of every word of `split`, flat (0 for ignored pieces and untagged words)."""
    index = {label: i + 1 for i, label in enumerate(labels)}
    return [index[tag] if s.tags is not None else 0
            for s in split.sentences for tag in (s.tags or s.words)]


def _pads(preprocessor):
    return {"token_ids": preprocessor.tokenizer.pad_token_id}


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


def _records(split, predicted):
    return [{"words": s.words, "tags": s.tags, "predicted": tags}
            for s, tags in zip(split.sentences, predicted)]


def served_skew(run, split, predicted_tags):
    """(ner_skew.WordMatch, span scores) of serving `split`'s sentences as raw text.

    Sentences the serving splitter gives back word for word are served exactly as
    evaluated, so their spans come from `predicted_tags`; the others are run through
    the export graph's `Tagger.tag_text`. The span scores are ner_skew.span_scores'
    (type, byte start, byte end) P/R/F1 against the gold entities.
    """
    import tensorflow as tf

    from tfimitate.tasks import ner_skew
    from tfimitate.tasks.tagger import Tagger

    match = ner_skew.word_match(split.sentences)
    predicted = [ner_skew.gold_spans(sentence._replace(tags=tags))
                 for sentence, tags in zip(split.sentences, predicted_tags)]
    if match.mismatched_indices:
        tag_text = tf.function(Tagger(run.model, run.preprocessor).tag_text)
        for begin in range(0, match.mismatched, PREDICT_BATCH):
            indices = match.mismatched_indices[begin:begin + PREDICT_BATCH]
            texts = [ner_skew.sentence_text(split.sentences[i].words)[0] for i in indices]
            for i, spans in zip(indices, ner_skew.predicted_spans(tag_text(tf.constant(texts)))):
                predicted[i] = spans
    return match, ner_skew.span_scores([ner_skew.gold_spans(s) for s in split.sentences], predicted)


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
