"""What the entry points do: train, evaluate, predict and export an Experiment.

Entry points (`python -m tfimitate.train` ...) only parse flags and call these,
so everything here runs the same from Python.

Example:
    from tfimitate.config import Experiment
    train(Experiment(model_dir="runs/sst2", train_data="train.tsv", text_column="0",
                     label_column="1", max_steps=100))
"""

import csv
import json
import math
import os
import tempfile

from absl import logging

from tfimitate import reports
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.tasks import get_task

EVAL_SUBDIR = "eval"
LABELS_FILE = "labels.txt"


def _check_model_dir(cfg):
    """Refuses a model_dir that holds a different experiment (resuming it would mix runs)."""
    if not os.path.isfile(os.path.join(cfg.model_dir, "experiment.json")):
        return
    previous = Experiment.load(cfg.model_dir)
    for field in ("task", "backbone", "labels", "text_pair_column"):
        before, now = getattr(previous, field), getattr(cfg, field)
        if before != now and not (field == "labels" and now is None):
            raise UserError(
                f"--model_dir={cfg.model_dir} holds a run with --{field}={before}, not {now}; "
                "choose a new --model_dir (or re-run with the same flags to resume).")


def train(cfg):
    """Trains, evaluates and (with cfg.export_dir) exports; returns the eval metrics."""
    from tfimitate import runtime
    from tfimitate.serving import export as export_lib
    from tfimitate.training import loop

    task = get_task(cfg.task)
    # First, before other TensorFlow work: multi-worker collectives are set up at startup.
    strategy = runtime.make_strategy(cfg.strategy, cfg.tpu)
    _check_model_dir(cfg)
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=tuple(data.labels))
    if cfg.export_dir:
        export_lib.next_version(cfg.export_dir)  # fail now, not after training
    runtime.set_precision(cfg.precision)
    runtime.set_seeds(cfg.seed)
    preprocessor = task.make_preprocessor(cfg)
    with strategy.scope():
        model = task.build_model(cfg, len(data.labels))
    chief = runtime.is_chief(strategy)
    if chief:
        os.makedirs(cfg.model_dir, exist_ok=True)
        cfg.save(cfg.model_dir)

    steps_per_epoch = max(1, math.ceil(len(data.train) / cfg.batch_size))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    logging.info("Training on %d examples, evaluating on %d (%s); %d steps of batch %d.",
                 len(data.train), len(data.eval), data.eval.source, total_steps, cfg.batch_size)
    train_ds = task.train_dataset(data.train, preprocessor, cfg, data.labels,
                                  static_length=runtime.needs_static_shapes(strategy))

    def evaluate_fn(model):
        return task.evaluate(model, data.eval, preprocessor, cfg, strategy, data.labels)

    result = loop.train_loop(model, task.loss_fn, train_ds, evaluate_fn, cfg, strategy,
                             steps_per_epoch, total_steps)
    metrics = _report(task, model, data.eval, preprocessor, cfg, strategy, data.labels,
                      result.step, "metrics", chief, result.final_metrics)
    if data.test is not None:
        _report(task, model, data.test, preprocessor, cfg, strategy, data.labels,
                result.step, "test_metrics", chief)
    if cfg.export_dir and chief:
        export_model(task, model, preprocessor, cfg, data.eval)
    if chief:
        print(f"Done at step {result.step}: checkpoints, TensorBoard logs and reports are in "
              f"{cfg.model_dir} (eval/metrics.json).", flush=True)
    return metrics


def _report(task, model, split, preprocessor, cfg, strategy, labels, step, name, write,
            metrics=None):
    """Prints and (if `write`) saves the metrics of `model` on `split`; evaluates
    only when `metrics` of these exact weights are not given."""
    metrics = dict(metrics or task.evaluate(model, split, preprocessor, cfg, strategy, labels))
    metrics["step"] = step
    metrics["data"] = split.source
    report = metrics.pop("report")
    print(f"\n{name} on {split.source} at step {step}:\n{report}", flush=True)
    if write:
        directory = os.path.join(cfg.model_dir, EVAL_SUBDIR)
        path = reports.write_metrics(directory, name, metrics)
        if "confusion_matrix" in metrics:
            reports.plot_confusion_matrix(
                metrics["confusion_matrix"], metrics["labels"],
                os.path.join(directory, f"{name}_confusion_matrix.png"),
                f"{os.path.basename(split.source)}, step {step}")
        logging.info("Wrote %s", path)
    return metrics


