"""Few-shot classification (a technique): SetFit-style contrastive tuning, then the head.

`--few_shot_pairs=N` draws N pairs of labelled training texts (seeded by --seed): pass by
pass over the examples in a new order, each example is the anchor of one pair with a text
of its own class (similarity target 1) and one of another class (target 0). The model is
the task's classifier with its head on the backbone's mean-pooled token embeddings (the
embedding sentence-transformers models such as minilm_l6 were trained to give). Then:

    phase 1 (one pass over the pairs: ceil(N / --batch_size) steps, at --learning_rate)
        the whole backbone trains on (cos(embed(anchor), embed(partner)) - target)^2,
        the sentence-transformers CosineSimilarityLoss SetFit uses;
    phase 2 (the run's other steps, at --few_shot_head_learning_rate)
        the backbone is frozen and the head learns the anchors' labels (cross-entropy) on
        their embeddings in inference mode (no dropout in the backbone), the embeddings it
        will see when serving, as SetFit fits its head on the tuned model's encodings.

The export is an ordinary classifier (same serving_default, parity and warmup): only how
the weights were learned differs. The partner texts ride with their anchors as tokenized
extras (tasks/base.py train_dataset); which loss a step takes is settled when the loop
traces the step for a phase (Phase.prepare runs just before).

Example:
    python -m tfimitate.train --backbone=minilm_l6 --train_data=eight_per_class.tsv \
        --few_shot_pairs=640 --max_steps=60 --model_dir=runs/fewshot
"""

import math

import numpy as np
from absl import logging

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques.text_techniques import (PhasedTextTechnique, positive_rate,
                                                  text_classification_only, texts_in_memory)
from tfimitate.training.hooks import Examples, Phase

OPTIONS = (
    options.integer(
        "few_shot_pairs", 0,
        "If > 0, few-shot training (SetFit): this many seeded pairs of labelled texts (same "
        "class: close, different: far) tune the backbone's mean embedding with a cosine-"
        "similarity loss for one pass (ceil(N / --batch_size) steps), then the head trains on "
        "the frozen embeddings for the run's other steps. About 20-40 pairs per labelled "
        "example.", lower=0),
    options.number(
        "few_shot_head_learning_rate", 1e-2,
        "With --few_shot_pairs: peak learning rate of the head on the frozen embeddings "
        "(phase 2).", lower=0.0),
)
RESUME_FIELDS = ("few_shot_pairs", "few_shot_head_learning_rate")
# sentence-transformers' and SetFit's rate for the body: a pretrained sentence embedding is
# tuned, not re-learned, on a few hundred pairs.
RECIPE = (
    options.Recipe("learning_rate", 2e-5,
                   "few-shot contrastive tuning moves a pretrained sentence embedding gently "
                   "(SetFit's and sentence-transformers' body rate)"),
)
FLAG = "--few_shot_pairs"
# The per-example extras: the partner's tokenized features (prefixed) and the target.
PARTNER = "partner_"
TARGET = "pair_target"


def make_pairs(labels, count, seed, source="--train_data"):
    """`count` (anchor, partner, target) index pairs over examples with `labels`, seeded.

    Each pass visits every example in a new order and gives it one partner of its own class
    (target 1.0) and one of another class (0.0). Raises UserError for a class with a single
    example (no pair of its own) or a single class.

    Example:
        make_pairs(["neg", "neg", "pos", "pos"], 4, seed=42)
        # [(2, 3, 1.0), (2, 0, 0.0), (0, 1, 1.0), (0, 3, 0.0)]
    """
    labels = list(labels)
    by_class = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label, members in sorted(by_class.items(), key=lambda item: str(item[0])):
        if len(members) < 2:
            raise UserError(f"{FLAG}: class '{label}' of {source} has {len(members)} example; "
                            "a pair of its own needs at least two, so add an example of it or "
                            "drop the class.")
    if len(by_class) < 2:
        raise UserError(f"{FLAG}: {source} has one class; pairs of different classes need two.")
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        for anchor in rng.permutation(len(labels)):
            same = [i for i in by_class[labels[anchor]] if i != anchor]
            other = [i for i in range(len(labels)) if labels[i] != labels[anchor]]
            pairs.append((int(anchor), int(rng.choice(same)), 1.0))
            pairs.append((int(anchor), int(rng.choice(other)), 0.0))
    return pairs[:count]


def mean_embedding(sequence, mask):
    """The mean of `sequence` [batch, positions, width] over positions where `mask` is set
    (keras ops, so it works on symbolic and real tensors); float32 [batch, width]."""
    import keras

    sequence = keras.ops.cast(sequence, "float32")
    weights = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    return keras.ops.sum(sequence * weights, axis=1) / keras.ops.maximum(
        keras.ops.sum(weights, axis=1), 1.0)


def cosine_loss(anchors, partners, targets):
    """Per-pair (cos(anchor, partner) - target)^2 of float32 embeddings [batch, width]."""
    import tensorflow as tf

    cosine = tf.reduce_sum(tf.math.l2_normalize(anchors, -1) * tf.math.l2_normalize(partners, -1),
                           axis=-1)
    return tf.square(cosine - targets)


