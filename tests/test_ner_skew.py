"""Train/serve skew checks of NER: word match of re-split sentences and served span F1."""

import numpy as np
import pytest

import tfimitate  # noqa: F401
import keras
import tensorflow as tf

from helpers import experiment, tiny_bert_preset
from tfimitate.data.conll import Sentence
from tfimitate.tasks import ner_skew


def sentence(pairs):
    """A Sentence from "word/TAG" items."""
    words, tags = zip(*(item.rsplit("/", 1) for item in pairs.split()))
    return Sentence(list(words), list(tags), list(range(1, len(words) + 1)))


def test_sentence_text_offsets_are_bytes():
    assert ner_skew.sentence_text(["Z\u00fcrich", "!", "ok"]) == ("Z\u00fcrich ! ok", [0, 8, 10],
                                                                 [7, 9, 12])


def test_word_match_counts_sentences_and_names_cut_and_merged_words():
    sentences = [sentence("U.S./B-LOC troops/O did/O n't/O go/O ./O"),
                 sentence("Acme/B-ORG Corp/I-ORG ./O"),
                 sentence("Paris./B-LOC is/O nice/O"),
                 sentence("New/B-LOC York-based/O ...I/O")]
    result = ner_skew.word_match(sentences, examples=1)
    assert (result.sentences, result.mismatched, result.share) == (4, 2, 0.5)
    assert result.cut == {"Paris.": 1, "...I": 1}
    assert result.merged == {"Paris": 1, ".": 1, "...": 1, "I": 1}
    assert result.examples == [{"text": "Paris. is nice", "words": ["Paris.", "is", "nice"],
                                "split": ["Paris", ".", "is", "nice"]}]


def test_word_match_takes_any_splitter():
    def whitespace(text):
        import tensorflow_text as tf_text

        return tf_text.regex_split_with_offsets(text, r"\s+")

    sentences = [sentence("Paris./B-LOC is/O nice/O"), sentence("a/O b/O")]
    assert ner_skew.word_match(sentences, split=whitespace).share == 1.0
    assert ner_skew.word_match([]).share == 1.0


def test_gold_spans_are_byte_offsets_in_the_joined_text():
    iob2 = sentence("K\u00f6ln/B-LOC and/O New/B-LOC York/I-LOC City/I-LOC beat/O Bayern/B-ORG")
    assert ner_skew.gold_spans(iob2) == {("LOC", 0, 5), ("LOC", 10, 23), ("ORG", 29, 35)}
    iobes = sentence("the/O S\u00e3o/B-LOC Paulo/E-LOC FC/S-ORG")
    assert ner_skew.gold_spans(iobes) == {("LOC", 4, 14), ("ORG", 15, 17)}


