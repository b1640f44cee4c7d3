"""What the entry points do: train, evaluate, predict and export an Experiment.

Entry points (`python -m tfimitate.train` ...) only parse flags and call these,
so everything here runs the same from Python. Everything task-specific goes
through the task's class (tasks/base.py Task), everything technique-specific through
the technique hooks (tfimitate/techniques/, on training/hooks.py), and everything about
the run directory (its layout, building and restoring a model) through runs.py.

Example:
    from tfimitate.config import Experiment
    train(Experiment(model_dir="runs/sst2", train_data="train.tsv", text_column="0",
                     label_column="1", max_steps=100))
"""

import contextlib
import csv
import io
import json
import math
import os
import tempfile

from absl import logging

from tfimitate import config, files, outputs, runs
from tfimitate.errors import UserError
from tfimitate.tasks import base, get_task


def _check_sequence_length(cfg):
    """Refuses a --sequence_length beyond the backbone's position embeddings."""
    from tfimitate import backbones

    limit = backbones.max_sequence_length(cfg.backbone)
    if limit and cfg.sequence_length > limit:
        raise UserError(f"--sequence_length={cfg.sequence_length} is longer than --backbone="
                        f"{cfg.backbone} allows ({limit}); give at most {limit}.")


def train(cfg):
    """Trains, evaluates and (with cfg.export_dir) exports; returns the eval metrics (with
    `score`). With cfg.cv_folds and no cfg.cv_fold: one run per fold, returning the
    cross-validation summary (crossval.train_folds)."""
    # Cheap checks first: a wrong path is told before TensorFlow is imported.
    config.check_inputs_exist(cfg)
    files.check_writable_dir(cfg.model_dir, "--model_dir")
    if cfg.export_dir:
        files.check_writable_dir(cfg.export_dir, "--export_dir")
    from tfimitate import crossval, runtime, techniques
    from tfimitate.serving import export as export_lib

    if cfg.cv_folds and cfg.cv_fold < 0:
        return crossval.train_folds(cfg, train)
    crossval.check(cfg)
    task = get_task(cfg.task)
    task.validate(cfg)
    techniques.chosen(cfg)  # refuses bad technique flags before any work
    _check_sequence_length(cfg)
    # First, before other TensorFlow work: multi-worker collectives are set up at startup.
    strategy = runtime.make_strategy(cfg.strategy, cfg.tpu)
    runs.check_resume(task, cfg)
    data = task.load_data(cfg)
    if cfg.cv_folds:
        data = crossval.fold_data(data, cfg)
    runs.check_resume_labels(cfg, data.labels)
    cfg = cfg.replace(labels=tuple(data.labels), **data.learned)
    if cfg.export_dir:
        export_lib.next_version(cfg.export_dir)  # fail now, not after training
    return _train(task, cfg, data, strategy)


def _train(task, cfg, data, strategy):
    from tfimitate import reports, runtime, techniques
    from tfimitate.training import hooks, loop, optim

    precision, reason = runtime.set_precision(cfg.precision, cfg.tpu)
    runtime.set_seeds(cfg.seed)
    preprocessor = task.make_preprocessor(cfg)
    chosen = techniques.chosen(cfg, restore_run=runs.restore)
    training = techniques.adapt_examples(chosen, hooks.Examples(data.train), task, data, cfg)
    examples = base.size(training.split)  # None: a stream not counted (--max_steps given)
    steps_per_epoch = max(1, math.ceil(examples / cfg.batch_size)) if examples else cfg.max_steps
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    phases = techniques.phases(chosen, cfg, total_steps)
    with strategy.scope():
        model = runs.build_model(task, cfg, task.num_outputs(data.labels), chosen)
        optimizer = optim.make_optimizer(
            cfg.learning_rate, total_steps, cfg.warmup_ratio, cfg.weight_decay,
            loss_scale=precision == "mixed_float16", phases=phases,
            factors=techniques.learning_rate_factors(chosen, model, cfg))
    trainable = sum(int(v.shape.num_elements()) for v in model.trainable_weights)
    total = sum(int(v.shape.num_elements()) for v in model.weights)
    logging.info("Trainable parameters: %s of %s (%.2f%%).", f"{trainable:,}", f"{total:,}",
                 100.0 * trainable / total)
    run = base.Run(cfg, model, preprocessor, strategy, optimizer,
                   text_transform=lambda keep: techniques.text_transform(chosen, cfg, keep),
                   total_steps=total_steps)
    techniques.initialize(chosen, run)
    # Built before anything is written: a technique hook may refuse the flags.
    train_ds = techniques.adapt_dataset(
        chosen, task.train_dataset(run, training.split, dict(training.extras)), cfg)
    step_loss = techniques.wrap_loss(chosen, hooks.supervised_loss(task), run)
    evaluate_fn = lambda: techniques.extend_evaluation(chosen, task.evaluate(run, data.eval), run)
    chief = runtime.is_chief(strategy)
    with contextlib.ExitStack() as lock:
        lock.enter_context(task.reading((data.train, data.eval, data.test)))
        examples = task.serving_examples(data.eval)
        if chief:  # only techniques' caches are written before this; one trainer per run
            lock.enter_context(files.RunLock(cfg.model_dir))
            cfg.save(cfg.model_dir)
            runs.save_runtime(cfg.model_dir, precision=precision, precision_reason=reason)
            runs.save_serving_examples(cfg.model_dir, examples)
        logging.info("Training on %s examples, evaluating on %s (%s); %d steps of batch %d.",
                     _count(training.split), _count(data.eval), data.eval.source, total_steps,
                     cfg.batch_size)
        result = loop.train_loop(model, optimizer, step_loss, train_ds, evaluate_fn, cfg, strategy,
                                 steps_per_epoch, total_steps, phases,
                                 keep=techniques.checkpoint_filter(chosen))
        evaluation = result.final_evaluation or evaluate_fn()
        metrics = _report(evaluation, data.eval, cfg, result.step, "metrics", chief)
        if data.test is not None:
            _report(task.evaluate(run, data.test), data.test, cfg, result.step, "test_metrics",
                    chief)
        techniques.finish(chosen, task, run, data, chief)
        if chief:
            reports.plot_curves(runs.log_dir(cfg.model_dir),
                                runs.eval_path(cfg.model_dir, "curves.png"))
        if cfg.export_dir and chief:
            export_model(task, run, examples, result.step, eval_split=data.eval)
    if chief:
        print(f"Done at step {result.step}: checkpoints, TensorBoard logs and reports are in "
              f"{cfg.model_dir} (eval/metrics.json).", flush=True)
    return metrics


