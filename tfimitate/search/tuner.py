"""keras-tuner drives `workflow.train`: every trial is an ordinary run in <tune_dir>/trials/<id>/.

keras-tuner's oracle (random search, Bayesian optimization or Hyperband) proposes flag
values; `TrainTuner.run_trial` trains the base experiment with them (its own model_dir,
flags.cfg, checkpoints and eval/metrics.json) and reports the task's eval score
(`Evaluation.score`; the mean over folds with --cv_folds). The oracle's state lives in
<tune_dir>/oracle/ and is saved whenever a trial starts or ends, so a search killed at
any moment continues when the same command runs again: finished trials are kept and the
trial that was running is run again with the same flags, which resumes from its last
checkpoint. Hyperband's budget is training steps: a trial of budget b trains
b * ceil(--max_steps / factor^2) steps (at most --max_steps), and a trial that continues an
earlier one starts from a copy of that trial's checkpoints.

Example:
    tuner = make_tuner(base_cfg, space.read("configs/search/sst2.cfg"), "random", 8,
                       "runs/tune_sst2")
    tuner.search()
"""

import json
import math
import os
import time

import keras_tuner
from absl import logging

from tfimitate import files, runs, workflow
from tfimitate.errors import UserError
from tfimitate.search import results, space, trials

OBJECTIVE = "score"
ORACLE_DIR = "oracle"
SEARCH_FILE = "search.json"
CONSECUTIVE_FAILURES = 3  # keras-tuner's default max_consecutive_failed_trials
CHECKPOINT_INDEX = "checkpoint"  # tf.train.CheckpointManager's list of saved checkpoints


class TrainTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials are tfimitate training runs."""

    def __init__(self, oracle, base_cfg, dimensions, tune_dir, step_unit=0):
        self.base_cfg = base_cfg
        self.dimensions = dimensions
        self.tune_dir = tune_dir
        self.step_unit = step_unit  # Hyperband: training steps per unit of budget
        super().__init__(oracle, directory=tune_dir, project_name=ORACLE_DIR)

    def trial_dir(self, trial_id):
        return trials.trial_dir(self.tune_dir, trial_id)

    def trial_config(self, trial):
        """The experiment of `trial`: the base flags plus the trial's searched values."""
        values = trial.hyperparameters.values
        cfg = self.base_cfg.replace(model_dir=self.trial_dir(trial.trial_id), export_dir=None,
                                    **space.overrides(self.dimensions, values))
        if "tuner/epochs" in values:
            cfg = cfg.replace(max_steps=min(self.base_cfg.max_steps,
                                            values["tuner/epochs"] * self.step_unit))
        return cfg

    def run_trial(self, trial, *args, **kwargs):
        import keras

        cfg = self.trial_config(trial)
        parent = trial.hyperparameters.values.get("tuner/trial_id")
        if parent:
            _copy_checkpoints(self.trial_dir(parent), cfg.model_dir)
        started = time.time()
        try:
            metrics = workflow.train(cfg)
        except UserError as error:
            logging.error("Trial %s failed: %s", trial.trial_id, error)
            raise keras_tuner.errors.FailedTrialError(str(error)) from None
        finally:
            keras.backend.clear_session()
        score = metrics["score"]["mean"] if cfg.cv_folds else metrics["score"]
        steps = metrics["step"] if not cfg.cv_folds else _fold_steps(cfg.model_dir)
        trials.write_result(cfg.model_dir, score, steps, round(time.time() - started, 1))
        return {OBJECTIVE: score}


def make_tuner(base_cfg, dimensions, algorithm, max_trials, tune_dir, hyperband_factor=3):
    """The TrainTuner of a search (continuing the one in `tune_dir` if there is one).

    Raises UserError if `tune_dir` holds a search with other flags, space or algorithm."""
    _check_same_search(base_cfg, dimensions, algorithm, tune_dir)
    objective = keras_tuner.Objective(OBJECTIVE, "max")
    hp = keras_tuner.HyperParameters()
    for dimension in dimensions:
        dimension.declare(hp)
    common = dict(objective=objective, hyperparameters=hp, seed=base_cfg.seed)
    step_unit = 0
    if algorithm == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    elif algorithm == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    else:
        units = hyperband_factor ** 2
        step_unit = math.ceil(base_cfg.max_steps / units)
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=units, factor=hyperband_factor,
                                                     **common)
        oracle.max_trials = max_trials
    tuner = TrainTuner(oracle, base_cfg, dimensions, tune_dir, step_unit)
    tuner.save()  # a search killed during its first trial is then continued, not restarted
    return tuner


def is_worker():
    """True in a keras-tuner trial worker (KERASTUNER_ORACLE_IP set, a TUNER_ID but `chief`)."""
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))


