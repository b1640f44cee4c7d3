"""What the entry points do: train, evaluate, predict and export an Experiment.

Entry points (`python -m tfimitate.train` ...) only parse flags and call these,
so everything here runs the same from Python. Everything task-specific goes
through the task protocol (tasks/base.py), everything technique-specific through
the technique hooks (training/techniques.py).

Example:
    from tfimitate.config import Experiment
    train(Experiment(model_dir="runs/sst2", train_data="train.tsv", text_column="0",
                     label_column="1", max_steps=100))
"""

import base64
import contextlib
import csv
import io
import json
import math
import os
import tempfile

from absl import logging

from tfimitate import files
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.tasks import base, get_task

EVAL_SUBDIR = "eval"
LABELS_FILE = "labels.txt"
# Real eval examples saved with the run, so export needs no training data.
SERVING_EXAMPLES_FILE = "serving_examples.json"


def build_model(task, cfg, num_outputs, chosen_techniques, load_weights=True):
    """The one place a model is built: backbone, the task's head, then the techniques'
    model hooks. Call under the strategy's scope when training."""
    from tfimitate import backbones
    from tfimitate.training import techniques

    backbone = backbones.load_backbone(cfg.backbone, load_weights=load_weights)
    model = task.build_head(cfg, backbone, num_outputs)
    return techniques.adapt_model(chosen_techniques, model, cfg)


def _check_model_dir(task, cfg):
    """Refuses a model_dir that holds a different experiment (resuming it would mix runs)."""
    if os.path.isfile(os.path.join(cfg.model_dir, "experiment.json")):
        base.check_resume(task, Experiment.load(cfg.model_dir), cfg)


def train(cfg):
    """Trains, evaluates and (with cfg.export_dir) exports; returns the eval metrics."""
    from tfimitate import runtime
    from tfimitate.serving import export as export_lib

    task = get_task(cfg.task)
    task.validate(cfg)
    files.check_writable_dir(cfg.model_dir, "--model_dir")
    if cfg.export_dir:
        files.check_writable_dir(cfg.export_dir, "--export_dir")
    # First, before other TensorFlow work: multi-worker collectives are set up at startup.
    strategy = runtime.make_strategy(cfg.strategy, cfg.tpu)
    _check_model_dir(task, cfg)
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=tuple(data.labels))
    if cfg.export_dir:
        export_lib.next_version(cfg.export_dir)  # fail now, not after training
    return _train(task, cfg, data, strategy)


def _train(task, cfg, data, strategy):
    from tfimitate import runtime
    from tfimitate.training import loop, optim, techniques

    runtime.set_precision(cfg.precision)
    runtime.set_seeds(cfg.seed)
    preprocessor = task.make_preprocessor(cfg)
    chosen = techniques.chosen(cfg)
    training = techniques.adapt_examples(chosen, techniques.Examples(data.train), task, data, cfg)
    steps_per_epoch = max(1, math.ceil(len(training.split) / cfg.batch_size))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    with strategy.scope():
        model = build_model(task, cfg, len(data.labels), chosen)
        optimizer = optim.make_optimizer(
            cfg.learning_rate, total_steps, cfg.warmup_ratio, cfg.weight_decay,
            loss_scale=cfg.precision == "mixed_float16")
    run = base.Run(cfg, model, preprocessor, strategy)
    examples = task.serving_examples(data.eval)
    chief = runtime.is_chief(strategy)
    with contextlib.ExitStack() as lock:
        if chief:  # only techniques' caches are written before this; one trainer per run
            lock.enter_context(files.RunLock(cfg.model_dir))
            cfg.save(cfg.model_dir)
            files.write_atomically(os.path.join(cfg.model_dir, SERVING_EXAMPLES_FILE),
                                   _dump_examples(examples))
        logging.info("Training on %d examples, evaluating on %d (%s); %d steps of batch %d.",
                     len(training.split), len(data.eval), data.eval.source, total_steps,
                     cfg.batch_size)
        train_ds = techniques.adapt_dataset(
            chosen, task.train_dataset(run, training.split, dict(training.extras)), cfg)
        step_loss = techniques.wrap_loss(chosen, techniques.supervised_loss(task), run)
        result = loop.train_loop(model, optimizer, step_loss, train_ds,
                                 lambda: task.evaluate(run, data.eval), cfg, strategy,
                                 steps_per_epoch, total_steps)
        evaluation = result.final_evaluation or task.evaluate(run, data.eval)
        metrics = _report(evaluation, data.eval, cfg, result.step, "metrics", chief)
        if data.test is not None:
            _report(task.evaluate(run, data.test), data.test, cfg, result.step, "test_metrics",
                    chief)
        techniques.finish(chosen, task, run, data, chief)
        if cfg.export_dir and chief:
            export_model(task, run, examples, result.step)
    if chief:
        print(f"Done at step {result.step}: checkpoints, TensorBoard logs and reports are in "
              f"{cfg.model_dir} (eval/metrics.json).", flush=True)
    return metrics


def _report(evaluation, split, cfg, step, name, write):
    """Prints `evaluation` and (if `write`) saves its metrics and figures under eval/."""
    metrics = dict(evaluation.metrics, step=step, data=split.source)
    print(f"\n{name} on {split.source} at step {step}:\n{evaluation.report}", flush=True)
    if write:
        directory = os.path.join(cfg.model_dir, EVAL_SUBDIR)
        path = files.write_atomically(os.path.join(directory, f"{name}.json"),
                                      json.dumps(metrics, indent=2))
        for figure, draw in evaluation.figures.items():
            draw(os.path.join(directory, f"{name}_{figure}.png"))
        logging.info("Wrote %s", path)
    return metrics


