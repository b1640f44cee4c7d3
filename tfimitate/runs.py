"""The run directory: what a training run writes where, and reading a run back.

A run directory (--model_dir) holds one experiment. Evaluate, predict, export, a
distillation teacher and --init_from read a run back from it alone, wherever the folder
has since been copied or moved:

    runs/sst2/                    --model_dir
    ├── experiment.json           the Experiment (config.Experiment.save / load)
    ├── flags.cfg                 flags that re-run it: --flagfile=runs/sst2/flags.cfg
    ├── serving_examples.json     real eval inputs an export checks parity and warms up with
    ├── runtime.json              what --precision=auto etc. resolved to on the training machine
    ├── checkpoints/              the newest --keep_checkpoints (training/checkpoints.py)
    │   └── best/                 the best one under early stopping
    ├── logs/train/               TensorBoard scalars (training/loop.py)
    ├── eval/                     metrics.json, test_metrics.json and their figures
    │                             (metrics_confusion_matrix.png ...), curves.png,
    │                             robustness.json, saved_model_metrics.json,
    │                             cv_metrics.json (crossval), distill.json (distillation)
    ├── teacher_outputs/          distillation's cached teacher outputs
    ├── folds/<k>/                one run directory per cross-validation fold
    ├── trial_result.json         a search trial's score (search/trials.py)
    └── .lock                     held by the one trainer (files.RunLock)

An exported version records the run and step it came from (`export_source`, written to
<version>/assets.extra/tfimitate_source.json by serving/export.py), so that
`evaluate --saved_model` finds its run.

Parts written by modules below this one in the layers (config.py, training/, the
techniques, files.py) keep their names there, since those import nothing from here;
this module reads them through their owners.

Example:
    task, run, step = restore("runs/sst2")             # the newest checkpoint, ready to use
    examples = load_serving_examples(task, run.cfg)
    eval_path("runs/sst2", "metrics.json")            # "runs/sst2/eval/metrics.json"
"""

import base64
import json
import os

from tfimitate import config, files
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.tasks import base, get_task

EVAL_SUBDIR = "eval"
FOLDS_SUBDIR = "folds"
# Real eval examples saved with the run, so export needs no training data.
SERVING_EXAMPLES_FILE = "serving_examples.json"
# What the run's machine-dependent options resolved to (precision "auto": the policy and why).
RUNTIME_FILE = "runtime.json"
# The label set, one per line, that an export ships as its assets/labels.txt.
LABELS_FILE = "labels.txt"


def is_run(path):
    """True if `path` holds a training run (its experiment.json)."""
    return files.isfile(os.path.join(path, config.EXPERIMENT_FILE))


def experiment(model_dir):
    """The Experiment of the run in `model_dir`, with model_dir set to where the run is now
    (the model_dir it recorded is a copy's or a moved run's old place)."""
    return Experiment.load(model_dir).replace(model_dir=model_dir)


def eval_path(model_dir, name):
    """The path of report `name` (e.g. "metrics.json") in the run's eval/ folder."""
    return os.path.join(model_dir, EVAL_SUBDIR, name)


def fold_dir(model_dir, fold):
    """The run directory of cross-validation fold `fold` of the run in `model_dir`."""
    return os.path.join(model_dir, FOLDS_SUBDIR, str(fold))


def log_dir(model_dir):
    """The run's TensorBoard folder (written by the training loop)."""
    from tfimitate.training import loop

    return os.path.join(model_dir, loop.LOG_SUBDIR)


def checkpoint_dirs(model_dir):
    """The run's checkpoint folders that exist (its own, then each fold's), relative to it."""
    from tfimitate.training.checkpoints import CHECKPOINT_SUBDIR

    found = [CHECKPOINT_SUBDIR] if files.isdir(os.path.join(model_dir, CHECKPOINT_SUBDIR)) else []
    folds = os.path.join(model_dir, FOLDS_SUBDIR)
    for fold in sorted(files.listdir(folds)) if files.isdir(folds) else []:
        found += [os.path.join(FOLDS_SUBDIR, fold, relative)
                  for relative in checkpoint_dirs(os.path.join(folds, fold))]
    return found


def check_resume(task, cfg):
    """Refuses a model_dir that holds a different experiment (resuming it would mix runs)."""
    from tfimitate import techniques

    if is_run(cfg.model_dir):
        base.check_resume(task, Experiment.load(cfg.model_dir), cfg, techniques.resume_fields())


def check_resume_labels(cfg, labels):
    """Refuses to resume a run whose data now gives another label set (every task's, a
    multi-task run's `subtask:label` list included): the model's output rows would be
    reused under other labels' names."""
    if not is_run(cfg.model_dir):
        return
    before = Experiment.load(cfg.model_dir).labels
    if before is not None and tuple(before) != tuple(labels):
        if sorted(before) == sorted(labels):
            raise UserError(
                f"--model_dir={cfg.model_dir} holds a run whose labels are in the order "
                f"{_listed(before)}, not {_listed(labels)}; re-run with --labels="
                f"{','.join(before)} to resume it.")
        raise UserError(
            f"--model_dir={cfg.model_dir} holds a run trained on the labels {_listed(before)}, "
            f"but its data now gives {_listed(labels)}; resuming would reuse the model's outputs "
            "under other labels: choose a new --model_dir (with --init_from and --label_map to "
            "start from this run), or restore the data it was trained on.")


