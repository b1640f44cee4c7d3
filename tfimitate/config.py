"""The resolved experiment: one frozen record built from the flags and saved with the model.

Every option is declared once, by its owner: the core options below (read by several
owners: data, model, training, runtime), each task class (`OPTIONS` of its class, see
tasks/base.py) and each technique module (its module-level `OPTIONS`). `OPTIONS` is
assembled from them, core first, then the tasks and the techniques in registry order,
and the frozen `Experiment` has one field per option, with the same flat name as its flag
(tfimitate/flags.py generates the absl flags from the same list). Assembling imports the
task and technique modules, which import no TensorFlow, so a flag mistake is answered in
about a second.

Library code reads flagfiles of its own (multi-task subtask files, search spaces) with the
typed reader here (`read_flagfile`, `parse_value`), never through absl's flags.

Example:
    cfg = experiment_from_flags()          # after absl parsed the command line
    cfg.save("runs/sst2")                  # experiment.json + re-runnable flags.cfg
    cfg = Experiment.load("runs/sst2")     # what evaluate/predict/export use
    values = read_flagfile("configs/subtasks/sentiment.cfg")  # {"task": "text_classification", ...}
"""

import dataclasses
import json
import math
import os
from typing import Optional

from tfimitate import files, options, techniques
from tfimitate.errors import UserError
from tfimitate.tasks import TASKS, task_class

EXPERIMENT_FILE = "experiment.json"
FLAGFILE = "flags.cfg"

