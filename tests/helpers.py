"""Shared test helpers: tiny random backbones saved as keras-hub presets, data files, flags.

Example:
    preset = tiny_bert_preset(tmp_path)       # 2 layers, width 32, random weights
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
    """A small, fast Experiment in `tmp_path`; override any field."""
    values = dict(model_dir=os.path.join(str(tmp_path), "run"), batch_size=8, max_steps=6,
                  sequence_length=32, checkpoint_steps=3, learning_rate=1e-3,
                  text_column="text", label_column="label")
    values.update(overrides)
    return Experiment(**values)
