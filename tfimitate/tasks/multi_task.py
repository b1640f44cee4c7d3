"""Multi-task learning: one shared backbone, one head per subtask, one SavedModel.

`--task=multi_task --subtasks=configs/subtasks/sentiment.cfg,configs/subtasks/entities.cfg`:
each subtask flagfile holds that subtask's own flags (SUBTASK_FIELDS: its --task, data,
columns, labels, --subtask_name, --loss_weight); backbone, training and runtime flags come
from the main flagfile and are refused in a subtask file. Every subtask is a registered
task (text or token classification) doing its own part of the story: each one
reads its data, builds its head on the shared backbone, batches its own training data,
scores and serves itself; this module only combines them:

- model: the backbone runs once; its outputs feed every subtask's head (named
  `<subtask>_<layer>`, weights under `<subtask>/`); the model outputs {name: outputs}.
- training: each batch comes from one subtask's own pipeline, picked by
  `--task_sampling` (proportional to the training examples, temperature-scaled or round
  robin) with a seeded tf.data choice, so the stream replays exactly on resume. Every
  batch has one structure (all subtasks' inputs and labels, zeros where absent, and a
  per-example weight: the subtask's --loss_weight for its own batches, else 0), so the
  loop traces one step; `example_loss` sums the subtasks' weighted losses.
- evaluation: each subtask's own Evaluation; the score is their mean; metrics.json
  has a section per subtask (TensorBoard: eval/<subtask>/<metric>).
- export: every subtask's signatures, renamed `<subtask>` (its serving_default) and
  `<subtask>_<signature>` (e.g. `entities_tag_words`; subtask names that would give a
  signature name twice are refused), plus serving_default = the first subtask's; parity
  and warmup through the subtasks' own modules.
- side features (--numeric_columns/--categorical_columns) are refused, in the main flagfile
  and in a subtask file: no subtask head reads them.

Example:
    cfg = Experiment(task="multi_task", subtasks=("sentiment.cfg", "entities.cfg"),
                     model_dir="runs/mt")
    [s.name for s in subtasks(cfg)]          # ["sentiment", "entities"]
"""

import contextlib
import dataclasses
import functools
import os
import re
import weakref
from typing import Any, Dict

from tfimitate import files, options
from tfimitate.errors import UserError
from tfimitate.tasks import base, side_features

# The flags a subtask flagfile may set; all others are shared and belong in the main one.
SUBTASK_FIELDS = ("task", "train_data", "eval_data", "test_data", "text_column",
                  "text_pair_column", "label_column", "labels", "drop_unlisted_labels",
                  "tagging_scheme", "holdout_fraction", "subtask_name", "loss_weight")
SUBTASK_TASKS = ("text_classification", "token_classification")
SAMPLING = ("proportional", "temperature", "round_robin")
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Subtask:
    """One subtask: its name, task (a tasks.base.Task), experiment (the main one with the
    subtask's own fields) and the flagfile it comes from."""

    name: str
    task: Any
    cfg: Any
    source: str


@dataclasses.dataclass(eq=False)
class Split:
    """One split of every subtask (name -> that task's own Split), in subtask order, and
    the task each part belongs to (name -> its tasks.base.Task)."""

    parts: Dict[str, Any]
    tasks: Dict[str, Any]

    @property
    def source(self):
        return "; ".join(f"{name}: {part.source}" for name, part in self.parts.items())

    def __len__(self):
        return sum(len(part) for part in self.parts.values())


class Preprocessor:
    """Each subtask's own preprocessor (all from the one --backbone), by subtask name."""

    def __init__(self, parts):
        self.parts = parts
        self.tokenizer = next(iter(parts.values())).tokenizer


