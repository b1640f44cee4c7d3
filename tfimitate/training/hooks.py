"""Technique hooks: ways of changing how a step learns, never what is served.

A technique (LoRA, freezing, distillation, adversarial training, augmentation,
L2-SP ...) is a `Technique` with these hooks, each a no-op by default:

    adapt_model(model, cfg) -> model          once, when the model is built (train,
                                              evaluate, predict, export alike)
    initialize(run)                           once before training (not when restoring for
                                              evaluate/export), after the model is built and
                                              before a resumed run restores its checkpoint:
                                              starting weights, extra data to read and check
    adapt_examples(examples, task, data, cfg) -> examples
                                              before training: the training split and
                                              per-label-unit `extras` that ride in the
                                              labels (tasks/base.py train_dataset), e.g.
                                              unlabelled text and a teacher's outputs
    text_transform(cfg, keep_word_count)      a change to each raw training text before
        -> fn(words, seed) -> words or None   tokenization, every pass (text tasks apply it)
    adapt_dataset(dataset, cfg) -> dataset    the training batches only
    wrap_loss(step_loss, run) -> step_loss    the per-example loss the loop differentiates,
                                              step_loss(model, inputs, labels) -> float32 [batch]
                                              or a dict of such terms with the loss under
                                              "loss" (the others are only logged)
    phases(cfg, total_steps) -> [Phase]       when which weights train at which peak
                                              learning rate (a frozen phase, then fine-tuning);
                                              None: all trainable weights, --learning_rate
    learning_rate_factors(model, cfg) -> {variable.path: factor}
                                              per-weight learning-rate factors (a number, or a
                                              function of the optimizer step); 0 holds a weight
                                              still (layer-wise decay, gradual unfreezing)
    checkpoint_filter() -> None | predicate   which weights checkpoints hold (None: all); the
                                              rest come from the pretrained backbone (adapters)
    prepare_export(model, cfg) -> model       the model to serve, from the trained one (LoRA
                                              merges its adapters); the export's parity check
                                              compares the served model with the trained one
    extend_evaluation(evaluation, run) -> evaluation
                                              every evaluation during training (more metrics,
                                              e.g. the score on old data)
    finish(task, run, data, write)            after training, with the final weights (e.g.
                                              a report under eval/; write files only if `write`)

During training the hooks run in this order: adapt_examples, phases, adapt_model,
learning_rate_factors, initialize, text_transform, adapt_dataset, wrap_loss, then
extend_evaluation at every evaluation and finish at the end. A wrapped step_loss may run
the step on another Keras model that shares the model's weights (feature_cache: the head
alone, on cached features, while the backbone is frozen): the loop differentiates with
respect to the model's trainable weights, whichever model computed the loss. Hooks may raise UserError
for flags they cannot serve: the workflow calls them all before anything is written.

A technique module may also list `RESUME_FIELDS`: experiment fields a resumed run must keep.

Techniques are chosen by flags: each module named in `TECHNIQUES` has a
`from_config(cfg)` returning its Technique, or None when its flags leave it off;
`chosen(cfg)` returns the active ones in registry order, and their hooks compose
in that order. The loop and the workflow know no technique by name.

Example (tfimitate/training/double.py, registered as TECHNIQUES["double"]):
    class Double(Technique):
        name = "double"
        def wrap_loss(self, step_loss, run):
            return lambda model, inputs, labels: 2.0 * step_loss(model, inputs, labels)

    def from_config(cfg):
        return Double() if cfg.double_loss else None
"""

import dataclasses
import importlib
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Phase:
    """Training steps from `start` (to the next phase's start) with their own trainable
    weights and learning rate.

    Attributes:
        start: the phase's first step (the first phase starts at 0).
        learning_rate: the phase's peak learning rate (its own warmup, then linear decay).
        prepare: model -> None; sets which layers are trainable in this phase (called when
            the phase begins, and when a resumed run restarts inside it).
    """

    start: int
    learning_rate: float
    prepare: Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Examples:
    """What the model trains on: the task's training split and `extras`, name -> NumPy
    array with one row per label unit of `split` (given to task.train_dataset)."""

    split: Any
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Technique:
    """Base class: every hook returns its input unchanged."""

    name = "technique"

    def adapt_model(self, model, cfg):
        """Returns the model to train (called under the strategy scope)."""
        del cfg
        return model

    def initialize(self, run):
        """Runs once before training with the tasks/base.py Run (may set weights)."""
        del run

    def adapt_examples(self, examples, task, data, cfg):
        """Returns the Examples to train on (`data`: the task's splits.Data)."""
        del task, data, cfg
        return examples

    def text_transform(self, cfg, keep_word_count):
        """Returns fn(words, seed) -> words, applied to every raw training text before
        tokenization on every pass, or None to leave texts as they are.

        `words` are one text's words (tf.string [W]); `seed` (int64 [2]) is a stateless
        seed unique to the text and the pass, so the stream is the same on every run.
        With `keep_word_count` the task's labels follow the words (NER): fn must keep
        their number and order (raise UserError here if the flags ask otherwise).
        """
        del cfg, keep_word_count
        return None

    def adapt_dataset(self, dataset, cfg):
        """Returns the training dataset of (inputs, labels) batches."""
        del cfg
        return dataset

    def wrap_loss(self, step_loss, run):
        """Returns a step_loss(model, inputs, labels) -> per-example loss."""
        del run
        return step_loss

    def phases(self, cfg, total_steps):
        """Returns a list of Phase (starts increasing from 0), or None for one plain phase."""
        del cfg, total_steps
        return None

    def learning_rate_factors(self, model, cfg):
        """{variable.path: factor} scaling those weights' updates (Adam step and weight
        decay) like a per-weight learning rate; a factor is a number or a function of the
        optimizer step (int64 tensor) returning a float32 scalar. Called once per training."""
        del model, cfg
        return {}

    def checkpoint_filter(self):
        """None, or a predicate(variable) -> bool choosing the weights checkpoints hold; the
        others are restored from the pretrained backbone (so `restore` loads it first)."""
        return None

    def prepare_export(self, model, cfg):
        """Returns the model the export serves (it may be a new model; `model` is unchanged)."""
        del cfg
        return model

    def extend_evaluation(self, evaluation, run):
        """Returns the tasks/base.py Evaluation, maybe with more metrics and report lines."""
        del run
        return evaluation

    def finish(self, task, run, data, write):
        """Runs after training on every worker; only writes files when `write` (the chief)."""
        del task, run, data, write


