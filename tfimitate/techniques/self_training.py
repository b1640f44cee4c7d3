"""Self-training (a technique): a teacher labels target-domain text, the student learns
the confident labels, then labels the text itself, round after round.

`--self_train` with `--teacher` (a run, a SavedModel or a grpc:// served model, as for
distillation: teachers.py) and `--unlabeled_data` (target-domain text) trains on the
labelled data plus pseudo-labelled texts. The run's steps are split into
`--self_train_rounds` rounds (phases, each with its own warmup and decay, the student
continued from the round before). At the start of round 1 the teacher's class
probabilities (cached under <model_dir>/teacher_outputs/, reused by a resume or another
student of that teacher and text) label the unlabelled texts; at the start of each later
round, the student's own. A text keeps its pseudo-label when its top probability is at
least `--pseudo_label_threshold`, and each class keeps at most its share of the labelled
data (the labelled prior) of the texts kept, the most confident first: a confident majority
class cannot crowd the others out. Texts without a kept label weigh nothing in their batch.

Each round's labels are written to <model_dir>/self_train/round-<r>.npy before it trains
(a resumed run reuses them), and logged with the round's report: pseudo-labels kept per
class, their agreement with the teacher, and the eval score (with --eval_data: target
data) at the round's start; eval/self_train.json holds every round and the final score.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --model_dir=runs/st \
        --self_train --teacher=runs/sst2_minilm --unlabeled_data=reviews.txt \
        --pseudo_label_threshold=0.9 --self_train_rounds=3
"""

import io
import json
import os

import numpy as np
from absl import logging

from tfimitate import files, options
from tfimitate.errors import UserError
from tfimitate.techniques import text_techniques
from tfimitate.training.hooks import Examples, Phase, Technique

OPTIONS = (
    options.boolean(
        "self_train", False,
        "Self-training: --teacher labels the --unlabeled_data texts, the confident labels "
        "(--pseudo_label_threshold, at most the labelled prior's share per class) train the "
        "student with the labelled data, and the student labels them anew each round "
        "(--self_train_rounds)."),
    options.number(
        "pseudo_label_threshold", 0.9,
        "With --self_train: the least top-class probability that keeps a pseudo-label, in "
        "(0, 1]."),
    options.integer(
        "self_train_rounds", 2,
        "With --self_train: rounds of pseudo-labelling; the run's steps are split evenly "
        "between them.", lower=1),
)
RESUME_FIELDS = ("self_train", "pseudo_label_threshold", "self_train_rounds")
FLAG = "--self_train"
ROW = "self_train_row"  # the extra: each training example's row in the label table
SUBDIR = "self_train"
REPORT_FILE = "self_train.json"


def select(probabilities, threshold, prior):
    """Pseudo-labels of `probabilities` [texts, classes]: class id, or -1 where not kept.

    Kept: a top probability >= `threshold`, and per class at most prior[c] x (the texts
    above the threshold), the most confident first.

    Example:
        select(np.array([[.95, .05], [.9, .1], [.2, .8]]), 0.75, np.array([.5, .5]))
        # array([ 0, -1,  1])  (class 0 may keep one of the two confident texts)
    """
    top, confidence = probabilities.argmax(-1), probabilities.max(-1)
    confident = confidence >= threshold
    caps = np.floor(prior * confident.sum()).astype(int)
    labels = np.full(len(probabilities), -1, np.int32)
    for label, cap in enumerate(caps):
        members = np.flatnonzero(confident & (top == label))
        kept = members[np.argsort(-confidence[members], kind="stable")][:cap]
        labels[kept] = label
    return labels