def subtasks(cfg):
    """The subtasks of `cfg.subtasks`, read from their flagfiles (labels from cfg.labels,
    `name:label` entries, once the run has them)."""
    if not cfg.subtasks:
        raise UserError("--task=multi_task needs --subtasks=FILE,FILE: one flagfile per "
                        "subtask (see README, Multi-task learning).")
    defaults = {field: getattr(type(cfg)(), field) for field in SUBTASK_FIELDS}
    known = _split_labels(cfg.labels)
    found = []
    exported = {"serving_default": "is the SavedModel's default signature"}
    for path in cfg.subtasks:
        values = _read_flagfile(path)
        name = values.get("subtask_name") or os.path.splitext(os.path.basename(path))[0]
        if not _NAME_PATTERN.match(name):
            raise UserError(f"{path}: the subtask name '{name}' must start with a letter and "
                            "hold only letters, digits and _ (it names a signature); set "
                            "--subtask_name.")
        if name in [s.name for s in found]:
            raise UserError(f"{path}: the subtask name '{name}' is also the name of another "
                            "subtask; give each subtask file its own --subtask_name.")
        sub = cfg.replace(**dict(defaults, **values))
        if sub.task not in SUBTASK_TASKS:
            raise UserError(f"{path}: --task={sub.task} cannot be a subtask; use one of "
                            f"{', '.join(SUBTASK_TASKS)}.")
        if not sub.train_data:
            raise UserError(f"{path}: --train_data is required: give the subtask's training file.")
        if known is not None:
            sub = sub.replace(labels=known.get(name))
        from tfimitate.tasks import get_task

        task = get_task(sub.task)
        for signature in (_exported_name(name, s) for s in task.SIGNATURES):
            if signature in exported:
                raise UserError(f"{path}: the subtask name '{name}' would export the signature "
                                f"'{signature}', which {exported[signature]}; set another "
                                "--subtask_name.")
            exported[signature] = f"subtask '{name}' ({path}) exports too"
        found.append(Subtask(name, task, sub, path))
    return found


def _read_flagfile(path):
    """The subtask flags of a flagfile (config.read_flagfile: `--flag=value` lines, #
    comments); one UserError naming file:line for anything else, or for a shared flag."""
    from tfimitate import config

    if not files.isfile(path):
        raise UserError(f"--subtasks: the subtask flagfile {path} does not exist; check the path.")

    def subtask_field(name, where):
        if name in ("numeric_columns", "categorical_columns"):
            raise UserError(f"{where}: --{name}: a subtask of --task=multi_task cannot read side "
                            "columns (its head sees the shared backbone's output only); drop "
                            "it, or train that task alone with its side columns.")
        if name not in SUBTASK_FIELDS:
            raise UserError(f"{where}: --{name} belongs in the main flagfile, since every "
                            f"subtask shares it; move it there (a subtask file sets only "
                            f"{', '.join('--' + f for f in SUBTASK_FIELDS)}).")

    return config.read_flagfile(path, "--subtasks", check=subtask_field)


def _split_labels(labels):
    """{subtask name: its labels} from the run's `name:label` labels, or None."""
    if labels is None:
        return None
    found = {}
    for entry in labels:
        name, _, label = entry.partition(":")
        found[name] = found.get(name, ()) + (label,)
    return found


@contextlib.contextmanager
def _within(subtask):
    """Prefixes a subtask's UserError with the subtask and its flagfile."""
    try:
        yield
    except UserError as error:
        raise UserError(f"subtask {subtask.name} ({subtask.source}): {error}") from None


def _file_spec(path, names, flag):
    """`NAME=FILE,...` -> {name: file}; a plain path is every subtask's file."""
    entries = [entry.partition("=") for entry in path.split(",")]
    if not all(equals and name in names for name, equals, _ in entries):
        if any(equals for _, equals, _ in entries) and not files.exists(path):
            raise UserError(f"{flag}={path}: give one file for every subtask, or NAME=FILE,... "
                            f"with subtask names ({', '.join(names)}).")
        return {name: path for name in names}
    return {name: file for name, _, file in entries}


