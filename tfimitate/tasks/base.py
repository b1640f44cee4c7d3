"""The task base class: what every task provides, checked when it is registered.

A task is a class (one module under tfimitate/tasks/ holding its whole story: data,
head, loss, metrics, serving signatures) derived from `Task`, whose defaults cover what
most tasks share (refusing perturbation, the label vocabulary as a serving asset,
one output per label). The workflow (train, evaluate, predict, export) and the training
loop only call the members of `Task`, so a new task is one module plus one line in the
registry (`tasks/__init__.py`); the contract test (tests/test_contract.py) then runs it
through train, evaluate, predict, export and resume. Classification tasks derive from
`tasks.classification.ClassificationTask`, which holds the label-set story.

Example:
    task = tasks.get_task("text_classification")   # a TextClassification instance
    run = Run(cfg, model, task.make_preprocessor(cfg), strategy)
    evaluation = task.evaluate(run, data.eval)
    evaluation.score, evaluation.metrics["accuracy"]
"""

import abc
import contextlib
import dataclasses
import inspect
import math
import types
from typing import (Any, Callable, ClassVar, Dict, List, Mapping, Optional, Protocol,
                    Sequence, Tuple, runtime_checkable)

from tfimitate import options
from tfimitate.errors import UserError

# Experiment fields every resumed run must keep; a task adds its own in RESUME_FIELDS.
COMMON_RESUME_FIELDS = ("task", "backbone", "labels", "train_data", "eval_data",
                        "holdout_fraction", "sequence_length", "batch_size", "seed", "cv_folds",
                        "cv_fold")