class SelfTraining(Technique):
    """Rounds of pseudo-labelling (see the module)."""

    name, flag, order = "self_training", FLAG, 40
    inputs = frozenset({"text"})
    claims = {"trainable_weights"}  # its rounds are the run's phases

    def __init__(self, rounds, threshold):
        self.rounds = rounds
        self.threshold = threshold
        self.run = self.table = None
        self.labelled = 0
        self.unlabelled = self.eval_split = self.initial = self.prior = None
        self.teacher_probs = None  # the teacher's, on the unlabelled texts (student columns)
        self.reports = []

    def adapt_examples(self, examples, task, data, cfg):
        from tfimitate.techniques import distillation
        from tfimitate.techniques.distillation import teacher_cache, teachers

        split = text_techniques.texts_in_memory(examples.split, FLAG, cfg)
        self.labelled, self.eval_split = len(split), data.eval
        extended = text_techniques.with_unlabeled(task, split, data, cfg)
        self.unlabelled = extended.subset(range(self.labelled, len(extended)), cfg.unlabeled_data)
        teacher = teachers.open_teacher(cfg.teacher, task, cfg, self.restore_run)
        teacher.check(self.unlabelled)
        matrix = distillation.label_matrix(teacher.labels, data.labels, cfg.teacher_label_map,
                                           cfg.teacher)
        probs = teacher_cache.cached_outputs(
            os.path.join(cfg.model_dir, distillation.CACHE_SUBDIR), teacher.fingerprint,
            self.unlabelled, teacher.probabilities)
        self.teacher_probs = distillation.to_student(probs, matrix)
        gold = task.label_ids(split, data.labels)
        self.prior = np.bincount(gold, minlength=len(data.labels)) / len(gold)
        self.initial = np.concatenate([gold, np.full(len(self.unlabelled), -1, np.int32)])
        logging.info("Self-training from %s (%s) on %d labelled and %d unlabelled texts, %d "
                     "rounds.", cfg.teacher, teacher.kind, self.labelled, len(self.unlabelled),
                     self.rounds)
        return Examples(extended, dict(examples.extras, **{
            ROW: np.arange(len(extended), dtype=np.int32)}))

    def adapt_model(self, model, cfg):
        import tensorflow as tf

        if self.initial is not None:  # training (a restored model needs no labels)
            self.table = tf.Variable(self.initial, trainable=False, name="pseudo_labels")
        return model

    def initialize(self, run):
        self.run = run

    def phases(self, cfg, total_steps):
        if total_steps < self.rounds:
            raise UserError(f"--self_train_rounds={self.rounds} needs at least one step per "
                            f"round, and the run has {total_steps}; give more steps.")
        return [Phase(round_ * total_steps // self.rounds, cfg.learning_rate,
                      lambda model, r=round_ + 1: self._start_round(r))
                for round_ in range(self.rounds)]

    def _start_round(self, number):
        """Labels the unlabelled texts for round `number` (or reads the labels it saved)."""
        run = self.run
        if run is None or self.table is None:  # a restored model, not training
            return
        from tfimitate.tasks import get_task

        task = get_task(run.cfg.task)
        path = os.path.join(run.cfg.model_dir, SUBDIR, f"round-{number}.npy")
        if files.isfile(path):
            labels = np.load(io.BytesIO(files.read_bytes(path)))
        else:
            probs = self.teacher_probs if number == 1 else task.probabilities(run, self.unlabelled)
            labels = select(probs, self.threshold, self.prior)
            buffer = io.BytesIO()
            np.save(buffer, labels)
            files.write_atomically(path, buffer.getvalue())
        self.table.assign(np.concatenate([self.initial[:self.labelled], labels]))
        kept = labels >= 0
        teacher = self.teacher_probs.argmax(-1)
        report = {"round": number, "unlabelled": int(len(labels)), "kept": int(kept.sum()),
                  "kept_per_class": {label: int((labels == i).sum())
                                     for i, label in enumerate(run.labels)},
                  "agreement_with_teacher": float(np.mean(labels[kept] == teacher[kept]))
                  if kept.any() else None}
        if self.eval_split is not None:
            report["eval_at_start"] = task.evaluate(run, self.eval_split).scalars()
        self.reports = [r for r in self.reports if r["round"] != number] + [report]
        logging.info("Self-training round %d of %d: %d of %d pseudo-labels kept (%s), %s "
                     "agree with the teacher%s.", number, self.rounds, report["kept"],
                     len(labels), ", ".join(f"{k}: {v}" for k, v in
                                            report["kept_per_class"].items()),
                     "n/a" if report["agreement_with_teacher"] is None
                     else f"{report['agreement_with_teacher']:.4f}",
                     "".join(f"; eval {k} {v:.4f}" for k, v in
                             report.get("eval_at_start", {}).items() if k == "accuracy"))

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        def pseudo_labelled(model, inputs, labels):
            rest = {k: v for k, v in labels.items() if k != ROW}
            rest["labels"] = tf.gather(self.table, labels[ROW])
            return step_loss(model, inputs, rest["labels"] if list(rest) == ["labels"] else rest)

        return pseudo_labelled

    def finish(self, task, run, data, write):
        """Every round's report and the final eval score: console and eval/self_train.json."""
        report = {"teacher": run.cfg.teacher, "threshold": self.threshold,
                  "labelled_prior": dict(zip(run.labels, map(float, self.prior))),
                  "rounds": sorted(self.reports, key=lambda r: r["round"])}
        if data.eval is not None:
            report["final_eval"] = task.evaluate(run, data.eval).scalars()
        print("\nSelf-training rounds:\n" + "\n".join(
            f"round {r['round']}: kept {r['kept']} of {r['unlabelled']} "
            f"{r['kept_per_class']}" for r in report["rounds"]), flush=True)
        if write:
            path = os.path.join(run.cfg.model_dir, "eval", REPORT_FILE)
            files.write_atomically(path, json.dumps(report, indent=2))
            logging.info("Wrote %s", path)


def from_config(cfg):
    """SelfTraining when --self_train is set (its flags checked), else None."""
    if not cfg.self_train:
        return None
    if not cfg.teacher:
        raise UserError("--self_train needs --teacher: say which model labels the "
                        "--unlabeled_data first (a run, a SavedModel or grpc://...).")
    if not cfg.unlabeled_data:
        raise UserError("--self_train needs --unlabeled_data: give the target-domain texts to "
                        "pseudo-label.")
    if not 0.0 < cfg.pseudo_label_threshold <= 1.0:
        raise UserError(f"--pseudo_label_threshold={cfg.pseudo_label_threshold:g}: give a "
                        "probability in (0, 1].")
    if cfg.task != "text_classification":
        raise UserError(f"{FLAG} pseudo-labels texts for text classification, but --task="
                        f"{cfg.task} is another task; drop {FLAG}.")
    if cfg.student_layers:
        raise UserError(f"--student_layers cuts a distilled student; {FLAG} trains the "
                        "--backbone student: drop --student_layers.")
    return SelfTraining(cfg.self_train_rounds, cfg.pseudo_label_threshold)
