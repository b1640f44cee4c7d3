"""Domain-adaptive pretraining (a technique): masked-LM steps on the target text first.

`--adapt_pretraining_steps=N` makes the run's first N steps (phase 1, at
`--adapt_pretraining_learning_rate`) masked-language-model training of the backbone on
`--unlabeled_data` and/or the training texts (`--adapt_pretraining_text`), then the usual
fine-tuning (phase 2, at --learning_rate) starts from the adapted encoder; --max_steps
counts both phases. The masked-LM head is keras-hub's, of the backbone's family
(`keras_hub.models.BertMaskedLM` ...: its `masked_lm_head`, tied to the backbone's token
embeddings): loaded from the backbone's keras-hub preset when that holds the task's
weights, else built fresh (the log says which). Its weights hang on the model, so
checkpoints hold them with the step (a run resumed in phase 1 goes on pretraining), and the
export drops them: it serves the classifier alone.

Masked batches come from keras-hub's `MaskedLMPreprocessor` (15% of the tokens: 80% [MASK],
10% random, 10% kept), riding in the labels of each training batch (`mlm_*`); which loss a
step takes is settled when the loop traces the step for a phase. Unlabelled texts that
repeat a training, eval or test text are dropped (tasks' `add_unlabeled`).

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg \
        --unlabeled_data=reviews.txt --adapt_pretraining_steps=500 --max_steps=1100
"""

import math

from absl import logging

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.techniques.text_techniques import (PhasedTextTechnique, positive_rate,
                                                  text_classification_only,
                                                  texts_in_memory, with_unlabeled)
from tfimitate.training.hooks import Phase

OPTIONS = (
    options.integer(
        "adapt_pretraining_steps", 0,
        "If > 0, domain-adaptive pretraining: the run's first N steps train the backbone "
        "as a masked language model on --adapt_pretraining_text, then it is fine-tuned "
        "(--max_steps counts both).", lower=0),
    options.choice(
        "adapt_pretraining_text", "both", ["both", "unlabeled", "train"],
        "Texts of the masked-LM steps: --unlabeled_data and the training texts (both; the "
        "training texts alone without --unlabeled_data), only --unlabeled_data, or only the "
        "training texts."),
    options.number(
        "adapt_pretraining_learning_rate", 1e-4,
        "Peak learning rate of the masked-LM steps (its own warmup and decay).", lower=0.0),
)
RESUME_FIELDS = ("adapt_pretraining_steps", "adapt_pretraining_text",
                 "adapt_pretraining_learning_rate", "unlabeled_data", "unlabeled_column")
FLAG = "--adapt_pretraining_steps"
MASK_RATE = 0.15
# The masked batch's parts in the labels (model inputs are MLM_INPUT + their name).
MLM_INPUT, MLM_TARGETS, MLM_WEIGHTS = "mlm_input_", "mlm_targets", "mlm_weights"
# The attribute of the model holding the masked-LM head (so checkpoints track it).
HEAD_ATTRIBUTE = "adapt_pretraining_head"


def masked_lm_class(backbone):
    """keras-hub's MaskedLM task class of `backbone`'s family (BertMaskedLM ...), or None."""
    import keras_hub as hub

    pending, found = [hub.models.MaskedLM], []
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if getattr(cls, "backbone_cls", None) is type(backbone):
            found.append(cls)
    return found[0] if found else None


def masked_lm_head(backbone, spec):
    """The masked-LM head of `backbone` (tied to its token embeddings), with the weights of
    the preset `spec`'s masked-LM task when it has them, else fresh; says which in the log."""
    import os

    from tfimitate import backbones

    cls = masked_lm_class(backbone)
    if cls is None:
        raise UserError(f"{FLAG}: keras-hub has no masked-LM model for the {type(backbone).__name__} "
                        f"of --backbone={spec}; choose a BERT-like backbone or drop {FLAG}.")
    task = cls(backbone=backbone, preprocessor=None)
    folder = backbones.resolve_backbone(spec)
    weights = os.path.join(folder, "task.weights.h5") if os.path.isdir(folder) else ""
    if weights and os.path.isfile(weights) and _task_class(folder) == cls.__name__:
        task.load_task_weights(weights)
        logging.info("%s: loaded the masked-LM head of --backbone=%s (%s).", FLAG, spec, weights)
    else:
        logging.info("%s: --backbone=%s holds no masked-LM head, so a fresh %s head tied to its "
                     "token embeddings is built.", FLAG, spec, cls.__name__)
    return task.masked_lm_head


