"""The technique hook protocol: ways of changing how a step learns, never what is served.

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
respect to the model's trainable weights, whichever model computed the loss. Hooks may
raise UserError for flags they cannot serve: the workflow calls them all before anything
is written.

Besides hooks, a technique declares what it needs and does (read by the one check of
`tfimitate.techniques`, which refuses a bad combination before any work): `flag`, `order`,
`inputs`, `claims` and `excludes` (see `Technique`). The loop knows no technique.

Example (a technique that doubles the loss):
    class Double(Technique):
        name, flag = "double", "--double_loss"
        def wrap_loss(self, step_loss, run):
            return lambda model, inputs, labels: 2.0 * step_loss(model, inputs, labels)
"""

import dataclasses
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
    """Base class: every hook returns its input unchanged; nothing needed or claimed.

    Declarations (class attributes, or set per instance by the module's from_config):
        name: the technique's registry name.
        flag: the flag that chose it (e.g. "--lora_rank"), named in refusals.
        order: where its hooks run among the chosen techniques (lower first).
        inputs: what the task must train on, a set of "text" (raw texts it applies
            text transforms to), "word_pieces" (token_ids/padding_mask batches from a
            word-piece backbone), "images" (image batches).
        claims: what it does to the run (names in `tfimitate.techniques.CLAIMS`); a set,
            or claim -> the flag making that claim when it is not `flag`.
        excludes: claim -> the one-sentence refusal when another chosen technique holds
            that claim ("{flag}" and "{other}" name the two flags).
        restore_run: set by `tfimitate.techniques.chosen` to tfimitate.runs.restore,
            restore_run(model_dir) -> (task, Run, step), for techniques that read another run.
    """

    name = "technique"
    flag = ""
    order = 100
    inputs = frozenset()
    claims = frozenset()
    excludes = {}
    restore_run = None

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
        """Returns a list of Phase (starts increasing from 0), or None for one plain phase.
        A technique that sets phases claims "trainable_weights" (so only one does)."""
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
