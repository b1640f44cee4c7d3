"""Shared test helpers: tiny random backbones saved as keras-hub presets, data files, flags.

Example:
    preset = tiny_bert_preset(tmp_path)       # 2 layers, width 32, random weights
    preset = tiny_preset(tmp_path, "bpe")     # the same with a RoBERTa byte-level BPE tokenizer
    cfg = experiment(tmp_path, backbone=preset, train_data=write_tsv(tmp_path, rows))
"""

import os
import string

import tfimitate  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from tfimitate.config import Experiment

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

WORDS = ("the a an of and to is was it this that film movie good bad great awful "
         "boring fun funny love hate best worst story plot actor acting not very "
         "john smith paris london google germany eu european union said on in at "
         "by for with from new york city president company").split()


def tiny_vocabulary():
    """A small WordPiece vocabulary: special tokens, WORDS, characters and ##pieces."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + chars
              + ["##" + c for c in string.ascii_lowercase + string.digits])
    return list(dict.fromkeys(tokens))


def tiny_bert_preset(directory, sequence_length=128, dropout=0.1):
    """Saves a random 2-layer, 32-wide BERT + tokenizer as a keras-hub preset; returns its path."""
    import keras_hub

    path = os.path.join(str(directory), "tiny_bert" if dropout == 0.1 else f"tiny_bert_dropout{dropout}")
    if os.path.isdir(path):
        return path
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=tiny_vocabulary(), lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2,
        hidden_dim=32, intermediate_dim=64, max_sequence_length=sequence_length,
        dropout=dropout)
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path


def tokenizer_corpus():
    """Sentences to train tiny tokenizers on: WORDS, capitalised, with punctuation and digits."""
    words = list(WORDS) + [w.capitalize() for w in WORDS]
    return [" ".join(words[i:i + 9]) + " , 1996-08-22 ." for i in range(0, len(words), 3)]


def tiny_sentencepiece_proto(**ids):
    """A tiny SentencePiece BPE model (bytes); XLM-R's special ids unless `ids` override them.

    Example:
        keras_hub.models.XLMRobertaTokenizer(proto=tiny_sentencepiece_proto())
    """
    import io

    import sentencepiece

    model = io.BytesIO()
    options = dict(unk_id=0, bos_id=1, eos_id=2)
    options.update(ids)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=model, vocab_size=150,
        model_type="bpe", hard_vocab_limit=False, minloglevel=2, **options)
    return model.getvalue()


def tiny_byte_pair_vocabulary():
    """(vocabulary, merges) of a tiny byte-level BPE with RoBERTa's special tokens."""
    import json

    import tokenizers

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(tokenizer_corpus(), vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    return model["vocab"], [" ".join(merge) for merge in model["merges"]]


def tiny_preset(directory, family):
    """A random 2-layer, 32-wide preset whose tokenizer is of `family`; returns its path.

    `wordpiece`: BERT (tiny_bert_preset); `sentencepiece`: a BERT encoder with an XLM-R
    SentencePiece tokenizer (like multilingual-e5); `bpe`: RoBERTa with byte-level BPE.
    """
    import keras_hub

    if family == "wordpiece":
        return tiny_bert_preset(directory)
    path = os.path.join(str(directory), f"tiny_{family}")
    if os.path.isdir(path):
        return path
    if family == "sentencepiece":
        tokenizer = keras_hub.models.XLMRobertaTokenizer(proto=tiny_sentencepiece_proto())
        backbone_cls = keras_hub.models.BertBackbone
    else:
        vocabulary, merges = tiny_byte_pair_vocabulary()
        tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)
        backbone_cls = keras_hub.models.RobertaBackbone
    backbone = backbone_cls(vocabulary_size=tokenizer.vocabulary_size(), num_layers=2,
                            num_heads=2, hidden_dim=32, intermediate_dim=64,
                            max_sequence_length=128)
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path


def write_lines(directory, name, lines):
    """Writes `lines` to `<directory>/<name>` and returns the path."""
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_table(directory, name, rows):
    """Writes (text, label) rows as a CSV with a `text,label` header; returns the path."""
    return write_lines(directory, name, ["text,label"] + [f"{t},{l}" for t, l in rows])


def sentiment_rows(n, seed=0):
    """`n` (text, label) rows whose label a model can learn from the words."""
    import random

    rng = random.Random(seed)
    good, bad = ["good", "great", "fun", "best", "love"], ["bad", "awful", "boring", "worst", "hate"]
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(WORDS[:12], 3) + [rng.choice(good if label else bad)] + rng.sample(WORDS[:12], 2)
        rows.append((" ".join(words) + f" {i}", str(label)))
    return rows


def experiment(tmp_path, **overrides):
    """A small, fast Experiment in `tmp_path`; override any field. Precision is float32
    (not the default auto, which is bf16 on CPUs with bf16 units): tolerances of 1e-4
    between runs assume float32 round-off."""
    values = dict(model_dir=os.path.join(str(tmp_path), "run"), batch_size=8, max_steps=6,
                  sequence_length=32, checkpoint_steps=3, learning_rate=1e-3,
                  text_column="text", label_column="label", precision="float32")
    values.update(overrides)
    return Experiment(**values)


def weights_reached(phases, model, step_loss, inputs, labels):
    """{phase start: top-level names of the weights whose gradient one step of the phase
    reaches}, each phase prepared first; every loss must be finite.

    Example:
        reached = weights_reached(technique.phases(cfg, 3), model, step_loss, x, y)
        assert "logits" in reached[1]
    """
    import numpy as np
    import tensorflow as tf

    reached = {}
    for phase in phases:
        phase.prepare(model)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(step_loss(model, inputs, labels))
        gradients = tape.gradient(loss, model.trainable_variables)
        reached[phase.start] = {v.path.split("/")[0] for v, g in
                                zip(model.trainable_variables, gradients) if g is not None}
        assert np.isfinite(float(loss))
    return reached