def restore(model_dir):
    """The task and a Run of the newest checkpoint of the run in `model_dir`.

    `model_dir` is the run, wherever it now lives: the model_dir recorded in its
    experiment.json (a copy's or a moved run's original place) is not used.
    """
    import tensorflow as tf

    from tfimitate import runtime
    from tfimitate.training import loop, techniques

    cfg = Experiment.load(model_dir).replace(model_dir=model_dir)
    task = get_task(cfg.task)
    runtime.set_precision(cfg.precision)
    model = build_model(task, cfg, len(cfg.labels), techniques.chosen(cfg), load_weights=False)
    step = loop.restore_latest(model, model_dir)
    if step is None:
        raise UserError(f"--model_dir={model_dir} has no checkpoint yet; train first.")
    loop.check_finite_weights(model, f"--model_dir={model_dir}: the checkpoint of step {step}")
    run = base.Run(cfg, model, task.make_preprocessor(cfg), tf.distribute.get_strategy())
    return task, run, step


def evaluate(model_dir, eval_data=None):
    """Evaluates the newest checkpoint of `model_dir` on `eval_data` (default: the run's eval set)."""
    cfg = Experiment.load(model_dir).replace(model_dir=model_dir)
    task = get_task(cfg.task)
    if eval_data:
        split = task.read_file(eval_data, cfg, "--eval_data")
    else:
        split = task.load_data(cfg).eval
    task, run, step = restore(model_dir)
    return _report(task.evaluate(run, split), split, cfg, step, "metrics", True)


def predict(model_dir, input_path, output_path):
    """Writes one prediction per input row to `output_path` (.jsonl or .csv)."""
    if not output_path or os.path.splitext(output_path)[1] not in (".jsonl", ".csv"):
        raise UserError(f"--output={output_path}: give a file ending in .jsonl or .csv.")
    if input_path and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise UserError(f"--output={output_path} is the --input file; writing it would replace "
                        "the input: choose another output path.")
    files.check_writable_file(output_path, "--output")
    cfg = Experiment.load(model_dir)
    task = get_task(cfg.task)
    split = task.read_file(input_path, cfg, "--input", with_labels=False)
    task, run, _ = restore(model_dir)
    records = task.predict(run, split)
    files.write_atomically(output_path, _format_records(records, output_path))
    logging.info("Wrote %d predictions to %s", len(records), output_path)
    return records


def _format_records(records, path):
    if path.endswith(".jsonl"):
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    flat = [{k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
             for k, v in record.items()} for record in records]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["text"])
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def export(model_dir, export_dir, version=None):
    """Exports the newest checkpoint of `model_dir` as `<export_dir>/<version>/`."""
    from tfimitate.serving import export as export_lib

    files.check_writable_dir(export_dir, "--export_dir")
    export_lib.next_version(export_dir, version)  # fail before loading anything
    task, run, step = restore(model_dir)
    run = base.Run(run.cfg.replace(export_dir=export_dir), run.model, run.preprocessor,
                   run.strategy)
    return export_model(task, run, _load_examples(task, run.cfg), step, version)


def _dump_examples(examples):
    """JSON of serving examples; bytes values are written as {"b64": ...} (TF Serving's REST form)."""
    encode = lambda v: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
    return json.dumps({name: [encode(v) for v in values] for name, values in examples.items()})


def _load_examples(task, cfg):
    """The serving examples saved by training (runs from before they were saved: the eval data)."""
    path = os.path.join(cfg.model_dir, SERVING_EXAMPLES_FILE)
    if not os.path.isfile(path):
        return task.serving_examples(task.load_data(cfg).eval)
    with open(path) as f:
        examples = json.load(f)
    decode = lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict) else v
    return {name: [decode(v) for v in values] for name, values in examples.items()}


def export_model(task, run, examples, step, version=None):
    """Builds the task's serving module and writes a checked version directory.

    Unless a `version` is asked for, a checkpoint already exported (same run, same
    step) is not exported again: TF Serving would switch to an identical new version.
    """
    from tfimitate.serving import export as export_lib
    from tfimitate.serving import warmup

    source = {"model_dir": os.path.abspath(run.cfg.model_dir), "step": int(step)}
    existing = export_lib.version_exported_from(run.cfg.export_dir, source)
    if existing and version is None:
        print(f"Step {step} of this run is already exported as {existing}; nothing to do "
              "(pass --export_version=N to write another version).", flush=True)
        return existing

    def write_extras(directory):
        export_lib.record_source(directory, source)
        warmup.write_warmup_requests(
            directory, {name: inputs for name, (inputs, _) in checks.items()}, model_name)

    with tempfile.TemporaryDirectory() as scratch:
        labels_file = os.path.join(scratch, LABELS_FILE)
        with open(labels_file, "w") as f:
            f.write("\n".join(run.labels) + "\n")
        module = task.serving_module(run, labels_file)
        checks = task.parity(run, examples)
        model_name = os.path.basename(os.path.normpath(run.cfg.export_dir))
        path = export_lib.export_saved_model(module, run.cfg.export_dir, checks, version,
                                             write_extras=write_extras)
    print(f"Exported the model to {path}", flush=True)
    return path
