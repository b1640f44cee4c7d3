"""Word-piece alignment for every tokenizer family keras-hub offers for encoders.

WordPiece (BERT), SentencePiece (XLM-R, ALBERT, and the real cased multilingual-e5),
byte-level BPE (RoBERTa, with and without its prefix space): words tokenized one at
a time split as the sentence does, each word's first piece carries its value, and
the tokenizer's own special tokens frame every window.
"""

import os

import numpy as np
import pytest

from helpers import (tiny_byte_pair_vocabulary, tiny_preset, tiny_sentencepiece_proto,
                     tiny_vocabulary)

E5 = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models",
                                   "multilingual_e5_small_cased"))
# The real e5 tokenizer comes from ../shared beside the repository; without it, skipped.
TOKENIZERS = ("bert", "xlm_roberta", "albert",
              pytest.param("e5", marks=pytest.mark.skipif(not os.path.isdir(E5), reason=f"{E5} is not here")),
              "roberta", "roberta_prefix_space")
MARKERS = {"bert": "##", "xlm_roberta": "\u2581", "albert": "\u2581", "e5": "\u2581",
           "roberta": "\u0120", "roberta_prefix_space": "\u0120"}
SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    [],
    ["BRUSSELS", "1996-08-22"],
    ["The", "European", "Commission", "said", "on", "Thursday", "it", "disagreed", "with",
     "German", "advice", ",", "U.S.", "officials", "'s", "(", "Reuters", ")", "Zürich", "naïve"],
]


def make_tokenizer(name):
    import keras_hub
    from tfimitate import backbones

    if name == "bert":
        return keras_hub.models.BertTokenizer(vocabulary=tiny_vocabulary(), lowercase=True)
    if name == "xlm_roberta":
        return keras_hub.models.XLMRobertaTokenizer(proto=tiny_sentencepiece_proto())
    if name == "albert":
        return keras_hub.models.AlbertTokenizer(proto=tiny_sentencepiece_proto(
            pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>",
            bos_piece="[CLS]", eos_piece="[SEP]", user_defined_symbols="[MASK]"))
    if name == "e5":
        return backbones.load_tokenizer(E5)
    vocabulary, merges = tiny_byte_pair_vocabulary()
    return keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges,
                                             add_prefix_space=name == "roberta_prefix_space")


@pytest.fixture(scope="module")
def windows_of():
    """WordPieceWindows of 6 pieces per window, one per tokenizer (each traces once)."""
    from tfimitate.data.word_pieces import WordPieceWindows

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = WordPieceWindows(make_tokenizer(name), sequence_length=8)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    directory = tmp_path_factory.mktemp("presets")
    return lambda family: tiny_preset(directory, family)


def ragged(sentences):
    import tensorflow as tf

    return tf.ragged.constant(sentences, dtype=tf.string, ragged_rank=1)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_words_one_at_a_time_split_like_the_sentence(name, windows_of):
    import tensorflow as tf

    windows = windows_of(name)
    tokenizer = windows.tokenizer
    sentences = [s for s in SENTENCES if s]
    pieces = windows.word_pieces(ragged(sentences)).to_list()
    whole = tf.function(lambda text: tokenizer(text))(
        tf.constant([" ".join(s) for s in sentences])).to_list()
    start = 0
    for sentence, expected in zip(sentences, whole):
        words = pieces[start:start + len(sentence)]
        start += len(sentence)
        assert [p for word in words for p in word] == expected, sentence
        # The family's word-start marker sits on first pieces only.
        tokens = [[tokenizer.id_to_token(i) for i in word] for word in words]
        unknown = tokenizer.id_to_token(windows.unk_id)
        marker = MARKERS[name]
        if name == "bert":  # its ## marks continuations (punctuation splits a word too)
            assert not any(w[0].startswith(marker) for w in tokens)
        else:
            first = tokens if name != "roberta" else tokens[1:]  # RoBERTa's first word has no Ġ
            assert all(w[0].startswith(marker) or w[0] == unknown for w in first), tokens
            assert not any(t.startswith(marker) for w in tokens for t in w[1:]), tokens


@pytest.mark.parametrize("name", TOKENIZERS)
def test_first_piece_carries_the_value_in_windows_framed_by_the_tokenizers_own_tokens(
        name, windows_of):
    import tensorflow as tf

    windows = windows_of(name)
    tokenizer = windows.tokenizer
    sentences = SENTENCES + [["", "Peter", "\u200b"]]  # words that may yield no piece
    total = sum(map(len, sentences))
    values = tf.range(1, total + 1, dtype=tf.int64)
    features = {k: v.numpy() for k, v in windows(ragged(sentences), {"word": values}).items()}
    assert set(features) == {"token_ids", "segment_ids", "padding_mask", "word"}
    start_id, end_id, pad_id, unk_id = windows.start_id, windows.end_id, windows.pad_id, windows.unk_id
    assert (start_id, end_id) == ((tokenizer.cls_token_id, tokenizer.sep_token_id)
                                  if name in ("bert", "albert") else (0, 2))

    expected_ids, expected_words = [], []
    pieces = windows.word_pieces(ragged(sentences)).to_list()
    number = 0
    for sentence in sentences:
        flat = []
        for _ in sentence:
            word = pieces[number] or [unk_id]
            number += 1
            flat += [(p, number if j == 0 else 0) for j, p in enumerate(word)]
        for i in range(0, max(len(flat), 1), 6):
            chunk = flat[i:i + 6]
            expected_ids.append([start_id] + [p for p, _ in chunk] + [end_id])
            expected_words.append([0] + [v for _, v in chunk] + [0])
    if name != "roberta_prefix_space":  # with its prefix space, every word has a piece
        assert pieces[total - 3] == [unk_id]
    got_ids = [row[mask].tolist() for row, mask in zip(features["token_ids"], features["padding_mask"])]
    got_words = [row[mask].tolist() for row, mask in zip(features["word"], features["padding_mask"])]
    assert got_ids == expected_ids and got_words == expected_words
    assert (features["token_ids"][~features["padding_mask"]] == pad_id).all()
    assert sorted(features["word"][features["word"] > 0].tolist()) == list(range(1, total + 1))