# The options of the experiment that no single task or technique owns.
CORE_OPTIONS = (
    # --- Experiment -----------------------------------------------------------
    options.choice(
        "task", "text_classification", sorted(TASKS),
        "What to train: text_classification (one label per text or text pair), "
        "token_classification (one tag per word, NER), or another registered task "
        "(tfimitate/tasks/__init__.py)."),
    options.string(
        "model_dir", None,
        "Where checkpoints, logs, experiment.json, flags.cfg and eval/ are written. "
        "Re-running the same command continues from its last checkpoint."),
    options.string(
        "export_dir", None,
        "If set, a SavedModel is written to <export_dir>/<version>/ after training "
        "(the layout TF Serving polls)."),
    options.string(
        "serving_version", None,
        "Oldest TF Serving release the export must load on, e.g. 2.12 (2.12-2.21); its ops "
        "and attributes are audited against that release's TensorFlow and TF Text. Default: "
        "the oldest release that has every op of the graph (written to "
        "assets.extra/tfimitate_serving.json)."),
    # --- Data (every task reads these) ----------------------------------------
    options.data(
        "train_data",
        "Training file: .csv, .tsv or .jsonl (optionally .gz/.bz2), or CoNLL for "
        "token_classification; also a file pattern or a comma-separated list "
        "(gs://b/train-*.tsv.gz), TFRecord files of tf.Example (text and image "
        "classification) or a tfimitate.prepare directory (text classification; see "
        "--stream_data). `package:NAME/path` reads a file shipped inside an "
        "installed Python package; `tfds:NAME[/CONFIG][:SPLIT]` a prepared TensorFlow "
        "Datasets split (every task; the column flags name its features; see "
        "--tfds_data_dir). Local or gs:// paths."),
    options.data(
        "eval_data",
        "Evaluation file, same format as --train_data. If unset, a seeded "
        "--holdout_fraction of the training data is held out instead."),
    options.data(
        "test_data",
        "Optional test file, evaluated once after training."),
    options.string(
        "text_column", "text",
        "Column holding the text: a header name, or a 0-based index for files "
        "without a header row (tfds: inputs: a feature key; token_classification: its "
        "Sequence(Text) of words)."),
    options.string(
        "label_column", "label",
        "Column holding the label: a name or a 0-based index (tfds: inputs: a feature key, "
        "usually a ClassLabel; token_classification: its Sequence(ClassLabel) of tags)."),
    options.names(
        "labels", None,
        "The label set, in class-id order. If unset, it is collected (sorted) from "
        "the training data (a tfds: input's ClassLabel names, in order) and saved with the model."),
    options.boolean(
        "drop_unlisted_labels", False,
        "With --labels: drop (and count) rows whose label is not listed, instead "
        "of stopping with an error."),
    options.number(
        "holdout_fraction", 0.1,
        "Fraction of the training data held out for evaluation when --eval_data "
        "is not given.", lower=0.0, upper=0.5),
    options.choice(
        "stream_data", "auto", ("auto", "on", "off"),
        "Read data files as a stream (tf.data, bounded memory, each host its own files) "
        "instead of into memory: auto streams several files, TFRecord files and splits over "
        "64 MiB (text_classification; other tasks read files into memory)."),
    options.string(
        "tfds_data_dir", None,
        "Where prepared TensorFlow Datasets are (local or gs://) for data flags of the form "
        "tfds:NAME[/CONFIG][:SPLIT]; default TFDS's own (~/tensorflow_datasets). Nothing is "
        "downloaded: prepare the dataset there first (tfds build NAME --data_dir=DIR)."),
    # --- Model ----------------------------------------------------------------
    options.string(
        "backbone", "minilm_l6",
        "Pretrained backbone: `minilm_l6` (packaged, offline), a keras-hub preset "
        "name (e.g. bert_base_en_uncased; needs a model hub), an `hf://` handle, "
        "or a local keras-hub / Hugging Face model folder."),
    options.integer(
        "sequence_length", 128,
        "Maximum word pieces per example, special tokens included. Batches are "
        "padded only to their longest example.", lower=8),
    options.number(
        "dropout", 0.1,
        "Dropout before the classification head.", lower=0.0, upper=0.9),
    # --- Training -------------------------------------------------------------
    options.integer(
        "batch_size", 32,
        "Global batch size (split across replicas).", lower=1),
    options.integer(
        "epochs", 3,
        "Passes over the training data.", lower=1),
    options.integer(
        "max_steps", 0,
        "If > 0, stop after this many optimizer steps (overrides --epochs).", lower=0),
    options.number(
        "learning_rate", 5e-5,
        "Peak learning rate of AdamW.", lower=0.0),
    options.number(
        "warmup_ratio", 0.1,
        "Fraction of the steps with a linear warmup; the rest decays linearly to 0.",
        lower=0.0, upper=1.0),
    options.number(
        "weight_decay", 0.01,
        "AdamW decoupled weight decay (not applied to biases and LayerNorm).", lower=0.0),
    options.integer(
        "seed", 42,
        "Seed for shuffling, holdout and initialisation."),
    options.integer(
        "eval_steps", 0,
        "Evaluate every this many steps (0: at the end of every epoch).", lower=0),
    options.integer(
        "early_stopping_patience", 0,
        "If > 0, stop after this many evaluations without a better eval score and "
        "restore the best weights.", lower=0),
    options.boolean(
        "keep_best_phase", False,
        "With training phases (a frozen backbone, then fine-tuning): evaluate at the end of "
        "each phase, and if a later phase lowered the eval score, end with the weights of the "
        "best phase end (logged; what evaluate and export then use)."),
    options.integer(
        "checkpoint_steps", 500,
        "Write a checkpoint every this many steps (and always at the end).", lower=1),
    options.integer(
        "keep_checkpoints", 3,
        "How many recent checkpoints to keep.", lower=1),
    # --- Search and cross-validation ------------------------------------------
    options.integer(
        "cv_folds", 0,
        "If >= 2, train: K-fold cross-validation of the training data (seeded by --seed, "
        "stratified by label where a task has one label per example), one run per fold in "
        "<model_dir>/folds/<k>/ and mean ± std of every metric in <model_dir>/eval/cv_metrics.json.",
        lower=0),
    options.integer(
        "cv_fold", -1,
        "With --cv_folds: train only this fold (0-based; what each fold's flags.cfg says); "
        "-1 trains them all.", lower=-1),
    # --- Runtime --------------------------------------------------------------
    options.choice(
        "strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
        "tf.distribute strategy. auto: tpu if --tpu is given, mirrored over all GPUs if "
        "there are several, else one device. mirrored without GPUs uses every logical "
        "CPU device. multi_worker reads TF_CONFIG."),
    options.string(
        "tpu", None,
        "TPU address (grpc://...), name, or `local`; used by --strategy=tpu."),
    options.choice(
        "precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
        "Keras dtype policy. Heads and loss stay float32; float16 uses loss scaling."),
    options.boolean(
        "jit_compile", False,
        "Compile the training step with XLA."),
    options.integer(
        "steps_per_execution", 1,
        "Optimizer steps run inside one tf.function call (fewer host round trips).", lower=1),
)


