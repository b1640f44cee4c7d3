"""Technique hooks: ways of changing how a step learns, never what is served.

A technique (LoRA, freezing, distillation, adversarial training, augmentation,
L2-SP ...) is a `Technique` with up to five hooks, each a no-op by default:

    adapt_model(model, cfg) -> model          once, when the model is built (train,
                                              evaluate, predict, export alike)
    adapt_examples(examples, task, data, cfg) -> examples
                                              before training: the training split and
                                              per-label-unit `extras` that ride in the
                                              labels (tasks/base.py train_dataset), e.g.
                                              unlabelled text and a teacher's outputs
    adapt_dataset(dataset, cfg) -> dataset    the training batches only
    wrap_loss(step_loss, run) -> step_loss    the per-example loss the loop differentiates,
                                              step_loss(model, inputs, labels) -> float32
                                              [batch]; called once, before the first step
    finish(task, run, data, write)            after training, with the final weights (e.g.
                                              a report under eval/; write files only if `write`)

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
from typing import Any, Mapping


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

    def adapt_examples(self, examples, task, data, cfg):
        """Returns the Examples to train on (`data`: the task's splits.Data)."""
        del task, data, cfg
        return examples

    def adapt_dataset(self, dataset, cfg):
        """Returns the training dataset of (inputs, labels) batches."""
        del cfg
        return dataset

    def wrap_loss(self, step_loss, run):
        """Returns a step_loss(model, inputs, labels) -> per-example loss."""
        del run
        return step_loss

    def finish(self, task, run, data, write):
        """Runs after training on every worker; only writes files when `write` (the chief)."""
        del task, run, data, write


# name -> module with from_config(cfg) -> Technique or None (not asked for by the flags).
TECHNIQUES = {
    "distillation": "tfimitate.training.distillation",
}


def chosen(cfg):
    """The techniques `cfg` asks for, in registry order."""
    found = (importlib.import_module(module).from_config(cfg) for module in TECHNIQUES.values())
    return [technique for technique in found if technique is not None]


def adapt_model(techniques, model, cfg):
    for technique in techniques:
        model = technique.adapt_model(model, cfg)
    return model


def adapt_examples(techniques, examples, task, data, cfg):
    for technique in techniques:
        examples = technique.adapt_examples(examples, task, data, cfg)
    return examples


def adapt_dataset(techniques, dataset, cfg):
    for technique in techniques:
        dataset = technique.adapt_dataset(dataset, cfg)
    return dataset


def wrap_loss(techniques, step_loss, run):
    for technique in techniques:
        step_loss = technique.wrap_loss(step_loss, run)
    return step_loss


def finish(techniques, task, run, data, write):
    for technique in techniques:
        technique.finish(task, run, data, write)


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
