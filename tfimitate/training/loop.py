"""One training loop for every tf.distribute strategy.

A `tf.function` runs `--steps_per_execution` steps per call, each step a
`strategy.run` of forward, loss (`tf.nn.compute_average_loss`), backward and a
Keras optimizer update. Keras 3's `Model.fit` fails under
MultiWorkerMirroredStrategy (keras #20585); this loop does not. It keeps what
`fit` gives: a Progbar, TensorBoard scalars, periodic evaluation, early stopping
and checkpoints every --checkpoint_steps that a re-run resumes from.

The step differentiates `step_loss(model, inputs, labels)` (per-example losses),
which the task provides and techniques may wrap; the loop knows no task or technique.
A step_loss may also return a dict: per-example `loss` (differentiated) and other
per-example terms (e.g. `clean_loss`), which are only averaged and logged like the loss.

Example:
    result = train_loop(model, optimizer, step_loss, train_ds, evaluate_fn, cfg, strategy,
                        steps_per_epoch=200, total_steps=600)
"""

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Optional

import keras
import tensorflow as tf
from absl import logging

from tfimitate import files, runtime
from tfimitate.errors import UserError
from tfimitate.tasks.base import Evaluation
from tfimitate.training import checkpoints, optim
from tfimitate.training.checkpoints import (BEST_SUBDIR, CHECKPOINT_SUBDIR, PHASE_END_SUBDIR,
                                            make_checkpoint, restore_newest)

