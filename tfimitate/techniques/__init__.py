"""Techniques: ways of changing how a step learns, never what is served.

One module per technique (distillation a sub-package), each with the hooks of
`tfimitate.training.hooks.Technique` and a `from_config(cfg)` returning its Technique,
or None when its flags leave it off (UserError for flags it cannot take). A module
declares its own options in a module-level `OPTIONS` tuple (tfimitate/options.py; they
become config.Experiment fields and flags of the same names) and may list
`RESUME_FIELDS`: experiment fields a resumed run must keep. A technique module imports
TensorFlow only inside what uses it (config imports every module to read its OPTIONS).
`parts.py` finds the backbone and its parts (embeddings, layers, pooler) for all of them.

`chosen(cfg)` returns the techniques the flags ask for, sorted by their `order`, after
one check that refuses, in one sentence naming both flags, before any work:
  * two techniques holding the same exclusive claim (`CLAIMS`), e.g. two that set
    which backbone weights train;
  * a technique holding a claim another one `excludes`;
  * a technique whose `inputs` the task does not train on (the task's `INPUTS`).
Their hooks then compose in that order (the functions below); the loop and the
workflow know no technique by name. This module imports no TensorFlow.

Adding a technique is one module plus one line in TECHNIQUES (and its sample flags in
tests/test_technique_contract.py), e.g. tfimitate/techniques/double.py:
    OPTIONS = (options.boolean("double_loss", False, "Double the loss (a demo)."),)

    class Double(Technique):
        name, flag, order = "double", "--double_loss", 100
        claims = {"student_forward"}
        def wrap_loss(self, step_loss, run):
            return lambda model, inputs, labels: 2.0 * step_loss(model, inputs, labels)

    def from_config(cfg):
        return Double() if cfg.double_loss else None
"""

import importlib
import itertools
from collections.abc import Mapping

from tfimitate.errors import UserError
from tfimitate.training.hooks import Phase

# name -> module with from_config(cfg) -> Technique or None (not asked for by the flags).
TECHNIQUES = {
    "init_from": "tfimitate.techniques.init_from",
    "transfer": "tfimitate.techniques.transfer",
    "lora": "tfimitate.techniques.lora",
    "few_shot": "tfimitate.techniques.few_shot",
    "adapt_pretraining": "tfimitate.techniques.adapt_pretraining",
    "freezing": "tfimitate.techniques.freezing",
    "layer_decay": "tfimitate.techniques.layer_decay",
    "l2sp": "tfimitate.techniques.l2sp",
    "replay": "tfimitate.techniques.replay",
    "retention": "tfimitate.techniques.retention",
    "image_augment": "tfimitate.techniques.image_augment",
    "augment": "tfimitate.techniques.augment",
    "adversarial": "tfimitate.techniques.adversarial",
    "distillation": "tfimitate.techniques.distillation",
    "self_training": "tfimitate.techniques.self_training",
    "feature_cache": "tfimitate.techniques.feature_cache",
}

# What a technique may claim (Technique.claims): claim -> (exclusive, what holding it means).
# At most one chosen technique holds an exclusive claim ("... both <meaning>; use one of
# them."); the others matter only to a technique that `excludes` them.
CLAIMS = {
    "trainable_weights": (True, "set which backbone weights train"),
    "student_forward": (True, "wrap the loss of the student's forward pass"),
    "changed_inputs": (False, "change the training inputs at every step"),
    "frozen_backbone": (False, "keep every backbone weight as loaded"),
    "partial_checkpoints": (False, "keep only some weights in checkpoints"),
}
# What a task may train on (Technique.inputs, the task's INPUTS), as messages name them.
INPUTS = {"text": "text", "word_pieces": "word pieces", "images": "images"}


def chosen(cfg, restore_run=None):
    """The techniques `cfg` asks for, in their order, checked together against the task.

    `restore_run(model_dir) -> (task, Run, step)` (`tfimitate.runs.restore`) is lent to
    each technique as `restore_run`: init_from and a distillation teacher run read
    another run through it (techniques import no workflow). Checking flags needs none.

    Example:
        techniques = chosen(cfg.replace(lora_rank=8))   # [LoRA]
    """
    from tfimitate.tasks import get_task

    found = [technique for name in TECHNIQUES for technique in [module(name).from_config(cfg)]
             if technique is not None]
    found.sort(key=lambda technique: technique.order)
    check(found, cfg.task, get_task(cfg.task).INPUTS)
    for technique in found:
        technique.restore_run = restore_run
    return found


def module(name):
    """The module of the technique registered under `name` (imported, no TensorFlow)."""
    return importlib.import_module(TECHNIQUES[name])


def check(techniques, task_name, task_inputs):
    """Raises UserError (one sentence naming both flags) for techniques that cannot
    train together, or on a task that trains on `task_inputs` (its INPUTS).

    Example:
        check([LoRA(...), Freezing(...)], "text_classification", ("text", "word_pieces"))
        # UserError: --lora_rank and --freeze both set which backbone weights train; ...
    """
    for a, b in itertools.combinations(techniques, 2):
        held_a, held_b = claims_of(a), claims_of(b)
        for claim in sorted(held_a.keys() & held_b.keys()):
            exclusive, meaning = CLAIMS[claim]
            if exclusive:
                raise UserError(f"{held_a[claim]} and {held_b[claim]} both {meaning}; "
                                "use one of them.")
        for one, other_held in ((a, held_b), (b, held_a)):
            for claim, refusal in one.excludes.items():
                if claim in other_held:
                    raise UserError(refusal.format(flag=one.flag, other=other_held[claim]))
    for technique in techniques:
        missing = [kind for kind in sorted(technique.inputs) if kind not in task_inputs]
        if missing:
            raise UserError(
                f"{technique.flag} needs {INPUTS[missing[0]]} as training inputs, but "
                f"--task={task_name} trains on {' and '.join(INPUTS[k] for k in task_inputs)}; "
                f"drop {technique.flag}.")


def claims_of(technique):
    """claim -> the flag that makes it, for `technique` (its `flag` unless it says otherwise)."""
    claims = technique.claims
    return dict(claims) if isinstance(claims, Mapping) else dict.fromkeys(claims, technique.flag)


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
    """The techniques' text transforms composed in order (each with its own seed):
    fn(words, seed) -> words, or None when none changes texts.

    Example:
        transform = text_transform(chosen(cfg), cfg, keep_word_count=False)
        words = transform(tf.strings.split("a good film"), seed) if transform else words
    """
    transforms = [technique.text_transform(cfg, keep_word_count) for technique in techniques]
    transforms = [transform for transform in transforms if transform is not None]
    if not transforms:
        return None
    import tensorflow as tf

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
    """The training phases: those of the technique that sets them (it claims
    "trainable_weights", so there is one at most), else a single phase at
    --learning_rate that trains every trainable weight."""
    for technique in techniques:
        found = technique.phases(cfg, total_steps)
        if found:
            return found
    return [Phase(0, cfg.learning_rate, lambda model: None)]


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
    return tuple(field for name in TECHNIQUES
                 for field in getattr(module(name), "RESUME_FIELDS", ()))