def restore(cfg):
    """Rebuilds the trained model of `cfg.model_dir` from its newest checkpoint."""
    from tfimitate import runtime
    from tfimitate.training import loop

    task = get_task(cfg.task)
    runtime.set_precision(cfg.precision)
    model = task.build_model(cfg, len(cfg.labels), load_weights=False)
    step = loop.restore_latest(model, cfg.model_dir)
    if step is None:
        raise UserError(f"--model_dir={cfg.model_dir} has no checkpoint yet; train first.")
    return task, model, step


def evaluate(model_dir, eval_data=None):
    """Evaluates the newest checkpoint of `model_dir` on `eval_data` (default: the run's eval set)."""
    import tensorflow as tf

    cfg = Experiment.load(model_dir)
    task = get_task(cfg.task)
    if eval_data:
        split = task.read_split(eval_data, cfg, "--eval_data")
        split = task.check_labels(split, cfg.labels, "--eval_data", cfg.drop_unlisted_labels)
    else:
        split = task.load_data(cfg).eval
    task, model, step = restore(cfg)
    preprocessor = task.make_preprocessor(cfg)
    return _report(task, model, split, preprocessor, cfg, tf.distribute.get_strategy(),
                   cfg.labels, step, "metrics", True)


def predict(model_dir, input_path, output_path):
    """Writes one prediction per input row to `output_path` (.jsonl or .csv)."""
    import tensorflow as tf

    if not output_path or os.path.splitext(output_path)[1] not in (".jsonl", ".csv"):
        raise UserError(f"--output={output_path}: give a file ending in .jsonl or .csv.")
    cfg = Experiment.load(model_dir)
    task = get_task(cfg.task)
    split = task.read_inputs(input_path, cfg)
    task, model, _ = restore(cfg)
    preprocessor = task.make_preprocessor(cfg)
    records = task.predict(model, split, preprocessor, cfg, tf.distribute.get_strategy(), cfg.labels)
    _write_records(records, output_path)
    logging.info("Wrote %d predictions to %s", len(records), output_path)
    return records


def _write_records(records, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as f:
        if path.endswith(".jsonl"):
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            flat = [{k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                     for k, v in record.items()} for record in records]
            writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["text"])
            writer.writeheader()
            writer.writerows(flat)
    os.replace(temporary, path)


def export(model_dir, export_dir, version=None):
    """Exports the newest checkpoint of `model_dir` as `<export_dir>/<version>/`."""
    from tfimitate.serving import export as export_lib

    cfg = Experiment.load(model_dir)
    export_lib.next_version(export_dir, version)  # fail before loading anything
    task, model, _ = restore(cfg)
    preprocessor = task.make_preprocessor(cfg)
    data = task.load_data(cfg)
    return export_model(task, model, preprocessor, cfg.replace(export_dir=export_dir),
                        data.eval, version)


def export_model(task, model, preprocessor, cfg, split, version=None):
    """Builds the task's serving module and writes a checked version directory."""
    from tfimitate.serving import export as export_lib
    from tfimitate.serving import warmup

    with tempfile.TemporaryDirectory() as scratch:
        labels_file = os.path.join(scratch, LABELS_FILE)
        with open(labels_file, "w") as f:
            f.write("\n".join(cfg.labels) + "\n")
        module = task.serving_module(model, preprocessor, labels_file, cfg)
        inputs = task.parity_inputs(split)
        expected = task.keras_outputs(model, preprocessor, inputs)
        model_name = os.path.basename(os.path.normpath(cfg.export_dir))
        path = export_lib.export_saved_model(
            module, cfg.export_dir, inputs, expected, version,
            write_extras=lambda directory: warmup.write_warmup_requests(directory, inputs, model_name))
    print(f"Exported the model to {path}", flush=True)
    return path