class _SharedBackbone:
    """The backbone as a subtask's build_head sees it: calling it (a head calls it on
    `backbone.input`) returns the outputs of its one call in the multi-task model, so the
    backbone runs once for every head; other attributes are the backbone's."""

    def __init__(self, backbone):
        self._backbone = backbone
        self._outputs = backbone(backbone.input)

    def __call__(self, inputs, *args, **kwargs):
        return self._outputs

    def __getattr__(self, name):
        return getattr(self._backbone, name)


def _label_key(subtask):
    return f"{subtask.cfg.task}/{subtask.name}"


def sampling_weights(sizes, sampling, temperature):
    """The probability of each subtask per batch: proportional to its training examples,
    to size^(1/temperature), or equal (round robin).

    Example:
        sampling_weights([900, 100], "temperature", 2.0)  # [0.75, 0.25]
    """
    if sampling == "round_robin":
        powered = [1.0 for _ in sizes]
    else:
        power = 1.0 / temperature if sampling == "temperature" else 1.0
        powered = [size ** power for size in sizes]
    return [value / sum(powered) for value in powered]


_SUBMODELS = weakref.WeakKeyDictionary()


def _runs(run, chosen):
    """A Run per subtask: its experiment, preprocessor and the joint model's part that
    computes its outputs (cached, so predictions trace once per model)."""
    import keras

    models = _SUBMODELS.setdefault(run.model, {})
    for subtask in chosen:
        if subtask.name not in models:
            models[subtask.name] = keras.Model(run.model.input, run.model.output[subtask.name],
                                               name=subtask.name)
    return {s.name: base.Run(s.cfg, models[s.name], run.preprocessor.parts[s.name],
                             run.strategy, run.optimizer, run.text_transform) for s in chosen}


def _combined(evaluations):
    """One Evaluation of the subtasks' own: the mean score, a metrics section each."""
    score = sum(e.score for e in evaluations.values()) / len(evaluations)
    metrics = {"score": score}
    metrics.update({name: dict(e.metrics, score=e.score) for name, e in evaluations.items()})
    report = "\n".join(f"[{name}] score {e.score:.4f}\n{e.report}"
                       for name, e in evaluations.items())
    report += f"\nMulti-task score (mean of {len(evaluations)}): {score:.4f}\n"
    figures = {f"{name}_{figure}": draw for name, e in evaluations.items()
               for figure, draw in e.figures.items()}
    predictions = [dict(record, subtask=name) for name, e in evaluations.items()
                   for record in e.predictions]
    return base.Evaluation(score, metrics, report, figures, predictions)


def _exported_name(subtask_name, signature):
    return subtask_name if signature == "serving_default" else f"{subtask_name}_{signature}"


class _SubtaskSignatures:
    """A subtask's view of the multi-task SavedModel: its signatures by their own names."""

    def __init__(self, loaded, subtask_name):
        self.signatures = {}
        for name, function in loaded.signatures.items():
            if name == subtask_name:
                self.signatures["serving_default"] = function
            elif name.startswith(subtask_name + "_"):
                self.signatures[name[len(subtask_name) + 1:]] = function


@functools.lru_cache(maxsize=1)
def _server_class():
    import tensorflow as tf

    class MultiTaskServer(tf.Module):
        """What TF Serving runs: each subtask's own serving module, its signatures renamed
        `<name>` (its serving_default) and `<name>_<signature>`; serving_default is the
        first subtask's. The run's `name:label` list and each subtask's labels are assets."""

        def __init__(self, servers, assets):
            super().__init__()
            for name, asset in assets.items():
                setattr(self, name, asset)
            self.servers = list(servers.values())
            self._names = list(servers)

        def serving_signatures(self):
            """Signature name -> tf.function, as saved in the SavedModel."""
            signatures = {}
            for name, server in zip(self._names, self.servers):
                for signature, function in server.serving_signatures().items():
                    signatures[_exported_name(name, signature)] = function
            signatures["serving_default"] = signatures[self._names[0]]
            return signatures

    return MultiTaskServer