# TensorBoard logs: `loss` (and other step_loss terms), `learning_rate`, `eval/score`, `eval/<metric>`.
LOG_SUBDIR = "logs/train"


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; nothing is exported."""


class TrainingInterrupted(UserError):
    """Ctrl-C during training; the last checkpoint is intact and a re-run resumes."""


@dataclasses.dataclass
class LoopResult:
    step: int
    best: Optional[Evaluation]
    stopped_early: bool
    resumed_from: int
    # The evaluation of the weights the loop ends with, or None if not evaluated.
    final_evaluation: Optional[Evaluation] = None


def check_finite_weights(model, what):
    """Raises NonFiniteLossError naming `what` if any weight of `model` is NaN or infinite."""
    bad = [v.path for v in model.weights
           if tf.as_dtype(v.dtype).is_floating and not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
        raise NonFiniteLossError(
            f"{what} holds non-finite weights ({bad[0]}{' and more' if len(bad) > 1 else ''}); "
            "it cannot be evaluated or exported: train again into a new --model_dir with a "
            "lower --learning_rate.")


def train_loop(model, optimizer, step_loss, train_ds, evaluate_fn, cfg, strategy,
               steps_per_epoch, total_steps, phases=(), keep=None):
    """Trains `model` (built under `strategy.scope()`) for `total_steps` optimizer steps.

    Args:
        model: a Keras model.
        optimizer: its Keras optimizer (built under the same scope).
        step_loss: (model, inputs, labels) -> per-example float32 loss of a replica's batch.
        train_ds: an endless tf.data.Dataset of (inputs, labels) batches, global
            batch size, in the same order on every run (it is skipped ahead on resume);
            or a function of a tf.distribute.InputContext returning that host's endless
            per-replica batches (see `_distribute`).
        evaluate_fn: () -> Evaluation of the current weights, or None to skip evaluation.
        cfg: the Experiment.
        strategy: the tf.distribute strategy the model was built under.
        steps_per_epoch: optimizer steps counted as one epoch.
        total_steps: optimizer steps to train for.
        phases: hooks.Phase list (e.g. a frozen backbone, then fine-tuning): each
            phase's `prepare(model)` runs when it begins (or when a resumed run restarts in
            it) and the step is traced again for its trainable weights. The optimizer must
            be built over every weight any phase trains (the loop builds it before the
            first phase's `prepare`).
        keep: None (checkpoints hold the whole model) or a predicate(variable) picking the
            weights checkpoints hold (see checkpoints.model_state).
    """
    out_dir = runtime.write_dir(cfg.model_dir, strategy)
    try:
        return _train(model, optimizer, step_loss, train_ds, evaluate_fn, cfg, strategy,
                      steps_per_epoch, total_steps, out_dir, phases, keep)
    except KeyboardInterrupt:
        saved = tf.train.latest_checkpoint(os.path.join(out_dir, CHECKPOINT_SUBDIR))
        raise TrainingInterrupted(
            f"interrupted at step {int(optimizer.iterations.numpy())}; re-run the same command "
            "to resume from the last checkpoint "
            f"({'step ' + saved.rsplit('-', 1)[1] if saved else 'none yet: from the start'}).") from None
    finally:
        if out_dir != cfg.model_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


def _train(model, optimizer, step_loss, train_ds, evaluate_fn, cfg, strategy, steps_per_epoch,
           total_steps, out_dir, phases, keep):
    with strategy.scope():
        optimizer.build(model.trainable_variables)
    checkpoint = make_checkpoint(model, optimizer, keep)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out_dir, CHECKPOINT_SUBDIR), max_to_keep=cfg.keep_checkpoints)
    best_manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out_dir, BEST_SUBDIR), max_to_keep=1)
    # --keep_best_phase (early stopping, when also set, already keeps the best weights).
    phase_ends = (BestPhaseEnd(checkpoint, os.path.join(out_dir, PHASE_END_SUBDIR))
                  if cfg.keep_best_phase and len(phases) > 1 and evaluate_fn is not None
                  and not cfg.early_stopping_patience else None)

    # Every worker restores the chief's newest complete checkpoint (the `checkpoint`
    # state file only names a checkpoint once all its files are written).
    latest, status = restore_newest(checkpoint, os.path.join(cfg.model_dir, CHECKPOINT_SUBDIR))
    resumed_from = 0
    if latest:
        status.assert_existing_objects_matched()
        # Checkpoints written before batches_consumed existed only hold the optimizer's count.
        resumed_from = int(checkpoint.batches_consumed.numpy()) or int(optimizer.iterations.numpy())
        logging.info("Resumed from checkpoint %s at step %d of %d.",
                     latest, resumed_from, total_steps)
    step = resumed_from
    if step >= total_steps:
        logging.info("Training already reached step %d; nothing to do.", step)
        return LoopResult(step, None, False, resumed_from)

    iterator = iter(_distribute(train_ds, strategy, step))
    starts = [phase.start for phase in phases]
    train_steps = _enter_phase(phases, step, model, step_loss, optimizer, strategy, cfg)

    writer = tf.summary.create_file_writer(os.path.join(out_dir, LOG_SUBDIR))
    eval_every = cfg.eval_steps or steps_per_epoch
    best, evals_without_gain = None, 0
    last_eval = (None, None)
    stopped_early = False
    progbar = None
    while step < total_steps:
        if progbar is None:
            epoch = step // steps_per_epoch
            logging.info("Epoch %d/%d", epoch + 1, math.ceil(total_steps / steps_per_epoch))
            progbar = keras.utils.Progbar(min(steps_per_epoch, total_steps - epoch * steps_per_epoch))
            progbar.update(step - epoch * steps_per_epoch)
        to_boundary = min(_next_multiple(step, eval_every), _next_multiple(step, cfg.checkpoint_steps),
                          _next_multiple(step, steps_per_epoch), total_steps,
                          *[start for start in starts if start > step]) - step
        n = min(cfg.steps_per_execution, to_boundary)
        started = time.perf_counter()
        logs = {name: float(value) for name, value in train_steps(iterator, tf.constant(n)).items()}
        if step == resumed_from:
            logging.info("First call of the train step (%d step%s, tracing and compiling "
                         "included): %.1f s.", n, "s" if n > 1 else "", time.perf_counter() - started)
        loss = logs["loss"]
        step += n
        checkpoint.batches_consumed.assign(step)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} at step {step}, so training stopped and "
                "nothing was exported (checkpoints only hold finite weights): lower "
                "--learning_rate and train into a new --model_dir, or check the data.")
        learning_rate = float(optimizer.learning_rate)
        progbar.update(step - (step - 1) // steps_per_epoch * steps_per_epoch, list(logs.items()))
        with writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", learning_rate)
        if step % steps_per_epoch == 0:
            progbar = None
        save = step % cfg.checkpoint_steps == 0 or step == total_steps
        phase_end = step in starts and step < total_steps
        evaluate = evaluate_fn is not None and (
            step % eval_every == 0 or step == total_steps or (phase_ends and phase_end))
        if save or evaluate:
            # A finite loss is computed before its step's update, which may still overflow.
            check_finite_weights(model, f"the model after step {step}")
        if save:
            checkpoints.save(manager, step)
        if phase_end:
            train_steps = _enter_phase(phases, step, model, step_loss, optimizer, strategy, cfg)
        if evaluate:
            evaluation = evaluate_fn()
            last_eval = (step, evaluation)
            scalars = evaluation.scalars()
            logging.info("Step %d eval: %s", step, _format(scalars))
            with writer.as_default(step=step):
                tf.summary.scalar("eval/score", evaluation.score)
                for name, value in scalars.items():
                    tf.summary.scalar(f"eval/{name}", value)
            if phase_ends and phase_end:
                phase_ends.offer(step, evaluation)
            if best is None or evaluation.score > best.score:
                best, evals_without_gain = evaluation, 0
                if cfg.early_stopping_patience:
                    checkpoints.save(best_manager, step)
            else:
                evals_without_gain += 1
            if cfg.early_stopping_patience and evals_without_gain >= cfg.early_stopping_patience:
                logging.info("Early stopping at step %d: no better eval score in %d evaluations.",
                             step, evals_without_gain)
                checkpoints.save(manager, step)
                stopped_early = True
                break
    writer.flush()
    final_evaluation = last_eval[1] if last_eval[0] == step else None
    if cfg.early_stopping_patience and best_manager.latest_checkpoint:
        checkpoint.restore(best_manager.latest_checkpoint)
        logging.info("Restored the best weights (%s).", best_manager.latest_checkpoint)
        final_evaluation = best
    elif phase_ends and final_evaluation and phase_ends.beats(final_evaluation):
        checkpoint.restore(phase_ends.latest_checkpoint)
        checkpoints.save(best_manager, phase_ends.step)  # what evaluate and export restore
        logging.info("--keep_best_phase: the last phase lowered the eval score from %.4f (step "
                     "%d) to %.4f (step %d), so the run ends with the weights of step %d.",
                     phase_ends.score, phase_ends.step, final_evaluation.score, step,
                     phase_ends.step)
        final_evaluation = phase_ends.evaluation
    return LoopResult(step, best, stopped_early,
                      resumed_from, final_evaluation)


class BestPhaseEnd:
    """The phase end with the best eval score so far: its checkpoint and its score (kept in
    `directory`, so a resumed run still knows them).

    Example:
        ends = BestPhaseEnd(checkpoint, "runs/x/checkpoints/phase_end")
        ends.offer(60, evaluation)       # saved if better than an earlier phase end
        ends.beats(final_evaluation)     # True: restore ends.latest_checkpoint
    """

    def __init__(self, checkpoint, directory):
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
        self.score_file = os.path.join(directory, "score.json")
        self.step, self.score, self.evaluation = None, -math.inf, None
        if self.manager.latest_checkpoint and tf.io.gfile.exists(self.score_file):
            found = json.loads(files.read_bytes(self.score_file))
            self.step, self.score = found["step"], found["score"]

    @property
    def latest_checkpoint(self):
        return self.manager.latest_checkpoint

    def offer(self, step, evaluation):
        """Keeps the weights of phase end `step` if `evaluation` beats the best so far."""
        if evaluation.score > self.score:
            checkpoints.save(self.manager, step)
            files.write_atomically(self.score_file,
                                   json.dumps({"step": step, "score": evaluation.score}))
            self.step, self.score, self.evaluation = step, evaluation.score, evaluation

    def beats(self, evaluation):
        """True if a phase end scored higher than `evaluation`."""
        return self.step is not None and self.score > evaluation.score


def _distribute(train_ds, strategy, step):
    """The distributed training input, `step` global batches in: a tf.data.Dataset of global
    batches (split over replicas by the strategy), or a function of a
    tf.distribute.InputContext giving that host's per-replica batches (each host reads its
    own files: data/streams.py PerHost)."""
    if isinstance(train_ds, tf.data.Dataset):
        return strategy.experimental_distribute_dataset(train_ds.skip(step))

    def per_host(context):
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return train_ds(context).skip(step * per_pipeline)

    return strategy.distribute_datasets_from_function(per_host)


def _enter_phase(phases, step, model, step_loss, optimizer, strategy, cfg):
    """Prepares the model for the phase holding `step`; returns its (new) train function."""
    current = [i for i, phase in enumerate(phases) if phase.start <= step]
    if current:
        phases[current[-1]].prepare(model)
        if len(phases) > 1:
            trainable = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
            logging.info("Phase %d of %d from step %d: %d of %d weights train, peak learning "
                         "rate %g.", current[-1] + 1, len(phases), phases[current[-1]].start,
                         trainable, model.count_params(), phases[current[-1]].learning_rate)
    return _make_train_function(model, step_loss, optimizer, strategy, cfg)


def _next_multiple(step, every):
    return (step // every + 1) * every


def _format(scalars):
    return ", ".join(f"{k}={v:.4f}" for k, v in scalars.items())


def _clip_across_replicas(gradients, loss_scale):
    """Clips the whole batch's gradient to optim.GLOBAL_CLIPNORM; returns this replica's share.

    Two Keras 3 behaviours make the update depend on the strategy, so the loop works
    around them: Keras clips each replica's partial gradient before summing them, and
    Adam squares sparse (embedding) gradients per occurrence of a token, not per row.
    Here gradients are made dense (duplicate rows summed), summed over replicas, clipped
    (the loss-scaled gradient at a scaled norm), and 1/N is returned for Keras's own sum.
    """
    context = tf.distribute.get_replica_context()
    dense = [tf.convert_to_tensor(g) for g in gradients]
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    clipped, _ = tf.clip_by_global_norm(total, optim.GLOBAL_CLIPNORM * loss_scale)
    return [g / context.num_replicas_in_sync for g in clipped]


def loss_terms(result):
    """A step_loss result as a dict of per-example float32 terms with the loss under "loss".

    Example:
        loss_terms(per_example)                           # {"loss": per_example}
        loss_terms({"loss": total, "clean_loss": clean})  # unchanged
    """
    if isinstance(result, dict):
        if "loss" not in result:
            raise ValueError(f"a step_loss dict needs a 'loss' term, got {sorted(result)}")
        return result
    return {"loss": result}


def _make_train_function(model, step_loss, optimizer, strategy, cfg):
    def step_fn(inputs, labels):
        with tf.GradientTape() as tape:
            terms = loss_terms(step_loss(model, inputs, labels))
            # The global batch: a pass's last batches may be short and split unevenly.
            global_batch = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.shape(terms["loss"])[0])
            terms = {name: tf.nn.compute_average_loss(values, global_batch_size=global_batch)
                     for name, values in terms.items()}
            scaled = optimizer.scale_loss(terms["loss"])
        gradients = tape.gradient(scaled, model.trainable_variables)
        # Weights the loss does not reach (e.g. an unused pooler) get no update.
        used = [(g, v) for g, v in zip(gradients, model.trainable_variables) if g is not None]
        gradients = _clip_across_replicas([g for g, _ in used], optimizer.scale_loss(1.0))
        optimizer.apply_gradients(zip(gradients, [v for _, v in used]))
        return terms

    # A function of its own (traced once, though called twice below); XLA if asked for.
    replica_step = tf.function(step_fn, jit_compile=True if cfg.jit_compile else None)

    def one_step(iterator):
        inputs, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(inputs, labels))
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()}

    @tf.function
    def train_steps(iterator, n):
        """Mean of each logged term over `n` steps. The first step runs before the loop,
        which needs the terms' names (known once step_loss is traced) for its variables."""
        totals = one_step(iterator)
        for _ in tf.range(n - 1):
            totals = {name: totals[name] + value for name, value in one_step(iterator).items()}
        return {name: total / tf.cast(n, tf.float32) for name, total in totals.items()}

    return train_steps