def declared_options():
    """(owner, its options) for the core, every registered task class and every
    registered technique module, in that order: what OPTIONS is assembled from.

    Example:
        dict(declared_options())["task image_classification"]  # (Option("image_column", ...), ...)
    """
    yield "core", CORE_OPTIONS
    for name in TASKS:
        yield f"task {name}", task_class(name).OPTIONS
    for name in techniques.TECHNIQUES:
        yield f"technique {name}", getattr(techniques.module(name), "OPTIONS", ())


_DECLARED = tuple(declared_options())
OPTIONS = options.merge(*(group for _, group in _DECLARED),
                        owners=[owner for owner, _ in _DECLARED])
OPTION = {option.name: option for option in OPTIONS}


class _ExperimentMethods:
    """What an Experiment can do besides holding its fields (see Experiment below)."""

    def replace(self, **changes):
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def save(self, model_dir):
        """Writes experiment.json and a flags.cfg that re-runs this experiment, each atomically."""
        values = dataclasses.asdict(self)
        files.write_atomically(os.path.join(model_dir, EXPERIMENT_FILE), json.dumps(values, indent=2))
        files.write_atomically(os.path.join(model_dir, FLAGFILE), self.flagfile())

    def flagfile(self):
        """A flagfile's text (one --flag=value a line) that re-runs this experiment."""
        lines = ["# Re-run with: python -m tfimitate.train --flagfile=<this file>"]
        for name, value in dataclasses.asdict(self).items():
            if value is None or name == SOURCES_FIELD:
                continue
            if isinstance(value, bool):
                lines.append(f"--{name}" if value else f"--no{name}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"--{name}={','.join(value)}")
            else:
                lines.append(f"--{name}={value}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, model_dir):
        """Reads the experiment saved in `model_dir` by a training run."""
        path = os.path.join(model_dir, EXPERIMENT_FILE)
        if not files.isfile(path):
            raise UserError(
                f"--model_dir={model_dir} holds no {EXPERIMENT_FILE}; point it at "
                "the directory of a tfimitate.train run.")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            values = json.loads(files.read_bytes(path).decode("utf-8"))
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
            values = {k: tuple(v) if isinstance(v, list) else v
                      for k, v in values.items() if k in known}
            cfg = cls(**values)
        except (ValueError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError too
            flagfile = os.path.join(model_dir, FLAGFILE)
            rewrite = (f"delete it and re-run training with --flagfile={flagfile} "
                       f"--model_dir={model_dir} to rewrite it (training resumes from the last "
                       "checkpoint)"
                       if files.isfile(flagfile) else "restore it from a backup")
            reason = " ".join(str(error).split())[:120]
            raise UserError(f"{path} is damaged ({reason}); {rewrite}.") from None
        return cfg


# Where each option's value came from (tfimitate/recipes.py), saved in experiment.json:
# {name: {"from": "default" | "recipe" | "flagfile" | "command line", "reason": ...}};
# None for an Experiment made in Python.
SOURCES_FIELD = "option_sources"

Experiment = dataclasses.make_dataclass(
    "Experiment",
    [(o.name, o.annotation, dataclasses.field(default=o.default)) for o in OPTIONS]
    + [(SOURCES_FIELD, Optional[dict], dataclasses.field(default=None, compare=False))],
    bases=(_ExperimentMethods,), frozen=True)
Experiment.__module__ = __name__
Experiment.__doc__ = """Everything that defines a training run: one field per option of OPTIONS,
named as its flag, with its default.

Its last field, `option_sources`, is not an option: it records where each value came
from (see SOURCES_FIELD).

Example:
    Experiment(train_data="train.tsv", epochs=1).replace(batch_size=16)
"""


_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")


def field_types():
    """{field name: its type} of Experiment: str, int, float, bool or tuple (a comma list)."""
    kinds = {"string": str, "enum": str, "integer": int, "float": float, "bool": bool,
             "list": tuple}
    return {option.name: kinds[option.kind] for option in OPTIONS}


def parse_value(name, text, where):
    """The value of Experiment field `name` written as `--name=text` in a flagfile, typed as
    the field is; one UserError naming `where` (file:line) for a value the field refuses.

    Example:
        parse_value("labels", "neg,pos", "a.cfg:3")        # ("neg", "pos")
        parse_value("batch_size", "big", "a.cfg:4")        # UserError: a.cfg:4: 'big' is not
                                                           # a valid --batch_size (not an integer); ...
    """
    kind = field_types()[name]
    problem = None
    if kind is bool:
        value = text.lower() in _TRUE if text.lower() in _TRUE + _FALSE else None
        problem = "not true or false" if value is None else None
    elif kind is tuple:
        value = tuple(part.strip() for part in text.split(",")) if text else ()
    elif kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            value, problem = None, "not an integer" if kind is int else "not a number"
    else:
        value = text
    problem = problem or OPTION[name].problem(value)
    if problem:
        raise UserError(f"{where}: '{text}' is not a valid --{name} ({problem}); fix the value.")
    return value


def read_flagfile(path, flag="--flagfile", check=None):
    """{field name: typed value} of the `--name=value` lines of flagfile `path` (also
    `--name`/`--noname` for true/false fields; `#` and `//` comment lines; a nested
    `--flagfile=FILE` is read in its place; a later line wins). `check(name, where)`, if
    given, may refuse a field before its value is read. Anything else is one UserError
    naming file:line: a line that is not a flag of Experiment, a value its field refuses,
    a quoted value, a nested flagfile that cannot be read.

    Example:
        read_flagfile("configs/subtasks/sentiment.cfg", "--subtasks")
        # {"task": "text_classification", "train_data": "...", "loss_weight": 1.0}
    """
    files.check_readable_file(path, flag)
    values = {}
    _read_lines(path, values, check, [_same_file(path)])
    return values


def _same_file(path):
    """`path` as compared to find a flagfile that includes itself."""
    return path if files.is_remote(path) else os.path.realpath(path)


def _read_lines(path, values, check, reading):
    from tfimitate.data import readers

    text = readers.decode_utf8(files.read_bytes(path), path, "save it as UTF-8.")
    types = field_types()
    for number, line in enumerate(text.splitlines(), start=1):
        line, where = line.strip(), f"{path}:{number}"
        if not line or line.startswith(("#", "//")):
            continue
        name, equals, value = line[2:].partition("=") if line.startswith("--") else ("", "", "")
        if name == "flagfile" and equals:
            _read_nested(os.path.expanduser(value.strip()), where, values, check, reading)
            continue
        if not equals and name.startswith("no") and types.get(name[2:]) is bool:
            name, value = name[2:], "false"
        elif not equals and types.get(name) is bool:
            value = "true"
        if name not in types:
            raise UserError(f"{where}: '{line}' is not a --flag=value line of a known flag; "
                            "fix the line (see --helpfull).")
        if check:
            check(name, where)
        if not equals and types[name] is not bool:
            raise UserError(f"{where}: --{name} needs a value; write --{name}=VALUE.")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            raise UserError(f"{where}: a flagfile takes values literally, so the quotes would "
                            f"become part of the value; write --{name}={value[1:-1]}.")
        values[name] = parse_value(name, value, where)


def _read_nested(path, where, values, check, reading):
    if _same_file(path) in reading:
        raise UserError(f"{where}: --flagfile={path} is already being read (the flagfiles "
                        "include each other); remove the line.")
    if not files.isfile(path):
        raise UserError(f"{where}: --flagfile={path} does not exist; check the path.")
    _read_lines(path, values, check, reading + [_same_file(path)])


def experiment_from_flags(argv=None):
    """Builds the Experiment from parsed absl flags (train's view of them), with the
    recipes' values for the options the user left unset (tfimitate/recipes.py) and where
    each value came from; a run being resumed keeps the recipe values it recorded.
    `argv` (default sys.argv) tells the command line's flags from the flagfile's."""
    import sys

    from absl import flags

    from tfimitate import recipes

    values, explicit = {}, {}
    command_line = _named_flags((argv or sys.argv)[1:])
    for option in OPTIONS:
        flag = flags.FLAGS[option.name]
        values[option.name] = tuple(flag.value) if isinstance(flag.value, list) else flag.value
        if flag.present:
            explicit[option.name] = (recipes.COMMAND_LINE if option.name in command_line
                                     else recipes.FLAGFILE)
    cfg = Experiment(**values)
    recorded = _recorded_run(cfg.model_dir)
    cfg = recipes.apply(cfg, explicit, recorded)
    validate_for_training(cfg)
    return cfg


def _named_flags(arguments):
    """The flag names written in `arguments` (--name, -name=value, --noname), up to `--`."""
    names = set()
    for argument in arguments:
        if argument == "--":
            break
        if argument.startswith("-"):
            name = argument.lstrip("-").split("=", 1)[0]
            names.add(name)
            if name.startswith("no"):
                names.add(name[2:])
    return names


def _recorded_run(model_dir):
    """The Experiment saved in `model_dir` if it holds a run (which this one resumes)."""
    if model_dir and files.isfile(os.path.join(model_dir, EXPERIMENT_FILE)):
        return Experiment.load(model_dir)
    return None


# Data flags a user gives as paths (options.data); checked before TensorFlow is imported.
DATA_FLAGS = tuple(option.name for option in OPTIONS if option.data)


def check_inputs_exist(cfg, names=DATA_FLAGS):
    """Refuses a malformed `tfds:` input or a local data path that does not exist, without
    importing TensorFlow, so that a typo is told in about a second.

    Example:
        check_inputs_exist(Experiment(train_data="missing.tsv"))  # UserError
    """
    for name in names:
        check_input_exists(getattr(cfg, name), f"--{name}")


def check_input_exists(spec, flag):
    """The check of check_inputs_exist for one input `spec` given as `flag` (None passes).

    Example:
        check_input_exists("tfds:glue/sst2:validation", "--input")  # parses the spec only
    """
    from tfimitate.data import readers, streams, tfds_source

    if not spec or spec.startswith(readers.PACKAGE_PREFIX) or files.is_remote(spec):
        return
    if tfds_source.is_tfds(spec):
        tfds_source.parse(spec, flag)
        return
    if streams.is_file_list(spec):
        streams.expand(spec, flag)  # a pattern matching no file is told now
        return
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise UserError(f"{flag}={spec}: file {path} does not exist; check the path.")


def validate_for_training(cfg):
    """Raises UserError for flag combinations that cannot train."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{field.name}={value}: give a finite number.")
    if not cfg.model_dir:
        raise UserError("--model_dir is required: say where checkpoints and logs go.")
    if not cfg.train_data and not cfg.subtasks:  # multi_task: data is in the subtask files
        raise UserError("--train_data is required: give a .csv, .tsv or .jsonl file.")
    if cfg.labels is not None and len(set(cfg.labels)) != len(cfg.labels):
        raise UserError(f"--labels lists a label twice ({','.join(cfg.labels)}); list each once.")
    if cfg.drop_unlisted_labels and cfg.labels is None:
        raise UserError("--drop_unlisted_labels needs --labels: list the labels to keep.")
    if cfg.serving_version is not None:
        from tfimitate.serving import releases

        releases.release(cfg.serving_version)
    if cfg.strategy == "tpu" and not cfg.tpu:
        raise UserError("--strategy=tpu needs --tpu=ADDRESS (or --tpu=local on a TPU VM).")