def check_search(base_cfg, dimensions, algorithm):
    """Refuses a search that cannot run (before anything is written)."""
    searched = {dimension.flag for dimension in dimensions}
    if algorithm == "hyperband":
        if "max_steps" in searched:
            raise UserError("--tuner=hyperband sets --max_steps of each trial (its budget); remove "
                            "--max_steps from the --search_space.")
        if not base_cfg.max_steps:
            raise UserError("--tuner=hyperband needs --max_steps, the training steps of its "
                            "longest trials; give --max_steps=N.")


def _check_same_search(base_cfg, dimensions, algorithm, tune_dir):
    record = {"tuner": algorithm, "base": _base_flags(base_cfg),
              "space": [[d.flag, d.kind, list(d.values)] for d in dimensions]}
    path = os.path.join(tune_dir, SEARCH_FILE)
    if files.isfile(path):
        before = json.loads(files.read_bytes(path))
        for key, what in (("tuner", "--tuner"), ("space", "--search_space"),
                          ("base", "training flags")):
            if before.get(key) != json.loads(json.dumps(record[key])):
                raise UserError(f"--tune_dir={tune_dir} holds a search with other {what}; re-run "
                                "the same command to continue it, or choose a new --tune_dir.")
    else:
        files.write_atomically(path, json.dumps(record, indent=2))


def _base_flags(cfg):
    """The base experiment's fields as JSON values (model and export folders left out)."""
    import dataclasses

    values = dataclasses.asdict(cfg.replace(model_dir=None, export_dir=None))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()
            if k != "option_sources"}


def _copy_checkpoints(parent_dir, trial_dir):
    """Starts a Hyperband trial from its parent trial's checkpoints (each run's, each fold's).
    The checkpoint index is copied last, so a copy stopped half-way is not taken as done."""
    for relative in runs.checkpoint_dirs(parent_dir):
        target = os.path.join(trial_dir, relative)
        if files.isfile(os.path.join(target, CHECKPOINT_INDEX)):
            continue  # copied before this trial was interrupted
        files.copy_tree(os.path.join(parent_dir, relative), target, last=(CHECKPOINT_INDEX,))
        logging.info("Continuing trial %s from %s.", trial_dir, os.path.join(parent_dir, relative))


def _fold_steps(model_dir):
    """The training steps of fold 0 of a cross-validated trial."""
    path = runs.eval_path(runs.fold_dir(model_dir, 0), "metrics.json")
    return json.loads(files.read_bytes(path))["step"]


def check_trials(base_cfg, dimensions):
    """Refuses, before any work, searched values the training flags cannot take together
    with the base flags (each bound and choice tried once), and --cv_folds values beyond
    the smallest label of the training data."""
    from tfimitate import config, crossval
    from tfimitate.tasks import get_task
    from tfimitate import techniques

    for dimension in dimensions:
        for value in dimension.values:
            cfg = base_cfg.replace(**space.overrides([dimension], {dimension.flag: value}))
            try:
                config.validate_for_training(cfg)
                crossval.check(cfg)
                get_task(cfg.task).validate(cfg)
                techniques.chosen(cfg)
            except UserError as error:
                raise UserError(f"{dimension.where}: --{dimension.flag}={value} cannot train "
                                f"({error})") from None
    folds = [base_cfg.cv_folds] + [v for d in dimensions if d.flag == "cv_folds" for v in d.values]
    if max(folds) >= 2:
        task = get_task(base_cfg.task)
        cfg = base_cfg.replace(cv_folds=max(folds), cv_fold=0)
        crossval.fold_data(task.load_data(cfg), cfg)


def search(base_cfg, dimensions, algorithm, max_trials, tune_dir, hyperband_factor=3):
    """Runs (or continues) a search; on the chief or a single machine, writes and returns the
    results' markdown summary (search/results.py), on a keras-tuner worker returns None."""
    check_search(base_cfg, dimensions, algorithm)
    check_trials(base_cfg, dimensions)
    files.check_writable_dir(tune_dir, "--tune_dir")
    tuner = make_tuner(base_cfg, dimensions, algorithm, max_trials, tune_dir, hyperband_factor)
    try:
        tuner.search()
    except RuntimeError as error:  # keras-tuner: too many failed trials in a row
        if not str(error).startswith("Number of consecutive failures"):
            raise
        # The message ends with the traceback of the last trial: keep its exception's text.
        last = [line for line in str(error).splitlines() if line.strip()][-1].split(": ", 1)[-1]
        raise UserError(f"the search stopped after {CONSECUTIVE_FAILURES} failed trials in a "
                        f"row (the last: {last.rstrip('.')}); fix the flags and re-run.") from None
    if is_worker():
        return None
    return results.write(tuner, results.collect(tuner))