class FewShot(PhasedTextTechnique):
    """Contrastive tuning of the embedding, then the head (see the module)."""

    name, flag, order = "few_shot", FLAG, 25

    def __init__(self, pairs, head_learning_rate):
        self.pairs = pairs
        self.head_learning_rate = head_learning_rate
        self.embedder = None  # inputs -> mean embedding, sharing the model's weights
        self.head = None  # (embedding, training) -> logits: the model's own head layers
        self.contrastive = True  # the phase being traced

    def adapt_examples(self, examples, task, data, cfg):
        split = texts_in_memory(examples.split, FLAG, cfg)
        pairs = make_pairs(split.labels, self.pairs, cfg.seed, split.source)
        anchors = split.subset([a for a, _, _ in pairs], split.source)
        partners = [split.texts[p] for _, p, _ in pairs]
        preprocessor = task.make_preprocessor(cfg)
        features = {PARTNER + key: np.asarray(value)
                    for key, value in preprocessor(np.array(partners, dtype=object)).items()}
        positive = sum(target for _, _, target in pairs)
        logging.info("Few-shot: %d pairs (%d same-class, %d cross-class) of %d labelled "
                     "examples.", len(pairs), positive, len(pairs) - positive, len(split))
        return Examples(anchors, dict(examples.extras, **features,
                                      **{TARGET: np.array([t for _, _, t in pairs], np.float32)}))

    def adapt_model(self, model, cfg):
        """The classifier with its head on the backbone's mean embedding."""
        import keras

        from tfimitate.tasks import common
        from tfimitate.techniques import parts

        backbone = parts.require_backbone(model, FLAG, "to embed texts")
        inputs = backbone.input
        outputs = backbone(inputs)
        if not (isinstance(outputs, dict) and "sequence_output" in outputs
                and isinstance(inputs, dict) and "padding_mask" in inputs):
            raise UserError(f"{FLAG}: the backbone gives no token embeddings with a padding "
                            "mask to average; use a keras-hub text backbone.")
        embedding = mean_embedding(outputs["sequence_output"], inputs["padding_mask"])
        self.embedder = keras.Model(inputs, embedding, name="sentence_embedder")
        logits = common.logits_head(embedding, cfg, model.output.shape[-1], "classifier")
        classifier = keras.Model(inputs, logits, name=model.name)
        dropout, dense = (classifier.get_layer(name) for name in ("classifier_dropout", "logits"))
        self.head = lambda features, training: dense(dropout(features, training=training))
        return classifier

    def phases(self, cfg, total_steps):
        contrastive = contrastive_steps(self.pairs, cfg.batch_size)
        if total_steps <= contrastive:
            raise UserError(f"{FLAG}={self.pairs}: its pairs take {contrastive} steps of "
                            f"--batch_size={cfg.batch_size}, and the run has {total_steps}, so "
                            f"the head would never train; give more than {contrastive} steps "
                            "(--max_steps or --epochs) or fewer pairs.")
        return [Phase(0, cfg.learning_rate, self._tune_embedding),
                Phase(contrastive, self.head_learning_rate, self._train_head)]

    def _tune_embedding(self, model):
        from tfimitate.techniques import parts

        parts.require_backbone(model, FLAG, "to tune").trainable = True
        self.contrastive = True

    def _train_head(self, model):
        from tfimitate.techniques import parts

        parts.require_backbone(model, FLAG, "to freeze").trainable = False
        self.contrastive = False

    def wrap_loss(self, step_loss, run):
        def few_shot(model, inputs, labels):
            if not self.contrastive:  # phase 2: the head learns the anchors' labels
                return step_loss(self._head_on_served_embedding, inputs, labels["labels"])
            partner = {key[len(PARTNER):]: value for key, value in labels.items()
                       if key.startswith(PARTNER)}
            longest = _longest(partner["padding_mask"])
            partner = {key: value[:, :longest] for key, value in partner.items()}
            return cosine_loss(self.embedder(inputs, training=True),
                               self.embedder(partner, training=True), labels[TARGET])

        return few_shot

    def _head_on_served_embedding(self, inputs, training=False):
        """The classifier's logits, its frozen backbone in inference mode (no dropout)."""
        return self.head(self.embedder(inputs, training=False), training)


def _longest(mask):
    import tensorflow as tf

    return tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1))


def contrastive_steps(pairs, batch_size):
    """Phase 1's steps: one pass over the pairs."""
    return math.ceil(pairs / batch_size)


def from_config(cfg):
    """FewShot when --few_shot_pairs > 0 (on text classification), else None."""
    if not cfg.few_shot_pairs:
        return None
    text_classification_only(cfg, FLAG, "tunes a text classifier's sentence embedding")
    if cfg.text_pair_column:
        raise UserError(f"{FLAG} pairs single texts, but --text_pair_column="
                        f"{cfg.text_pair_column} makes each example a text pair; drop one of them.")
    return FewShot(cfg.few_shot_pairs, positive_rate(cfg, "few_shot_head_learning_rate"))