def test_span_scores_micro_and_per_type():
    gold = [{("PER", 0, 5), ("LOC", 9, 14)}, {("ORG", 0, 3)}, set()]
    predicted = [{("PER", 0, 5), ("LOC", 9, 13)}, {("ORG", 0, 3)}, {("PER", 2, 4)}]
    result = ner_skew.span_scores(gold, predicted)
    assert (result["gold"], result["predicted"], result["correct"]) == (3, 4, 2)
    assert result["precision"] == 0.5 and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(4 / 7)
    assert result["per_type"]["LOC"]["f1"] == 0.0 and result["per_type"]["ORG"]["f1"] == 1.0
    assert result["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                         "gold": 1, "predicted": 2, "correct": 1}
    assert ner_skew.span_scores([set()], [set()])["f1"] == 0.0


def test_served_f1_reads_padded_tagger_outputs_in_batches():
    sentences = [sentence("Peter/B-PER lives/O in/O Paris/B-LOC"), sentence("no/O entity/O"),
                 sentence("Acme/B-ORG Inc./I-ORG rose/O")]
    answers = {"Peter lives in Paris": [("PER", 0, 5), ("LOC", 15, 20)], "no entity": [],
               "Acme Inc. rose": [("ORG", 0, 4)]}
    calls = []

    def tag_text(text):
        texts = [t.decode() for t in text.numpy()]
        calls.append(len(texts))
        width = max(1, max(len(answers[t]) for t in texts))
        pad = lambda row, value: row + [value] * (width - len(row))
        return {"entity_type": tf.constant([pad([k for k, _, _ in answers[t]], "") for t in texts]),
                "entity_start": tf.constant([pad([s for _, s, _ in answers[t]], -1) for t in texts],
                                            tf.int64),
                "entity_end": tf.constant([pad([e for _, _, e in answers[t]], -1) for t in texts],
                                          tf.int64)}

    result = ner_skew.served_f1(tag_text, sentences, batch_size=2)
    assert calls == [2, 1]
    assert (result["gold"], result["predicted"], result["correct"]) == (3, 3, 2)
    assert result["f1"] == pytest.approx(2 / 3) and result["sentences"] == 3


def tiny_tagger_run(tmp_path, seed):
    """A Run of an untrained tiny tagger over PER/LOC/ORG tags."""
    from tfimitate import runs
    from tfimitate.tasks import base
    from tfimitate.tasks.token_classification import TokenClassification

    task = TokenClassification()
    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
    cfg = experiment(tmp_path, task="token_classification", backbone=tiny_bert_preset(tmp_path),
                     labels=labels, sequence_length=32)
    keras.utils.set_random_seed(seed)
    model = runs.build_model(task, cfg, len(labels), [])
    return base.Run(cfg, model, task.make_preprocessor(cfg), tf.distribute.get_strategy())


def test_served_f1_equals_in_framework_f1_when_every_word_survives_splitting(tmp_path):
    """The raw-text Tagger of the export graph, scored on spans, agrees with seqeval on words."""
    from tfimitate.tasks.tagger import Tagger
    from tfimitate.tasks.token_classification import Split, TokenClassification

    rows = ["john/B-PER smith/I-PER 's/O company/O ,/O google/B-ORG ,/O said/O n't/O ./O",
            "the/O u.s./B-LOC and/O the/O eu/B-ORG met/O on/O 1996-12-06/O in/O paris/B-LOC ./O",
            "1./O new/B-LOC york/I-LOC city/I-LOC (/O 3-1/O )/O --/O london/B-LOC 's/O 1/2/O",
            "@john/O loves/O #paris/O at/O 10:30/O with/O european/B-ORG union/I-ORG Inc./I-ORG"]
    sentences = [sentence(row) for row in rows] * 4
    assert ner_skew.word_match(sentences).share == 1.0
    run = tiny_tagger_run(tmp_path, seed=1)
    expected = TokenClassification().evaluate(run, Split("sample", sentences)).metrics
    tag_text = tf.function(Tagger(run.model, run.preprocessor).tag_text,
                           input_signature=[tf.TensorSpec([None], tf.string)])
    served = ner_skew.served_f1(tag_text, sentences, batch_size=6)
    assert served["predicted"] > 0 and served["gold"] == 32
    assert np.isclose(served["f1"], expected["f1"]), (served, expected)
    assert np.isclose(served["precision"], expected["precision"])
    assert np.isclose(served["recall"], expected["recall"])


def test_evaluation_reports_the_served_skew_as_the_full_raw_text_path_measures_it(tmp_path):
    """evaluate() serves only re-split sentences through tag_text; its served F1 must equal
    scoring every sentence through tag_text."""
    from tfimitate.tasks.tagger import Tagger
    from tfimitate.tasks.token_classification import Split, TokenClassification

    rows = ["john/B-PER smith,jr/I-PER said/O in/O paris/B-LOC",   # "smith,jr" is re-split
            "the/O eu/B-ORG met/O in/O london/B-LOC ./O",
            "john/B-PER said/O it,ok/O in/O new/B-LOC york/I-LOC"]  # "it,ok" is re-split
    sentences = [sentence(row) for row in rows] * 3
    run = tiny_tagger_run(tmp_path, seed=2)
    metrics = TokenClassification().evaluate(run, Split("sample", sentences)).metrics
    served = ner_skew.served_f1(Tagger(run.model, run.preprocessor).tag_text, sentences)
    assert metrics["served_word_match"] == pytest.approx(1 / 3)
    assert metrics["served_f1"] == pytest.approx(served["f1"])