def _listed(labels, limit=8):
    shown = ", ".join(labels[:limit])
    return f"({shown}{', ...' if len(labels) > limit else ''})"


def save_evaluation(model_dir, name, metrics, figures=None):
    """Writes `metrics` as eval/<name>.json and each figure (name -> draw(path)) as
    eval/<name>_<figure>.png; returns the JSON's path."""
    path = files.write_atomically(eval_path(model_dir, f"{name}.json"),
                                  json.dumps(metrics, indent=2))
    for figure, draw in (figures or {}).items():
        draw(eval_path(model_dir, f"{name}_{figure}.png"))
    return path


def save_runtime(model_dir, **resolved):
    """Writes what the run's options resolved to on this machine (e.g. precision="mixed_bfloat16",
    precision_reason="...") and the CPU, as runtime.json: experiment.json keeps "auto"."""
    from tfimitate import runtime

    files.write_atomically(os.path.join(model_dir, RUNTIME_FILE), json.dumps(
        dict(resolved, cpu_bf16_flags=sorted(runtime.cpu_flags() & set(runtime.BF16_CPU_FLAGS))),
        indent=2))


def save_serving_examples(model_dir, examples):
    """Writes the serving examples ({input name: values}) with the run; bytes values are
    written as {"b64": ...} (TF Serving's REST form)."""
    encode = lambda v: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
    files.write_atomically(
        os.path.join(model_dir, SERVING_EXAMPLES_FILE),
        json.dumps({name: [encode(v) for v in values] for name, values in examples.items()}))


def load_serving_examples(task, cfg):
    """The serving examples saved by training (runs from before they were saved: the eval data)."""
    path = os.path.join(cfg.model_dir, SERVING_EXAMPLES_FILE)
    if not files.isfile(path):
        return task.serving_examples(task.load_data(cfg).eval)
    examples = json.loads(files.read_bytes(path))
    decode = lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict) else v
    return {name: [decode(v) for v in values] for name, values in examples.items()}


def write_labels(directory, labels):
    """Writes the label set, one a line, as `directory`/labels.txt (an export's asset);
    returns its path."""
    path = os.path.join(directory, LABELS_FILE)
    with open(path, "w") as f:
        f.write("\n".join(labels) + "\n")
    return path


def export_source(model_dir, step):
    """What an export records of its origin: the run (an absolute path) and the step."""
    return {"model_dir": files.abspath(model_dir), "step": int(step)}


def exported_from(saved_model):
    """The `export_source` recorded in `saved_model` ({} if it has none)."""
    from tfimitate.serving import export as export_lib

    return export_lib.read_source(saved_model)


def exported_run(saved_model):
    """The run folder `saved_model` was exported from, if it still exists."""
    model_dir = exported_from(saved_model).get("model_dir")
    if not model_dir or not is_run(model_dir):
        raise UserError(f"--saved_model={saved_model} does not name a run that still exists; "
                        "give --model_dir=RUN of a run with its task, labels and eval data.")
    return model_dir


def build_model(task, cfg, num_outputs, chosen_techniques, load_weights=True):
    """The one place a model is built: backbone, the task's head, then the techniques'
    model hooks. Call under the strategy's scope when training."""
    from tfimitate import backbones, techniques

    backbone = backbones.load_backbone(cfg.backbone, load_weights=load_weights,
                                       layer=cfg.backbone_layer)
    model = task.build_head(cfg, backbone, num_outputs)
    return techniques.adapt_model(chosen_techniques, model, cfg)


def restore(model_dir, flag="--model_dir"):
    """The task, a Run of the newest checkpoint, and its step, of the run in `model_dir`
    (given as `flag`, which messages name).

    `model_dir` is the run, wherever it now lives: the model_dir recorded in its
    experiment.json (a copy's or a moved run's original place) is not used.
    """
    import tensorflow as tf

    from tfimitate import runtime, techniques
    from tfimitate.training import checkpoints, loop

    cfg = experiment(model_dir)
    task = get_task(cfg.task)
    runtime.set_precision(cfg.precision)
    chosen = techniques.chosen(cfg)
    keep = techniques.checkpoint_filter(chosen)  # None: checkpoints hold every weight
    model = build_model(task, cfg, task.num_outputs(cfg.labels), chosen,
                        load_weights=keep is not None)
    step = checkpoints.restore_latest(model, model_dir, keep=keep)
    if step is None:
        raise UserError(f"{flag}={model_dir} has no checkpoint yet; train it first.")
    loop.check_finite_weights(model, f"{flag}={model_dir}: the checkpoint of step {step}")
    run = base.Run(cfg, model, task.make_preprocessor(cfg), tf.distribute.get_strategy())
    return task, run, step