# name -> module with from_config(cfg) -> Technique or None (not asked for by the flags).
TECHNIQUES = {
    "init_from": "tfimitate.training.init_from",
    "transfer": "tfimitate.training.transfer",
    "lora": "tfimitate.training.lora",
    "freezing": "tfimitate.training.freezing",
    "layer_decay": "tfimitate.training.layer_decay",
    "l2sp": "tfimitate.training.l2sp",
    "replay": "tfimitate.training.replay",
    "retention": "tfimitate.training.retention",
    "image_augment": "tfimitate.data.image_augment",
    "augment": "tfimitate.training.augment",
    "adversarial": "tfimitate.training.adversarial",
    "distillation": "tfimitate.training.distillation",
    # Last: it numbers the final training split and wraps the others' losses.
    "feature_cache": "tfimitate.training.feature_cache",
}


def chosen(cfg):
    """The techniques `cfg` asks for, in registry order."""
    found = (importlib.import_module(module).from_config(cfg) for module in TECHNIQUES.values())
    return [technique for technique in found if technique is not None]


def adapt_model(techniques, model, cfg):
    for technique in techniques:
        model = technique.adapt_model(model, cfg)
    return model


def initialize(techniques, run):
    for technique in techniques:
        technique.initialize(run)


def adapt_examples(techniques, examples, task, data, cfg):
    for technique in techniques:
        examples = technique.adapt_examples(examples, task, data, cfg)
    return examples


def text_transform(techniques, cfg, keep_word_count):
    """The techniques' text transforms composed in order (each with its own seed), or None."""
    import tensorflow as tf

    transforms = [technique.text_transform(cfg, keep_word_count) for technique in techniques]
    transforms = [transform for transform in transforms if transform is not None]
    if not transforms:
        return None

    def transform(words, seed):
        for index, one in enumerate(transforms):
            words = one(words, tf.random.experimental.stateless_fold_in(seed, index))
        return words

    return transform


def adapt_dataset(techniques, dataset, cfg):
    for technique in techniques:
        dataset = technique.adapt_dataset(dataset, cfg)
    return dataset


def wrap_loss(techniques, step_loss, run):
    for technique in techniques:
        step_loss = technique.wrap_loss(step_loss, run)
    return step_loss


def phases(techniques, cfg, total_steps):
    """The training phases: those of the one technique that sets them, else a single
    phase at --learning_rate that trains every trainable weight."""
    found = [(t.name, p) for t in techniques for p in [t.phases(cfg, total_steps)] if p]
    if len(found) > 1:
        from tfimitate.errors import UserError

        raise UserError(f"{found[0][0]} and {found[1][0]} both schedule which weights train; "
                        "use one of them.")
    return found[0][1] if found else [Phase(0, cfg.learning_rate, lambda model: None)]


def learning_rate_factors(techniques, model, cfg):
    """The techniques' factors per variable path, multiplied, each a function of the step."""
    combined = {}
    for technique in techniques:
        for path, factor in technique.learning_rate_factors(model, cfg).items():
            factor = factor if callable(factor) else (lambda step, value=float(factor): value)
            before = combined.get(path)
            combined[path] = factor if before is None else (
                lambda step, a=before, b=factor: a(step) * b(step))
    return combined


def checkpoint_filter(techniques):
    """None (checkpoints hold every weight) or a predicate: a weight is saved if any
    technique's filter keeps it."""
    filters = [technique.checkpoint_filter() for technique in techniques]
    filters = [f for f in filters if f is not None]
    if not filters:
        return None
    return lambda variable: any(f(variable) for f in filters)


def prepare_export(techniques, model, cfg):
    for technique in techniques:
        model = technique.prepare_export(model, cfg)
    return model


def extend_evaluation(techniques, evaluation, run):
    for technique in techniques:
        evaluation = technique.extend_evaluation(evaluation, run)
    return evaluation


def finish(techniques, task, run, data, write):
    for technique in techniques:
        technique.finish(task, run, data, write)


def resume_fields():
    """Experiment fields of every registered technique that a resumed run must keep."""
    return tuple(field for module in TECHNIQUES.values()
                 for field in getattr(importlib.import_module(module), "RESUME_FIELDS", ()))


def supervised_loss(task):
    """The plain step loss of `task`: its per-example loss of one forward pass.

    Example:
        step_loss = supervised_loss(task)
        per_example = step_loss(model, inputs, labels)
    """
    import tensorflow as tf

    def step_loss(model, inputs, labels):
        outputs = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32),
                                        model(inputs, training=True))
        return task.example_loss(labels, outputs)

    return step_loss
