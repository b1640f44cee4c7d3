"""Retention (a technique): score old data at every evaluation and report forgetting.

`--retain_eval_data=FILE` reads FILE like --eval_data (same format, columns and labels)
and scores it with the task's own evaluation (accuracy, entity F1 ...) once before
training, on the weights training starts from (the --init_from run's, or on a resume the
same starting weights), and again at every evaluation. Every evaluation's metrics
(metrics.json, and TensorBoard as eval/...) then also hold `retain_score`,
`retain_score_before` and `forgetting` = retain_score_before - retain_score.

Example:
    python -m tfimitate.train --flagfile=configs/quickstart.cfg --init_from=runs/sst2 \\
        --retain_eval_data=../shared/data/sst2/test.tsv
"""

import dataclasses

from tfimitate import options
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.data(
        "retain_eval_data",
        "Old evaluation data (same format as --eval_data), scored before training and at every "
        "evaluation; metrics.json and TensorBoard get retain_score and forgetting (before - now)."),
)

RESUME_FIELDS = ("retain_eval_data",)


class Retention(Technique):
    name, flag, order = "retention", "--retain_eval_data", 80

    def __init__(self, path):
        self.path = path
        self.task = self.split = self.before = None

    def initialize(self, run):
        from tfimitate.tasks import get_task

        self.task = get_task(run.cfg.task)
        self.split = self.task.read_file(self.path, run.cfg, "--retain_eval_data")
        self.before = self.task.evaluate(run, self.split).score

    def extend_evaluation(self, evaluation, run):
        now = self.task.evaluate(run, self.split).score
        metrics = dict(evaluation.metrics, retain_score=now, retain_score_before=self.before,
                       forgetting=self.before - now)
        report = (f"{evaluation.report}\nOld data ({self.path}, {len(self.split)} examples): "
                  f"score {now:.4f}, {self.before:.4f} before training; forgetting "
                  f"{self.before - now:+.4f}.\n")
        return dataclasses.replace(evaluation, metrics=metrics, report=report)


def from_config(cfg):
    """Retention when --retain_eval_data is given, else None."""
    return Retention(cfg.retain_eval_data) if cfg.retain_eval_data else None