@dataclasses.dataclass(frozen=True)
class Run:
    """A model being trained or restored, with what it takes to feed it.

    Attributes:
        cfg: the config.Experiment (its `labels` are the model's class names).
        model: the Keras model (backbone + head), inputs -> float32 outputs.
        preprocessor: the task's host-side preprocessing (`make_preprocessor`).
        strategy: the tf.distribute strategy the model was built under.
        optimizer: while training, the Keras optimizer (a technique's step may need its
            loss scale or step count); None for a restored model.
        text_transform: a function of `keep_word_count` that returns fn(words, seed) ->
            words, what the training pipeline does to each raw text before tokenization,
            anew on every pass (tasks/common.py `training_batches`), or None to leave texts
            as they are (the default). The workflow composes it from the chosen techniques
            (e.g. augmentation); with `keep_word_count` the labels follow the words, so fn
            keeps their number.
        total_steps: while training, the optimizer steps the run takes (0 otherwise).

    Example:
        Run(cfg, model, preprocessor, strategy, optimizer,
            text_transform=lambda keep: techniques.text_transform(chosen, cfg, keep))
    """

    cfg: Any
    model: Any
    preprocessor: Any
    strategy: Any
    optimizer: Any = None
    text_transform: Callable[[bool], Optional[Callable]] = lambda keep_word_count: None
    total_steps: int = 0

    @property
    def labels(self):
        return self.cfg.labels


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What an evaluation found.

    Attributes:
        score: one number, higher is better; drives early stopping and the best checkpoint.
        metrics: JSON-ready dict, written to eval/<name>.json (numbers at its top level
            also go to TensorBoard as eval/<key>).
        report: the human-readable report printed after training and by `evaluate`.
        figures: name -> function(path) that writes a PNG there, saved as
            eval/<name>_<figure>.png.
        predictions: one JSON-ready record per example, in split order: its input, its
            gold label(s) and what the model `predicted` (the robustness report compares
            `predicted` on clean and perturbed inputs to find the examples that flipped).

    Example:
        Evaluation(score=0.91, metrics={"accuracy": 0.91}, report="accuracy 0.91",
                   predictions=[{"text": "a good film", "label": "pos", "predicted": "pos"}])
    """

    score: float
    metrics: Mapping[str, Any]
    report: str
    figures: Mapping[str, Callable[[str], None]] = dataclasses.field(default_factory=dict)
    predictions: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self):
        if not isinstance(self.score, (int, float)) or math.isnan(self.score):
            raise ValueError(f"Evaluation.score must be a number, got {self.score!r}")

    def scalars(self):
        """The numeric metrics, for logs and TensorBoard: top-level ones by name, those one
        level down in a section (e.g. a multi-task subtask's) as "section/name"."""
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        found = {k: float(v) for k, v in self.metrics.items() if number(v)}
        for section, values in self.metrics.items():
            if isinstance(values, Mapping):
                found.update({f"{section}/{k}": float(v) for k, v in values.items() if number(v)})
        return found


class Task(abc.ABC):
    """The base of every task: the members the workflow and the loop call.

    A subclass sets NAME (its registry name) and implements the abstract methods; the
    others have defaults. Splits are the task's own types (anything with `len()`,
    `.source` and `.subset(indices, source)`, plus `.labels`, one label per example, where
    the task has one: cross-validation stratifies its folds by them); `Data` is
    `tfimitate.data.splits.Data`. A task holds no state: `get_task` makes a new one.

    Example:
        class TextRegression(Task):
            NAME = "text_regression"
            OPTIONS = (options.boolean("standardize", False, "Scale targets to mean 0, std 1."),)
            RESUME_FIELDS = ("text_column", "label_column", "standardize")
            INPUTS = ("text", "word_pieces")

            def load_data(self, cfg): ...
            # ... the other abstract methods, and `perturbed` (it reads text)
    """

    NAME: ClassVar[str]
    # The options (tfimitate.options.Option) only this task reads, e.g. its own columns;
    # config.Experiment gets a field and the command line a flag of the same name for each.
    OPTIONS: ClassVar[Tuple[Any, ...]] = ()
    # Experiment fields, besides COMMON_RESUME_FIELDS, that a resumed run must keep.
    RESUME_FIELDS: ClassVar[Tuple[str, ...]] = ()
    # The task's training recipe: options.Recipe defaults for options the user left unset
    # (tfimitate/recipes.py), e.g. a head's learning rate for a task that trains a new head.
    RECIPE: ClassVar[Tuple[Any, ...]] = ()
    # The signatures `serving_module` exports (multi-task renames them per subtask).
    SIGNATURES: ClassVar[Tuple[str, ...]] = ("serving_default",)
    # What its training batches are made of: "text" (raw texts, changed by text
    # techniques through Run.text_transform), "word_pieces", "images". The technique
    # check (tfimitate.techniques.check) refuses a technique needing other inputs; a task
    # reading text also implements `perturbed`.
    INPUTS: ClassVar[Tuple[str, ...]] = ()

    def validate(self, cfg) -> None:
        """Raises UserError for flags this task cannot train with (before any work).
        Default: none."""
        del cfg

    @abc.abstractmethod
    def load_data(self, cfg) -> Any:
        """Reads and checks train/eval/test data; returns a splits.Data with the label set."""

    @abc.abstractmethod
    def read_file(self, path, cfg, flag, with_labels=True) -> Any:
        """One file as a Split: labelled (checked against cfg.labels) for evaluation,
        or unlabelled inputs to predict (with_labels=False)."""

    @abc.abstractmethod
    def make_preprocessor(self, cfg) -> Any:
        """The host-side preprocessing (tokenizer, image converter ...)."""

    def num_outputs(self, labels) -> int:
        """The size of the head's outputs for the label set `labels`. Default: one per label."""
        return len(labels)

    @abc.abstractmethod
    def build_head(self, cfg, backbone, num_outputs) -> Any:
        """The Keras model: `backbone` plus this task's head with float32 outputs."""

    @abc.abstractmethod
    def example_loss(self, labels, outputs) -> Any:
        """Per-example loss of a batch (float32 [batch]); 0 for examples without a label
        (tasks with SoftTargets)."""

    def reading(self, parts) -> Any:
        """A context manager around training, evaluation or prediction on the splits `parts`
        (None allowed) that turns a failure of their input (e.g. a malformed row met in a streamed
        file) into one UserError naming the file. Default: nothing to translate."""
        del parts
        return contextlib.nullcontext()

    @abc.abstractmethod
    def train_dataset(self, run: Run, split, extras=None) -> Any:
        """Endless tf.data of (inputs, labels) batches, in the same order on every run, or
        (a split streamed from many files) a data/streams.py PerHost that builds each host's
        per-replica batches from a tf.distribute.InputContext.

        `extras` (name -> NumPy array with one row per label unit of `split`, e.g. a
        teacher's outputs or a feature table's row numbers) ride
        with each example through shuffling, bucketing and padding (0 where a unit is
        absent, e.g. a word's other pieces): the labels are then a dict
        {"labels": <the task's labels>, name: [batch, (positions,) ...] ...}."""

    @abc.abstractmethod
    def evaluate(self, run: Run, split) -> Evaluation:
        """Scores the model on a labelled split (with one `predictions` record per example)."""

    @abc.abstractmethod
    def evaluate_saved_model(self, saved_model, split, labels) -> Evaluation:
        """Scores an exported SavedModel of this task (`tf.saved_model.load`ed) on a
        labelled split through its serving signatures, like `evaluate`; `labels` are the
        run's label set."""

    def perturbed(self, split, change) -> Any:
        """A copy of the labelled `split` whose texts are replaced by
        `change(word_lists, keep_word_count)` (lists of words in, lists out; with
        `keep_word_count` the task's labels follow the words, which must keep their number).

        Default: refused in one sentence (the task reads no words to perturb)."""
        del split, change
        reads = " and ".join(kind.replace("_", " ") for kind in self.INPUTS) or "no text"
        raise UserError(f"--perturb changes the words of texts; --task={self.NAME} reads "
                        f"{reads}, so evaluate it without --perturb.")

    @abc.abstractmethod
    def predict(self, run: Run, split) -> List[Dict[str, Any]]:
        """One JSON-ready record per input of an unlabelled split."""

    @abc.abstractmethod
    def serving_module(self, run: Run, labels_file) -> Any:
        """A tf.Module whose `serving_signatures()` maps signature names (SIGNATURES, with
        'serving_default') to tf.functions with input signatures; TF Serving runs these.
        It holds `serving_assets(labels_file)` as attributes."""

    def serving_assets(self, labels_file) -> Dict[str, Any]:
        """Attribute name -> tf.saved_model.Asset: files the SavedModel ships in assets/.
        Default: the run's label set `labels_file` (labels.txt, one per line) as
        `labels_asset`."""
        import tensorflow as tf

        return {"labels_asset": tf.saved_model.Asset(labels_file)}

    @abc.abstractmethod
    def serving_examples(self, split) -> Dict[str, list]:
        """Up to 32 real examples of `split` as raw `serving_default` inputs
        (input name -> list of str/bytes): parity checks and warmup requests."""

    @abc.abstractmethod
    def parity(self, run: Run, examples) -> Dict[str, Tuple[dict, dict]]:
        """signature name -> (input tensors, expected NumPy outputs of the in-memory
        model) built from `serving_examples`; the reloaded SavedModel must reproduce them."""


@runtime_checkable
class SoftTargets(Protocol):
    """What a task provides so that techniques can train it on per-unit soft targets
    (distillation from a teacher; pseudo-labelling): optional methods of a Task, checked
    on the task instance by the technique (`missing_members(task, SoftTargets)`).

    Label units: what a task assigns one label to, in a fixed order over a split:
    an example (text classification) or a word, flat in sentence order (token
    classification). `probabilities`, `served_probabilities` and the `extras` of
    `train_dataset` have one row per label unit, so techniques can pair any per-unit
    array with the examples without knowing the task. A training split may hold
    examples without a label ("no label" marker, see `add_unlabeled`); `example_loss`
    is 0 for them.
    """

    def add_unlabeled(self, split, path, cfg, flag, column=None, exclude=()) -> Any:
        """`split` followed by the examples of file `path` (text read from `column`, or
        the task's own input column), each with the "no label" marker; examples already
        in `split` or in any `exclude` split are dropped (counted in the log)."""

    def probabilities(self, run: Run, split) -> Any:
        """Class probabilities of the model, float32 [label units of `split`, labels]."""

    def served_probabilities(self, split, predict) -> Any:
        """The same from a served model: `predict(signature, inputs)` (default signature
        name, input name -> one value per example) returns one float32 array of class
        probabilities per example ([labels] or [units, labels])."""

    def score_probabilities(self, split, probabilities, labels) -> Evaluation:
        """Scores per-unit class `probabilities` (columns: `labels`) on a labelled split."""


def size(split):
    """The number of examples of `split`, or None for a streamed split that was not counted
    (--labels and --max_steps given: no counting pass).

    Example:
        size(data.train)  # 67349
    """
    return None if getattr(split, "count", 0) is None else len(split)


def check_task(task_class, name):
    """Raises TypeError unless `task_class` is a complete Task registered as `name`;
    returns it.

    Example:
        check_task(TextClassification, "text_classification")
    """
    where = f"{task_class.__module__}.{task_class.__qualname__}" \
        if isinstance(task_class, type) else repr(task_class)
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise TypeError(f"task {name}: {where} is not a class derived from "
                        "tfimitate.tasks.base.Task")
    if inspect.isabstract(task_class):
        raise TypeError(f"task class {where} lacks "
                        f"{', '.join(sorted(task_class.__abstractmethods__))} "
                        "(see tfimitate/tasks/base.py Task)")
    if getattr(task_class, "NAME", None) != name:
        raise TypeError(f"task class {where} is registered as {name} but NAME is "
                        f"{getattr(task_class, 'NAME', None)}")
    for field in ("RESUME_FIELDS", "SIGNATURES"):
        if not isinstance(getattr(task_class, field), tuple):
            raise TypeError(f"task class {where}: {field} must be a tuple of names")
    if not (isinstance(task_class.OPTIONS, tuple)
            and all(isinstance(option, options.Option) for option in task_class.OPTIONS)):
        raise TypeError(f"task class {where}: OPTIONS must be a tuple of tfimitate.options.Option")
    if not (isinstance(task_class.RECIPE, tuple)
            and all(isinstance(entry, options.Recipe) for entry in task_class.RECIPE)):
        raise TypeError(f"task class {where}: RECIPE must be a tuple of tfimitate.options.Recipe")
    if "serving_default" not in task_class.SIGNATURES:
        raise TypeError(f"task class {where}: SIGNATURES must hold serving_default")
    return task_class


def missing_members(task, protocol):
    """The members of the optional `protocol` (e.g. SoftTargets) that the task instance
    `task` lacks.

    Example:
        missing_members(get_task("image_classification"), SoftTargets)  # ["add_unlabeled"]
    """
    members = sorted(k for k, v in vars(protocol).items()
                     if isinstance(v, types.FunctionType) and not k.startswith("_"))
    return [member for member in members if not callable(getattr(task, member, None))]


def resume_fields(task):
    """The experiment fields a resumed run of `task` must keep."""
    return COMMON_RESUME_FIELDS + tuple(task.RESUME_FIELDS)


def check_resume(task, previous, cfg, technique_fields=()):
    """Refuses to continue a run whose experiment differs in a field that shapes the run
    (the common ones, the task's, and `technique_fields` of the techniques)."""
    for field in resume_fields(task) + tuple(technique_fields):
        before, now = getattr(previous, field), getattr(cfg, field)
        if before != now and not (field == "labels" and now is None):
            raise UserError(
                f"--model_dir={cfg.model_dir} holds a run with --{field}={_show(before)}, "
                f"not {_show(now)}; resuming would mix two experiments: choose a new "
                f"--model_dir, or re-run with --{field}={_show(before)} to resume.")


def _show(value):
    return ",".join(value) if isinstance(value, (list, tuple)) else value
