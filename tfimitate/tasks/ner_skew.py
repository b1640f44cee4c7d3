"""Train/serve skew of an NER model: its sentences re-split from raw text, and its served F1.

A tagger is trained on a file's words but served raw text, which the export
graph splits with `ner_words.split_words`. Two checks, on gold sentences
joined by single spaces (`tfimitate.data.conll.Sentence`):

* `word_match(sentences)`: the share of sentences the serving splitter gives
  back word for word, with the file words it cuts or merges;
* `served_f1(tag_text, sentences)`: micro P/R/F1 of the entity spans (type,
  byte start, byte end) the served model returns against the gold spans, where
  `tag_text` is any callable from raw texts (tf.string [B]) to the Tagger's
  output dict (`entity_type`, `entity_start`, `entity_end`; "" / -1 padded): a
  loaded SavedModel's signature, `Tagger(...).tag_text`, a gRPC client...

Example:
    loaded = tf.saved_model.load("saved_models/conll/1")
    serve = loaded.signatures["serving_default"]
    word_match(test.sentences).share                                # 0.99
    served_f1(lambda text: serve(text=text), test.sentences)["f1"]  # 0.77
"""

import collections
from typing import Counter, List, NamedTuple

import numpy as np
import tensorflow as tf

from tfimitate.tasks import ner_words

BATCH_SIZE = 64


def sentence_text(words):
    """The words joined by single spaces, and each word's byte start and end in it.

    Example:
        sentence_text(["Zürich", "!"])  # ("Zürich !", [0, 8], [7, 9])
    """
    starts, ends, position = [], [], 0
    for word in words:
        starts.append(position)
        position += len(word.encode("utf-8"))
        ends.append(position)
        position += 1
    return " ".join(words), starts, ends


class WordMatch(NamedTuple):
    share: float             # sentences split back word for word / sentences
    sentences: int
    mismatched: int
    cut: Counter             # file words the splitter did not return whole
    merged: Counter          # split words that join several file words (or part of them)
    examples: List[dict]     # the first mismatched sentences: text, file words, split words
    mismatched_indices: List[int]  # positions in `sentences` of those split differently


def word_match(sentences, split=ner_words.split_words, examples=5):
    """Re-splits the sentences joined by spaces with `split` and compares with their words.

    `split` maps tf.string [B] to (words, starts, ends) ragged tensors with byte
    offsets, as `ner_words.split_words` (the serving splitter) does.

    Example:
        word_match([Sentence(["U.S.", "troops"], ["B-LOC", "O"], [1, 2])]).share  # 1.0
    """
    texts = [sentence_text(s.words) for s in sentences]
    cut, merged, shown, indices = collections.Counter(), collections.Counter(), [], []
    for begin in range(0, len(texts), 1024):
        batch = texts[begin:begin + 1024]
        words, starts, ends = split(tf.constant([text for text, _, _ in batch]))
        for index, (text, gold_starts, gold_ends), split_words, split_starts, split_ends in zip(
                range(begin, begin + len(batch)), batch, words.to_list(), starts.to_list(),
                ends.to_list()):
            gold = set(zip(gold_starts, gold_ends))
            found = set(zip(split_starts, split_ends))
            if gold == found:
                continue
            indices.append(index)
            raw = text.encode("utf-8")
            cut.update(raw[a:b].decode("utf-8", "replace") for a, b in gold - found)
            merged.update(raw[a:b].decode("utf-8", "replace") for a, b in found - gold)
            if len(shown) < examples:
                shown.append({"text": text, "words": text.split(" "),
                              "split": [w.decode("utf-8", "replace") for w in split_words]})
    total = len(texts)
    return WordMatch((total - len(indices)) / total if total else 1.0, total, len(indices),
                     cut, merged, shown, indices)


def gold_spans(sentence):
    """The set of (type, byte start, byte end) entities of a Sentence, in its space-joined text.

    Entities are read from the tags as seqeval reads them (IOB2 or IOBES).

    Example:
        gold_spans(Sentence(["New", "York", "rocks"], ["B-LOC", "I-LOC", "O"], [1, 2, 3]))
        # {("LOC", 0, 8)}
    """
    from seqeval.metrics.sequence_labeling import get_entities

    _, starts, ends = sentence_text(sentence.words)
    return {(kind, starts[first], ends[last]) for kind, first, last in get_entities(sentence.tags)}


def predicted_spans(outputs):
    """Per sentence, the set of (type, byte start, byte end) entities of a Tagger output dict."""
    kinds, starts, ends = (np.asarray(outputs[k]) for k in ("entity_type", "entity_start",
                                                             "entity_end"))
    return [{(kind.decode("utf-8"), int(start), int(end))
             for kind, start, end in zip(row_kinds, row_starts, row_ends) if kind}
            for row_kinds, row_starts, row_ends in zip(kinds, starts, ends)]


def span_scores(gold, predicted):
    """Micro and per-type precision/recall/F1 of predicted against gold span sets (per sentence).

    Example:
        span_scores([{("PER", 0, 5)}], [{("PER", 0, 5), ("LOC", 9, 14)}])["f1"]  # 0.667
    """
    counts = collections.defaultdict(lambda: np.zeros(3, np.int64))  # gold, predicted, correct
    for gold_set, predicted_set in zip(gold, predicted):
        for kind, _, _ in gold_set:
            counts[kind][0] += 1
        for kind, _, _ in predicted_set:
            counts[kind][1] += 1
        for kind, _, _ in gold_set & predicted_set:
            counts[kind][2] += 1
    total = sum(counts.values(), np.zeros(3, np.int64))
    result = _prf(total)
    result["per_type"] = {kind: _prf(counts[kind]) for kind in sorted(counts)}
    return result


def _prf(counts):
    gold, predicted, correct = (int(c) for c in counts)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold": gold,
            "predicted": predicted, "correct": correct}


def served_f1(tag_text, sentences, batch_size=BATCH_SIZE):
    """Entity span P/R/F1 of `tag_text` on the sentences joined by spaces (see module doc).

    Returns span_scores' dict plus `sentences`. Example:
        served_f1(Tagger(model, preprocessor).tag_text, split.sentences)["f1"]
    """
    predicted = []
    for begin in range(0, len(sentences), batch_size):
        texts = [sentence_text(s.words)[0] for s in sentences[begin:begin + batch_size]]
        predicted.extend(predicted_spans(tag_text(tf.constant(texts))))
    result = span_scores([gold_spans(s) for s in sentences], predicted)
    result["sentences"] = len(sentences)
    return result
