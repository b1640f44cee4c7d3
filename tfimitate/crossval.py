"""K-fold cross-validation: one ordinary training run per fold, and mean ± std of the metrics.

Folds are drawn from the training split a task loads (after any hold-out), seeded by
--seed. A split whose examples have one label each (its `labels` attribute: text and
image classification) gets stratified folds (scikit-learn's StratifiedKFold); token
classification has a tag per word, not per sentence, so its folds are plain KFold.
Fold k trains on the other folds and is scored on fold k, in <model_dir>/folds/<k>/
with `--cv_fold=k` in its flags.cfg, so that one fold re-runs (and resumes) alone.

Example:
    python -m tfimitate.train --flagfile=configs/quickstart.cfg --cv_folds=5 --max_steps=50
    # runs/quickstart/folds/{0..4}/ and runs/quickstart/eval/cv_metrics.json:
    # {"score": {"mean": 0.81, "std": 0.02, "folds": [...]}, "accuracy": {...}, ...}
"""

import collections
import dataclasses

import numpy as np
from absl import logging

from tfimitate import runs
from tfimitate.errors import UserError

CV_METRICS = "cv_metrics"  # eval/cv_metrics.json


def check(cfg):
    """Refuses --cv_folds/--cv_fold values that cannot split (before any work)."""
    if cfg.cv_folds == 1:
        raise UserError("--cv_folds=1 is not a cross-validation; give 2 or more folds, or 0 to "
                        "train once.")
    if cfg.cv_fold >= 0 and cfg.cv_fold >= cfg.cv_folds:
        raise UserError(f"--cv_fold={cfg.cv_fold} needs --cv_folds above it (folds are 0 to "
                        f"--cv_folds - 1); give --cv_folds or a smaller --cv_fold.")
    if cfg.cv_folds and cfg.export_dir:
        raise UserError("--export_dir cannot be combined with --cv_folds (which fold would be "
                        "served?); cross-validate first, then train once with --export_dir.")


def fold_data(data, cfg):
    """`data` (splits.Data) with train and eval replaced by fold `cfg.cv_fold` of the training
    split: the other folds train, this one is scored. Raises UserError if a label has
    fewer examples than --cv_folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    train, k = data.train, cfg.cv_folds
    labels = getattr(train, "labels", None)
    if labels is not None:
        counts = collections.Counter(labels)
        label, smallest = min(counts.items(), key=lambda item: (item[1], str(item[0])))
        if smallest < 2:
            raise UserError(f"label {label!r} has only one training example in {train.source}, "
                            "so no two folds can both hold it; add examples of that label, or "
                            "train without --cv_folds.")
        if smallest < k:
            raise UserError(f"--cv_folds={k} is more than the {smallest} training example(s) of "
                            f"label {label!r} in {train.source}; give --cv_folds={smallest}"
                            " or fewer, or add examples of that label.")
        folds = StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(
            np.zeros(len(train)), [str(label) for label in labels])
    else:
        if len(train) < k:
            raise UserError(f"--cv_folds={k} is more than the {len(train)} training examples of "
                            f"{train.source}; give fewer folds.")
        logging.info("Folds are not stratified: this task has no single label per example.")
        folds = KFold(k, shuffle=True, random_state=cfg.seed).split(np.zeros(len(train)))
    fit, held = list(folds)[cfg.cv_fold]
    logging.info("Cross-validation fold %d of %d: training on %d examples, scoring %d.",
                 cfg.cv_fold, k, len(fit), len(held))
    return dataclasses.replace(
        data, train=train.subset(sorted(fit), train.source),
        eval=train.subset(sorted(held), f"{train.source} (fold {cfg.cv_fold} of {k})"))


def train_folds(cfg, train_one):
    """Runs `train_one(fold_cfg)` (workflow.train) for every fold; writes and returns the
    summary {metric: {"mean", "std", "folds"}} of every scalar metric."""
    check(cfg)
    results = []
    for fold in range(cfg.cv_folds):
        results.append(train_one(cfg.replace(model_dir=runs.fold_dir(cfg.model_dir, fold),
                                             cv_fold=fold)))
    summary = summarize(results)
    path = runs.save_evaluation(cfg.model_dir, CV_METRICS, summary)
    print(f"\n{cfg.cv_folds}-fold cross-validation ({path}):\n{format_summary(summary)}",
          flush=True)
    return summary


def summarize(results):
    """Mean, (population) standard deviation and per-fold values of each numeric metric
    every fold reports.

    Example:
        summarize([{"score": 0.8}, {"score": 0.9}])
        # {"score": {"mean": 0.85, "std": 0.05, "folds": [0.8, 0.9]}}
    """
    names = [name for name, value in results[0].items() if _is_number(value)
             and all(_is_number(result.get(name)) for result in results)]
    return {name: {"mean": float(np.mean([r[name] for r in results])),
                   "std": float(np.std([r[name] for r in results])),
                   "folds": [r[name] for r in results]}
            for name in names if name != "step"}


def format_summary(summary):
    """One `name: mean ± std` line per metric."""
    return "\n".join(f"  {name}: {values['mean']:.4f} ± {values['std']:.4f}"
                     for name, values in summary.items())


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