class MultiTask(base.Task):
    """Multi-task learning: the subtasks' own tasks, combined (see the module)."""

    NAME = "multi_task"
    OPTIONS = (
        options.names(
            "subtasks", None,
            "--task=multi_task: subtask flagfiles (e.g. configs/subtasks/sentiment.cfg,"
            "configs/subtasks/entities.cfg), each with that subtask's --task, data, columns, "
            "labels, --subtask_name and --loss_weight; backbone, training and runtime flags stay "
            "in the main flagfile. The first subtask is the export's serving_default."),
        options.choice(
            "task_sampling", "proportional", ["proportional", "temperature", "round_robin"],
            "--task=multi_task: which subtask each training batch comes from: proportional to "
            "the subtasks' training examples, temperature (size^(1/--task_temperature)) or "
            "round_robin."),
        options.number(
            "task_temperature", 2.0,
            "--task_sampling=temperature: 1 is proportional, larger evens the subtasks out.",
            lower=1.0),
        options.string(
            "subtask_name", None,
            "In a subtask flagfile: the subtask's name (its metrics.json section and signature "
            "name; default: the file name without .cfg)."),
        options.number(
            "loss_weight", 1.0,
            "In a subtask flagfile: multiplies the subtask's loss.", lower=0.0),
    )
    RESUME_FIELDS = ("subtasks", "task_sampling", "task_temperature")
    INPUTS = ("text", "word_pieces")

    def validate(self, cfg):
        """Data flags belong in the subtask files; every subtask must be valid for its task."""
        defaults = type(cfg)()
        for field in SUBTASK_FIELDS[1:]:
            if field != "labels" and getattr(cfg, field) != getattr(defaults, field):
                raise UserError(f"--{field} belongs in a subtask flagfile with --task=multi_task "
                                "(each subtask has its own); move it into one of the --subtasks files.")
        side_features.refuse(cfg, self.NAME, "joins no side features to its subtasks' heads")
        names = [subtask.name for subtask in subtasks(cfg)]
        for entry in cfg.labels or ():  # a run's flags.cfg lists them as subtask:label
            if entry.partition(":")[0] not in names:
                raise UserError(f"--labels: '{entry}' names no subtask; give each subtask's labels "
                                "in its flagfile.")
        if cfg.task_sampling not in SAMPLING:
            raise UserError(f"--task_sampling={cfg.task_sampling} is unknown; use "
                            f"{', '.join(SAMPLING)}.")
        if not cfg.task_temperature >= 1.0:
            raise UserError(f"--task_temperature={cfg.task_temperature} must be at least 1 "
                            "(1 is proportional sampling).")
        for subtask in subtasks(cfg):
            with _within(subtask):
                subtask.task.validate(subtask.cfg)

    def load_data(self, cfg):
        """Every subtask's data (read and checked by its own task); labels are `name:label`."""
        chosen = subtasks(cfg)
        parts = {}
        for subtask in chosen:
            with _within(subtask):
                parts[subtask.name] = subtask.task.load_data(subtask.cfg)
        from tfimitate.data import splits

        tasks = {subtask.name: subtask.task for subtask in chosen}
        tests = {name: data.test for name, data in parts.items() if data.test is not None}
        return splits.Data(Split({name: data.train for name, data in parts.items()}, tasks),
                           Split({name: data.eval for name, data in parts.items()}, tasks),
                           Split(tests, tasks) if tests else None,
                           tuple(f"{name}:{label}" for name, data in parts.items()
                                 for label in data.labels))

    def read_file(self, path, cfg, flag, with_labels=True):
        """A file for every subtask (`path`), or per subtask (`NAME=FILE,...`: only those)."""
        chosen = subtasks(cfg)
        spec = _file_spec(path, [s.name for s in chosen], flag)
        parts = {}
        for subtask in chosen:
            if subtask.name in spec:
                with _within(subtask):
                    parts[subtask.name] = subtask.task.read_file(spec[subtask.name], subtask.cfg,
                                                                 flag, with_labels)
        return Split(parts, {subtask.name: subtask.task for subtask in chosen})

    def make_preprocessor(self, cfg):
        """Each subtask's preprocessor, by name."""
        return Preprocessor({s.name: s.task.make_preprocessor(s.cfg) for s in subtasks(cfg)})

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + each subtask's head (built by its task): outputs {name: outputs}.

        A backbone layer a head turns off (a tagger freezes the pooler it does not use)
        trains if any subtask keeps it on."""
        import keras

        del num_outputs  # each head has its own: the subtask's labels
        shared = _SharedBackbone(backbone)
        layers = backbone.layers
        before = [layer.trainable for layer in layers]
        after = [False] * len(layers)
        labels = _split_labels(cfg.labels)
        outputs = {}
        for subtask in subtasks(cfg):
            for layer, trainable in zip(layers, before):
                layer.trainable = trainable
            with keras.name_scope(subtask.name):  # weight paths <name>/logits/kernel ...
                head = subtask.task.build_head(subtask.cfg, shared, len(labels[subtask.name]))
            after = [old or layer.trainable for old, layer in zip(after, layers)]
            for layer in head.layers:
                if layer is not backbone and not isinstance(layer, keras.layers.InputLayer):
                    layer.name = f"{subtask.name}_{layer.name}"  # unique in the joint model
            outputs[subtask.name] = head.output
        for layer, trainable in zip(layers, after):
            layer.trainable = trainable
        return keras.Model(backbone.input, outputs, name="multi_task")

    def example_loss(self, labels, outputs):
        """Sum over subtasks of weight x the subtask task's own per-example loss; labels are
        {"<task>/<name>": {"labels": ..., "weight": float32 [batch]}}."""
        from tfimitate.tasks import get_task

        total = 0.0
        for key, part in labels.items():
            task, name = key.split("/", 1)
            total += part["weight"] * get_task(task).example_loss(part["labels"], outputs[name])
        return total

    def train_dataset(self, run, split, extras=None):
        """Endless batches, each from one subtask's own `train_dataset`, picked by
        --task_sampling with --seed; every batch holds every subtask's inputs and labels
        (zeros where absent, weight 0), so they share one structure."""
        import tensorflow as tf

        if extras:
            raise UserError("--task=multi_task cannot take per-example training extras (e.g. a "
                            "teacher's outputs); train without that technique.")
        cfg = run.cfg
        chosen = subtasks(cfg)
        runs = _runs(run, chosen)
        datasets = [s.task.train_dataset(runs[s.name], split.parts[s.name]) for s in chosen]
        input_specs = {}
        for dataset in datasets:
            for key, spec in dataset.element_spec[0].items():
                input_specs.setdefault(key, spec)
        label_specs = [dataset.element_spec[1] for dataset in datasets]

        def common(index):
            def to_common(inputs, labels):
                first = inputs[sorted(inputs)[0]]
                batch, length = tf.shape(first)[0], tf.shape(first)[1]

                def zeros(spec):
                    shape = [batch] + [length if d is None else d for d in spec.shape[1:]]
                    return tf.zeros(tf.stack(shape), spec.dtype)

                inputs = {key: tf.cast(inputs[key], spec.dtype) if key in inputs else zeros(spec)
                          for key, spec in input_specs.items()}
                joint = {}
                for i, (subtask, specs) in enumerate(zip(chosen, label_specs)):
                    own = i == index
                    joint[_label_key(subtask)] = {
                        "labels": labels if own else tf.nest.map_structure(zeros, specs),
                        "weight": tf.fill([batch], subtask.cfg.loss_weight if own else 0.0)}
                return inputs, joint

            return to_common

        mapped = [dataset.map(common(i)) for i, dataset in enumerate(datasets)]
        if cfg.task_sampling == "round_robin":
            stream = tf.data.Dataset.choose_from_datasets(
                mapped, tf.data.Dataset.range(len(mapped)).repeat())
        else:
            weights = sampling_weights([len(split.parts[s.name]) for s in chosen],
                                       cfg.task_sampling, cfg.task_temperature)
            stream = tf.data.Dataset.sample_from_datasets(mapped, weights, seed=cfg.seed)
        return stream.prefetch(tf.data.AUTOTUNE)

    def evaluate(self, run, split):
        """Each subtask's own evaluation of its part of `split`; the score is their mean."""
        chosen = [s for s in subtasks(run.cfg) if s.name in split.parts]
        runs = _runs(run, chosen)
        return _combined({s.name: s.task.evaluate(runs[s.name], split.parts[s.name])
                          for s in chosen})

    def evaluate_saved_model(self, saved_model, split, labels):
        """Each subtask's own saved-model evaluation through its renamed signatures."""
        known = _split_labels(labels)
        return _combined({
            name: split.tasks[name].evaluate_saved_model(
                _SubtaskSignatures(saved_model, name), part, known[name])
            for name, part in split.parts.items()})

    def perturbed(self, split, change):
        """Every subtask's split perturbed by its own task."""
        return Split({name: split.tasks[name].perturbed(part, change)
                      for name, part in split.parts.items()}, split.tasks)

    def predict(self, run, split):
        """Every subtask's predictions; when all read the same file, one record per input
        ({input: ..., <subtask>: its record}), else each subtask's records with `subtask`."""
        chosen = [s for s in subtasks(run.cfg) if s.name in split.parts]
        runs = _runs(run, chosen)
        found = {s.name: s.task.predict(runs[s.name], split.parts[s.name]) for s in chosen}
        if len({part.source for part in split.parts.values()}) > 1 or \
                len({len(records) for records in found.values()}) > 1:
            return [dict(record, subtask=name) for name, records in found.items()
                    for record in records]
        merged = []
        for rows in zip(*found.values()):
            record = {}
            for name, row in zip(found, rows):
                row = dict(row)
                key = next(iter(row))
                record.setdefault(key, row.pop(key))
                record[name] = row
            merged.append(record)
        return merged

    def serving_module(self, run, labels_file):
        """The MultiTaskServer of every subtask's own serving module (its labels written
        beside `labels_file`)."""
        chosen = subtasks(run.cfg)
        runs = _runs(run, chosen)
        servers = {}
        for subtask in chosen:
            own_labels = os.path.join(os.path.dirname(labels_file), f"labels_{subtask.name}.txt")
            with open(own_labels, "w") as f:
                f.write("\n".join(subtask.cfg.labels) + "\n")
            servers[subtask.name] = subtask.task.serving_module(runs[subtask.name], own_labels)
        return _server_class()(servers, self.serving_assets(labels_file))

    def serving_examples(self, split):
        """Each subtask's serving examples, keyed `<name>/<input>`."""
        return {f"{name}/{key}": values for name, part in split.parts.items()
                for key, values in split.tasks[name].serving_examples(part).items()}

    def parity(self, run, examples):
        """Each subtask's own parity checks under its exported signature names, and
        serving_default's (the first subtask's)."""
        chosen = subtasks(run.cfg)
        runs = _runs(run, chosen)
        checks = {}
        for subtask in chosen:
            own = {key.split("/", 1)[1]: values for key, values in examples.items()
                   if key.split("/", 1)[0] == subtask.name}
            for name, check in subtask.task.parity(runs[subtask.name], own).items():
                checks[_exported_name(subtask.name, name)] = check
        checks["serving_default"] = checks[chosen[0].name]
        return checks