def _task_class(folder):
    import json
    import os

    path = os.path.join(folder, "task.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("class_name")


def masked_batches(texts, cfg):
    """Endless, seeded batches of masked `texts`: {MLM_INPUT + input: ..., MLM_TARGETS: ids,
    MLM_WEIGHTS: 0/1}, trimmed to each batch's longest text."""
    import keras_hub as hub
    import tensorflow as tf

    from tfimitate import backbones

    masker = hub.models.MaskedLMPreprocessor.from_preset(
        backbones.resolve_backbone(cfg.backbone), sequence_length=cfg.sequence_length,
        mask_selection_rate=MASK_RATE,
        mask_selection_length=max(1, math.ceil(MASK_RATE * cfg.sequence_length)))

    def mask(batch):
        inputs, targets, weights = masker(batch)
        positions = inputs.pop("mask_positions")
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), 1))
        parts = {MLM_INPUT + key: value[:, :longest] for key, value in inputs.items()}
        return dict(parts, **{MLM_INPUT + "mask_positions": positions, MLM_TARGETS: targets,
                              MLM_WEIGHTS: tf.cast(weights, tf.float32)})

    return (tf.data.Dataset.from_tensor_slices(texts)
            .shuffle(len(texts), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
            .batch(cfg.batch_size, drop_remainder=len(texts) >= cfg.batch_size)
            .map(mask, num_parallel_calls=tf.data.AUTOTUNE))


def masked_lm_loss(targets, logits, weights):
    """Per-example mean cross-entropy over its masked tokens (0 with none)."""
    import keras
    import tensorflow as tf

    losses = keras.losses.sparse_categorical_crossentropy(
        targets, tf.cast(logits, tf.float32), from_logits=True) * weights
    return tf.reduce_sum(losses, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


class AdaptPretraining(PhasedTextTechnique):
    """Masked-LM phase, then fine-tuning (see the module)."""

    name, flag, order = "adapt_pretraining", FLAG, 22

    def __init__(self, steps, learning_rate):
        self.steps = steps
        self.learning_rate = learning_rate
        self.texts = None
        self.backbone = self.head = None
        self.pretraining = True  # the phase being traced

    def adapt_examples(self, examples, task, data, cfg):
        split, texts = texts_in_memory(examples.split, FLAG, cfg), []
        if cfg.adapt_pretraining_text != "unlabeled":
            texts += list(split.texts)
        if cfg.unlabeled_data and cfg.adapt_pretraining_text != "train":
            texts += list(with_unlabeled(task, split, data, cfg).texts[len(split):])
        logging.info("%s: %d masked-LM steps on %d texts (%s).", FLAG, self.steps, len(texts),
                     cfg.adapt_pretraining_text if cfg.unlabeled_data else "train")
        self.texts = texts
        return examples

    def adapt_model(self, model, cfg):
        from tfimitate.techniques import parts

        self.backbone = parts.require_backbone(model, FLAG, "to pretrain")
        self.head = masked_lm_head(self.backbone, cfg.backbone)  # built by its MaskedLM
        setattr(model, HEAD_ATTRIBUTE, self.head)  # tracked: in checkpoints and the optimizer
        return model

    def phases(self, cfg, total_steps):
        if total_steps <= self.steps:
            raise UserError(f"{FLAG}={self.steps} takes all {total_steps} steps of the run, so "
                            f"nothing would be fine-tuned; give --max_steps above {self.steps}.")
        return [Phase(0, self.learning_rate, lambda model: self._enter(True)),
                Phase(self.steps, cfg.learning_rate, lambda model: self._enter(False))]

    def _enter(self, pretraining):
        self.pretraining = pretraining

    def adapt_dataset(self, dataset, cfg):
        import tensorflow as tf

        if not self.texts:
            raise UserError(f"{FLAG}: no text to pretrain on; give --unlabeled_data or "
                            "--adapt_pretraining_text=both.")

        def joined(batch, masked):
            inputs, labels = batch
            labels = dict(labels) if isinstance(labels, dict) else {"labels": labels}
            return inputs, dict(labels, **masked)

        return tf.data.Dataset.zip((dataset, masked_batches(self.texts, cfg))).map(joined)

    def wrap_loss(self, step_loss, run):
        def adapted(model, inputs, labels):
            if not self.pretraining:
                rest = {k: v for k, v in labels.items() if not k.startswith("mlm_")}
                return step_loss(model, inputs, rest["labels"] if list(rest) == ["labels"]
                                 else rest)
            masked = {k[len(MLM_INPUT):]: v for k, v in labels.items() if k.startswith(MLM_INPUT)}
            positions = masked.pop("mask_positions")
            sequence = self.backbone(masked, training=True)["sequence_output"]
            logits = self.head(sequence, mask_positions=positions)
            return masked_lm_loss(labels[MLM_TARGETS], logits, labels[MLM_WEIGHTS])

        return adapted

    def prepare_export(self, model, cfg):
        """The classifier without the masked-LM head (same layers and weights)."""
        import keras

        return keras.Model(model.input, model.output, name=model.name)


def from_config(cfg):
    """AdaptPretraining when --adapt_pretraining_steps > 0 (text classification), else None."""
    if not cfg.adapt_pretraining_steps:
        return None
    text_classification_only(cfg, FLAG, "pretrains on the texts of text classification",
                             "is another task")
    if cfg.adapt_pretraining_text == "unlabeled" and not cfg.unlabeled_data:
        raise UserError("--adapt_pretraining_text=unlabeled needs --unlabeled_data: give the "
                        "target-domain texts.")
    return AdaptPretraining(cfg.adapt_pretraining_steps,
                            positive_rate(cfg, "adapt_pretraining_learning_rate"))