def _count(split):
    size = base.size(split)
    return "an uncounted stream of" if size is None else f"{size:,}"


def _report(evaluation, split, cfg, step, name, write):
    """Prints `evaluation` and (if `write`) saves its metrics and figures under eval/."""
    metrics = dict(evaluation.metrics, score=evaluation.score, step=step, data=split.source)
    print(f"\n{name} on {split.source} at step {step}:\n{evaluation.report}", flush=True)
    if write:
        path = runs.save_evaluation(cfg.model_dir, name, metrics, evaluation.figures)
        logging.info("Wrote %s", path)
    return metrics


def evaluate(model_dir=None, eval_data=None, perturb="", perturb_seed=0, saved_model=None):
    """Evaluates the newest checkpoint of `model_dir`, or the exported `saved_model` (through
    its serving signatures), on `eval_data` (default: the run's eval set).

    Writes eval/metrics.json (eval/saved_model_metrics.json); with `perturb`, also the
    robustness report eval/robustness.json (eval/saved_model_robustness.json). The run
    (--model_dir, or the one the SavedModel was exported from) gives task, labels and data.
    """
    from tfimitate import robustness

    if saved_model:
        saved_model = _saved_model_version(saved_model)
        model_dir = model_dir or runs.exported_run(saved_model)
    if not model_dir:
        raise UserError("--model_dir is required: give the folder of a tfimitate.train run "
                        "(or --saved_model=DIR of an exported model).")
    cfg = runs.experiment(model_dir)
    task = get_task(cfg.task)
    perturbations = robustness.parse(perturb) if perturb else []
    if eval_data:
        split = task.read_file(eval_data, cfg, "--eval_data")
    else:
        split = task.load_data(cfg).eval
    perturbed = robustness.perturb(task, split, perturbations, perturb_seed)
    if saved_model:
        from tfimitate.serving import saved_models

        loaded = saved_models.load(saved_model, "--saved_model")
        score = lambda s: task.evaluate_saved_model(loaded, s, cfg.labels)
        step = runs.exported_from(saved_model).get("step")
        prefix, model = "saved_model_", files.abspath(saved_model)
    else:
        task, run, step = runs.restore(model_dir)
        score = lambda s: task.evaluate(run, s)
        prefix, model = "", "checkpoint"
    clean, result = robustness.report(split, perturbed, score, perturb_seed)
    metrics = _report(clean, split, cfg, step, f"{prefix}metrics", True)
    if perturbations:
        print("\n" + robustness.summary(result), flush=True)
        path = files.write_atomically(
            runs.eval_path(model_dir, f"{prefix}robustness.json"),
            json.dumps(dict(result, model=model, step=step), indent=2, ensure_ascii=False))
        print(f"Wrote {path}", flush=True)
    return metrics


def _saved_model_version(path):
    """`path` if it is a SavedModel, else the newest version directory under it."""
    import tensorflow as tf

    from tfimitate.serving import export as export_lib

    if tf.saved_model.contains_saved_model(path):
        return path
    versions = export_lib.existing_versions(path) if files.isdir(path) else []
    if not versions:
        raise UserError(f"--saved_model={path} holds no SavedModel; give an export version "
                        "directory (e.g. saved_models/sst2/1) or its --export_dir.")
    return os.path.join(path, str(max(versions)))