def test_windows_return_only_the_inputs_the_backbone_takes(presets):
    from tfimitate.backbones import word_piece_windows

    assert set(word_piece_windows(presets("bpe"), 16).input_names) == {
        "token_ids", "padding_mask"}
    assert set(word_piece_windows(presets("sentencepiece"), 16).input_names) == {
        "token_ids", "segment_ids", "padding_mask"}


def test_tokenizers_that_cannot_be_aligned_are_one_sentence_errors():
    import keras_hub
    from tfimitate.data.word_pieces import WordPieceWindows
    from tfimitate.errors import UserError

    with pytest.raises(UserError, match=r"--backbone: its tokenizer \(ByteTokenizer\) is not "
                                        "WordPiece, SentencePiece or byte-level BPE"):
        WordPieceWindows(keras_hub.tokenizers.ByteTokenizer(), sequence_length=16)
    vocabulary, merges = tiny_byte_pair_vocabulary()
    vocabulary = {t: i for i, t in enumerate(t for t in vocabulary if t != "<unk>")}
    gpt2 = keras_hub.models.GPT2Tokenizer(vocabulary={**vocabulary, "<|endoftext|>": len(vocabulary)},
                                          merges=merges)
    with pytest.raises(UserError, match=r"--backbone: its tokenizer \(GPT2Tokenizer\) has no "
                                        "unknown token, which aligning words"):
        WordPieceWindows(gpt2, sequence_length=16)


@pytest.mark.slow  # about a minute: tracing keras-hub's BPE graph costs seconds each time
def test_ner_trains_exports_and_serves_a_byte_pair_roberta(presets, tmp_path):
    """RoBERTa takes no segment_ids; SentencePiece runs end to end in the e5 test below."""
    import tensorflow as tf
    from tfimitate import workflow

    from helpers import experiment, write_lines

    words = "Peter Blackburn lives in Paris and works for Google in New York City .".split()
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "O", "B-ORG", "O", "B-LOC", "I-LOC",
            "I-LOC", "O"]
    lines = ([f"{w} {t}" for w, t in zip(words, tags)] + [""]) * 20
    data = write_lines(tmp_path, "train.txt", lines)
    cfg = experiment(tmp_path, task="token_classification", backbone=presets("bpe"),
                     train_data=data, eval_data=data, max_steps=2, checkpoint_steps=2,
                     export_dir=os.path.join(str(tmp_path), "export"))
    workflow.train(cfg)  # the export's parity check compares the reloaded graph with Keras
    loaded = tf.saved_model.load(os.path.join(cfg.export_dir, "1"))
    out = loaded.signatures["serving_default"](text=tf.constant([" ".join(words), "Zürich !"]))
    assert out["words"].numpy()[0].tolist() == [w.encode() for w in words]
    assert (out["tags"].numpy()[0] != b"").sum() == len(words)
    assert out["tags"].numpy()[1].tolist()[:2] != [b"", b""]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(E5), reason=f"{E5} is not here")
def test_cased_e5_ner_on_conll_trains_exports_and_reloads(tmp_path):
    """The real cased multilingual-e5 on a CoNLL-2003 sample: train, export, reload, tag."""
    import tensorflow as tf
    from tfimitate import workflow
    from tfimitate.config import Experiment

    from helpers import SHARED_DATA, experiment, write_lines

    conll = os.path.join(SHARED_DATA, "conll2003")
    lines = open(os.path.join(conll, "train.txt"), encoding="utf-8").read().splitlines()
    cut = [i for i, line in enumerate(lines) if not line.strip()][300]  # about 300 sentences
    cfg = experiment(tmp_path, task="token_classification", backbone=E5,
                     train_data=write_lines(tmp_path, "train.txt", lines[:cut]),
                     eval_data=write_lines(tmp_path, "dev.txt", lines[:cut][:2000]),
                     max_steps=12, batch_size=16, sequence_length=128, learning_rate=1e-4,
                     checkpoint_steps=12, export_dir=os.path.join(str(tmp_path), "export"))
    metrics = workflow.train(cfg)
    assert metrics["step"] == 12 and 0.0 <= metrics["f1"] <= 1.0
    loaded = tf.saved_model.load(os.path.join(cfg.export_dir, "1"))
    text = "Barack Obama visited Lisbon and Zürich with executives of Siemens ."
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        text=tf.constant([text])).items()}
    assert out["words"][0].tolist() == [w.encode() for w in text.split()]
    labels = Experiment.load(cfg.model_dir).labels
    assert all(t.decode() in labels for t in out["tags"][0])
    words = loaded.signatures["tag_words"](words=tf.constant([text.split()]))
    assert (words["tags"].numpy() == out["tags"]).all()
    assert np.isfinite(out["scores"]).all()