def predict(model_dir, input_path, output_path, columns=None):
    """Writes one prediction per input row to `output_path` (.jsonl or .csv), as they come
    (the file appears whole at the end); returns how many.

    `columns` (e.g. {"text_column": "review"}) names the input file's columns when they
    differ from the training data's. The input may be a TFDS split
    (`tfds:NAME[/CONFIG][:SPLIT]`, read from the run's or the given `tfds_data_dir`).
    """
    if not output_path or os.path.splitext(output_path)[1] not in (".jsonl", ".csv"):
        raise UserError(f"--output={output_path}: give a file ending in .jsonl or .csv.")
    if files.same_file(input_path, output_path):
        raise UserError(f"--output={output_path} is the --input file; writing it would replace "
                        "the input: choose another output path.")
    files.check_writable_file(output_path, "--output")
    config.check_input_exists(input_path, "--input")
    cfg = runs.experiment(model_dir).replace(**(columns or {}))
    task = get_task(cfg.task)
    split = task.read_file(input_path, cfg, "--input", with_labels=False)
    task, run, _ = runs.restore(model_dir)
    count = 0

    def counted(records):
        nonlocal count
        for count, record in enumerate(records, start=1):
            yield record

    with task.reading((split,)):
        files.write_chunks_atomically(
            output_path, _format_records(counted(task.predict(run, split)), output_path))
    logging.info("Wrote %d predictions to %s", count, output_path)
    return count


def _format_records(records, path):
    """Yields the text of `records` (any iterable) as JSONL lines or CSV rows, as they come."""
    if path.endswith(".jsonl"):
        for record in records:
            yield json.dumps(record, ensure_ascii=False) + "\n"
        return
    out, writer = io.StringIO(newline=""), None
    for record in records:
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                for k, v in record.items()}
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(flat))
            writer.writeheader()
        writer.writerow(flat)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    if writer is None:
        yield "text\r\n"


def export(model_dir, export_dir, version=None, serving_version=None, precision="float32",
           max_drop=0.5):
    """Exports the newest checkpoint of `model_dir` as `<export_dir>/<version>/`, for TF
    Serving `serving_version` and newer (None: the run's own, else the oldest possible), in
    --export_precision `precision` (gated by `max_drop` points on the run's eval data)."""
    from tfimitate.serving import export as export_lib
    from tfimitate.serving import releases

    files.check_writable_dir(export_dir, "--export_dir")
    if serving_version is not None:
        releases.release(serving_version)
    export_lib.next_version(export_dir, version)  # fail before loading anything
    task, run, step = runs.restore(model_dir)
    cfg = run.cfg.replace(export_dir=export_dir,
                          serving_version=serving_version or run.cfg.serving_version,
                          export_precision=precision, export_max_drop=max_drop)
    run = base.Run(cfg, run.model, run.preprocessor, run.strategy)
    eval_split = task.load_data(cfg).eval if precision != "float32" else None
    return export_model(task, run, runs.load_serving_examples(task, run.cfg), step, version,
                        eval_split)


def export_model(task, run, examples, step, version=None, eval_split=None):
    """Builds the task's serving module in --export_precision (checked on `eval_split`, the
    run's evaluation examples) and writes a checked version directory.

    Unless a `version` is asked for, a checkpoint already exported (same run, same
    step) is not exported again: TF Serving would switch to an identical new version.
    """
    from tfimitate import export_precision
    from tfimitate.serving import export as export_lib
    from tfimitate.serving import warmup

    source = runs.export_source(run.cfg.model_dir, step)
    existing = export_lib.version_exported_from(run.cfg.export_dir, source)
    if existing and version is None:
        print(f"Step {step} of this run is already exported as {existing}; nothing to do "
              "(pass --export_version=N to write another version).", flush=True)
        return existing

    def write_extras(directory):
        export_lib.record_source(directory, source)
        choice.write(directory)
        warmup.write_warmup_requests(
            directory, {name: inputs for name, (inputs, _) in choice.checks.items()}, model_name)

    with tempfile.TemporaryDirectory() as scratch:
        labels_file = runs.write_labels(scratch, run.labels)
        choice = export_precision.choose(task, run, run.cfg.export_precision,
                                         run.cfg.export_max_drop, eval_split, examples,
                                         labels_file)
        for name, (_, expected) in choice.checks.items():
            for output, value in expected.items():
                if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
                    outputs.check(value, f"the model (signature {name}, output '{output}')",
                                  outputs.OVERFLOW_ADVICE)
        model_name = os.path.basename(os.path.normpath(run.cfg.export_dir))
        path = export_lib.export_saved_model(choice.module, run.cfg.export_dir, choice.checks,
                                             version, write_extras=write_extras,
                                             serving_version=run.cfg.serving_version,
                                             tolerance=choice.tolerance)
    print(f"Exported the model to {path} ({choice.precision}).", flush=True)
    return path
