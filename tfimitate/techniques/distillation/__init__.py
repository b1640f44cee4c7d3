"""Knowledge distillation: the student learns the teacher's class distributions.

Switched on by `--teacher` (a tfimitate run, a SavedModel or a grpc:// TF Serving
model, see `teachers.py`). The transfer set is the training split plus optional
`--unlabeled_data` (examples without a label, task.add_unlabeled). The teacher's
probabilities on it, and on the eval and test data, are computed once before training
and cached under <model_dir>/teacher_outputs/ (`teacher_cache.py`); they reach the step
aligned with each example as the `teacher` extra of task.train_dataset. The per-example
loss is

    alpha * CE(gold labels, student)   (0 for examples without a label)
    + (1 - alpha) * T^2 * KL(softmax(log p_teacher / T) || softmax(student logits / T))

with KL summed over classes and averaged over an example's label units (a sentence's
words for token classification). Keras's `keras.distillation.LogitsDistillation`
returns one number per batch, so it cannot weigh examples (unlabelled ones, padded
words) or feed the loop's per-example average across replicas; its KL
(`keras.losses.kl_divergence`) is used here per unit instead.
With `--student_layers=K` the student is the teacher's backbone cut to K layers
(`cut_layers.py`), initialised from the teacher run's weights before the first step.
After training, eval/distill.json compares teacher and student (for a regression, whose
soft targets are the teacher's scores, the task's `soft_target_loss`, a squared error, replaces
the KL term, and `agreement` is the correlation of student and teacher scores).

Example:
    python -m tfimitate.train --flagfile=configs/distill_sst2_l3.cfg
"""

import json
import os

import numpy as np
from absl import logging

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.training.hooks import Examples, Technique

OPTIONS = (
    options.string(
        "teacher", None,
        "Distil from this teacher (off when unset): a tfimitate run directory (its best or "
        "newest checkpoint), a SavedModel (version directory, or the folder of numbered "
        "versions: the newest) whose signature takes strings and returns class probabilities "
        "or logits, or a TF Serving model grpc://HOST:PORT/MODEL[:SIGNATURE]."),
    options.string(
        "teacher_signature", None,
        "Signature of a SavedModel/served teacher (default: serving_default; tag_words for "
        "token_classification)."),
    options.string(
        "teacher_output", None,
        "Output of the teacher's signature holding class probabilities or logits (default: "
        "`probabilities`, else `logits`)."),
    options.names(
        "teacher_label_map", None,
        "TEACHER:STUDENT label pairs when the teacher's labels differ from the student's "
        "(several teacher labels may map to one student label; unmapped ones are dropped)."),
    options.integer(
        "teacher_batch_size", 64,
        "Examples per teacher call (one Predict request).", lower=1),
    options.number(
        "teacher_timeout", 60.0,
        "grpc:// teacher: deadline of each Predict request in seconds (retried 3 times with "
        "backoff).", lower=0.001),
    options.data(
        "unlabeled_data",
        "Unlabelled text added to the transfer set (learned from the teacher only): .txt one "
        "text per line, or a table read with --unlabeled_column (token_classification: .txt "
        "sentences or CoNLL/JSONL words)."),
    options.string(
        "unlabeled_column", None,
        "Column of --unlabeled_data holding the text (default: --text_column)."),
    options.number(
        "distill_temperature", 2.0,
        "Softmax temperature of teacher and student in the KL term (scaled by T^2).", lower=0.01),
    options.number(
        "distill_alpha", 0.5,
        "Weight of the cross-entropy on gold labels (where present); the KL to the teacher "
        "gets 1 - alpha.", lower=0.0, upper=1.0),
    options.integer(
        "student_layers", 0,
        "If > 0, the student is the teacher's backbone (--backbone, which must be the "
        "teacher's) cut to this many transformer layers, initialised from the teacher run's "
        "weights.", lower=0),
    options.choice(
        "student_layer_choice", "every_other", ["every_other", "bottom"],
        "Which teacher layers a cut student keeps: spread evenly up to the top layer "
        "(every_other: 2nd, 4th, 6th of 6) or the bottom K."),
)

CACHE_SUBDIR = "teacher_outputs"
# The transfer set and the student's shape: a resumed run must keep them.
RESUME_FIELDS = ("teacher", "teacher_signature", "teacher_output", "teacher_label_map",
                 "unlabeled_data", "unlabeled_column", "student_layers", "student_layer_choice")
REPORT_FILE = "distill.json"
# Added to a teacher's probabilities before the log, so a 0 stays finite.
TINY = 1e-12


def from_config(cfg):
    """The Distillation technique if --teacher is set (its flags checked), else None."""
    if getattr(cfg, "self_train", False):
        return None  # the teacher labels texts for self-training (techniques/self_training.py)
    if not cfg.teacher:
        for name in ("unlabeled_data", "student_layers", "teacher_label_map"):
            # Domain-adaptive pretraining reads --unlabeled_data without a teacher.
            if getattr(cfg, name) and not (name == "unlabeled_data"
                                           and getattr(cfg, "adapt_pretraining_steps", 0)):
                raise UserError(f"--{name} needs --teacher: say which model to distil from.")
        return None
    if not 0.0 <= cfg.distill_alpha <= 1.0:
        raise UserError(f"--distill_alpha={cfg.distill_alpha}: give a weight between 0 and 1.")
    if cfg.distill_temperature <= 0:
        raise UserError(f"--distill_temperature={cfg.distill_temperature}: give a positive number.")
    if cfg.unlabeled_column and not cfg.unlabeled_data:
        raise UserError("--unlabeled_column needs --unlabeled_data: give the file it is a column of.")
    from tfimitate.tasks import base, get_task

    lacking = base.missing_members(get_task(cfg.task), base.SoftTargets)
    if lacking:
        raise UserError(f"--teacher: the {cfg.task} task cannot learn from a teacher yet (it has "
                        f"no {', '.join(lacking)}); distil text or token classifiers.")
    label_map(cfg.teacher_label_map)  # checks its form
    return Distillation()


def label_map(pairs):
    """--teacher_label_map as [(teacher label, student label)], checked for form."""
    mapped = []
    for pair in pairs or ():
        teacher, sep, student = pair.rpartition(":")
        if not sep or not teacher or not student:
            raise UserError(f"--teacher_label_map: '{pair}' is not TEACHER:STUDENT; write pairs "
                            "such as positive:1,negative:0.")
        mapped.append((teacher, student))
    return mapped


def label_matrix(teacher_labels, student_labels, pairs, spec):
    """[teacher labels, student labels] 0/1 matrix moving teacher columns to student ones.

    Same label sets in any order need no map; otherwise --teacher_label_map says which
    teacher labels make each student label (unmapped teacher labels are dropped).
    """
    teacher_labels, student_labels = list(teacher_labels), list(student_labels)
    pairs = label_map(pairs)
    if not pairs:
        if sorted(teacher_labels) != sorted(student_labels):
            raise UserError(
                f"--teacher={spec}: the teacher's labels ({', '.join(teacher_labels)}) differ "
                f"from the student's ({', '.join(student_labels)}); map them with "
                "--teacher_label_map=TEACHER:STUDENT,...")
        pairs = [(label, label) for label in teacher_labels]
    matrix = np.zeros([len(teacher_labels), len(student_labels)], np.float32)
    for teacher, student in pairs:
        if teacher not in teacher_labels:
            raise UserError(f"--teacher_label_map: '{teacher}' is not one of the teacher's labels "
                            f"({', '.join(teacher_labels)}).")
        if student not in student_labels:
            raise UserError(f"--teacher_label_map: '{student}' is not one of the student's labels "
                            f"({', '.join(student_labels)}).")
        matrix[teacher_labels.index(teacher), student_labels.index(student)] = 1.0
    unmapped = [s for s, column in zip(student_labels, matrix.T) if not column.any()]
    if unmapped:
        raise UserError(f"--teacher_label_map maps no teacher label to the student's "
                        f"{', '.join(unmapped)}; add TEACHER:{unmapped[0]}.")
    return matrix


def to_student(probs, matrix):
    """Teacher probabilities in the student's columns, renormalised (all-zero rows, such as
    padding, stay zero)."""
    moved = probs @ matrix
    total = moved.sum(axis=-1, keepdims=True)
    return np.where(total > 0, moved / np.maximum(total, TINY), 0.0).astype(np.float32)


class _Recorder:
    """The model as a step loss sees it, recording the outputs of each call."""

    def __init__(self, model):
        self._model = model
        self.outputs = []

    def __call__(self, *args, **kwargs):
        outputs = self._model(*args, **kwargs)
        self.outputs.append(outputs)
        return outputs

    def __getattr__(self, name):
        return getattr(self._model, name)


def distillation_loss(teacher_probs, logits, temperature):
    """Per-example T^2 * KL(teacher || student) at temperature T, averaged over the
    example's label units (rows of `teacher_probs` that are all zero are not units).

    Args:
        teacher_probs: float32 [batch, (positions,) classes], zero rows for padding.
        logits: the student's float32 outputs, same shape.
        temperature: the softmax temperature T.
    """
    import keras
    import tensorflow as tf

    present = tf.cast(tf.reduce_sum(teacher_probs, axis=-1) > 0, tf.float32)
    soft_teacher = tf.nn.softmax(tf.math.log(teacher_probs + TINY) / temperature, axis=-1)
    soft_student = tf.nn.softmax(logits / temperature, axis=-1)
    kl = keras.losses.kl_divergence(soft_teacher, soft_student) * present
    axes = list(range(1, kl.shape.rank))
    if axes:
        kl = tf.reduce_sum(kl, axis=axes) / tf.maximum(tf.reduce_sum(present, axis=axes), 1.0)
    return temperature ** 2 * kl


class Distillation(Technique):
    """Trains the student on the teacher's outputs (see the module doc)."""

    name, flag, order = "distillation", "--teacher", 120
    claims = {"student_forward"}

    def __init__(self):
        self.teacher = None
        self.outputs = {}  # split name -> teacher probabilities in the student's columns
        self.transfer = None

    def adapt_model(self, model, cfg):
        if not cfg.student_layers:
            return model
        from tfimitate.tasks import get_task
        from tfimitate.techniques.distillation import cut_layers

        task, outputs = get_task(cfg.task), model.output.shape[-1]
        return cut_layers.cut_model(model, cfg.student_layers, cfg.student_layer_choice,
                                    lambda backbone: task.build_head(cfg, backbone, outputs))

    def adapt_examples(self, examples, task, data, cfg):
        from tfimitate.techniques.distillation import teacher_cache, teachers

        split = examples.split
        labelled = len(split)
        if cfg.unlabeled_data:
            split = task.add_unlabeled(
                split, cfg.unlabeled_data, cfg, "--unlabeled_data", cfg.unlabeled_column,
                exclude=[s for s in (data.eval, data.test) if s is not None])
        teacher = teachers.open_teacher(cfg.teacher, task, cfg, self.restore_run)
        if cfg.student_layers:
            self._check_cut_student(teacher, cfg)
        teacher.check(split)
        matrix = label_matrix(teacher.labels, data.labels, cfg.teacher_label_map, cfg.teacher)
        scores = callable(getattr(task, "soft_target_loss", None))  # a regression: no classes
        directory = os.path.join(cfg.model_dir, CACHE_SUBDIR)
        for name, part in (("train", split), ("eval", data.eval), ("test", data.test)):
            if part is not None:
                probs = teacher_cache.cached_outputs(directory, teacher.fingerprint, part,
                                                     teacher.probabilities)
                self.outputs[name] = probs if scores else to_student(probs, matrix)
        self.teacher = teacher
        self.transfer = {"examples": len(split), "labelled": labelled,
                         "unlabelled": len(split) - labelled}
        logging.info("Distilling from %s (%s) on %d examples (%d without a label).",
                     cfg.teacher, teacher.kind, len(split), len(split) - labelled)
        return Examples(split, dict(examples.extras, teacher=self.outputs["train"]))

    @staticmethod
    def _check_cut_student(teacher, cfg):
        from tfimitate.techniques.distillation import cut_layers

        if teacher.kind != "run":
            raise UserError(f"--student_layers cuts the teacher's backbone, which needs a "
                            f"tfimitate run as --teacher (not {cfg.teacher}); or give the "
                            "student its own --backbone without --student_layers.")
        if teacher.cfg.backbone != cfg.backbone:
            raise UserError(f"--student_layers cuts the teacher's backbone: set --backbone="
                            f"{teacher.cfg.backbone} (the teacher's), not {cfg.backbone}.")
        total = cut_layers.num_layers(teacher.run.model)
        if cfg.student_layers >= total:
            raise UserError(f"--student_layers={cfg.student_layers}: the teacher's backbone has "
                            f"{total} layers; choose fewer.")

    def initialize(self, run):
        """A cut student (--student_layers) starts from the teacher's layers (a resumed
        run then restores its own checkpoint over them)."""
        cfg = run.cfg
        if cfg.student_layers:
            from tfimitate.techniques.distillation import cut_layers

            cut_layers.copy_weights(self.teacher.run.model, run.model, cfg.student_layer_choice)
            logging.info("Initialised the %d-layer student from the teacher's layers %s.",
                         cfg.student_layers, [i + 1 for i in cut_layers.kept_layers(
                             cut_layers.num_layers(self.teacher.run.model), cfg.student_layers,
                             cfg.student_layer_choice)])

    def wrap_loss(self, step_loss, run):
        import tensorflow as tf

        from tfimitate.tasks import get_task

        cfg = run.cfg
        alpha, temperature = cfg.distill_alpha, cfg.distill_temperature
        # A task whose soft targets are not class probabilities (a regression's scores)
        # gives its own loss against them.
        task_loss = getattr(get_task(cfg.task), "soft_target_loss", None)
        soft_loss = (lambda teacher, logits: task_loss(teacher, logits, cfg)) if task_loss \
            else (lambda teacher, logits: distillation_loss(teacher, logits, temperature))

        def distilled(model, inputs, labels):
            rest = {k: v for k, v in labels.items() if k != "teacher"}
            recorder = _Recorder(model)
            gold = step_loss(recorder, inputs, rest["labels"] if list(rest) == ["labels"] else rest)
            logits = tf.cast(recorder.outputs[0], tf.float32)
            return alpha * gold + (1.0 - alpha) * soft_loss(labels["teacher"], logits)

        return distilled

    def finish(self, task, run, data, write):
        """Teacher vs student on the eval and test data: console and eval/distill.json."""
        report = {"teacher": {"spec": run.cfg.teacher, "kind": self.teacher.kind,
                              "labels": list(self.teacher.labels),
                              "parameters": self.teacher.parameters},
                  "student": {"backbone": run.cfg.backbone,
                              "student_layers": run.cfg.student_layers or None,
                              "parameters": int(run.model.count_params())},
                  "transfer_set": self.transfer, "temperature": run.cfg.distill_temperature,
                  "alpha": run.cfg.distill_alpha, "agreement": {}}
        lines = []
        for name, split in (("eval", data.eval), ("test", data.test)):
            if split is None:
                continue
            student = task.probabilities(run, split)
            teacher = self.outputs[name]
            scores = {"teacher": task.score_probabilities(split, teacher, run.labels).scalars(),
                      "student": task.score_probabilities(split, student, run.labels).scalars()}
            for who in ("teacher", "student"):
                report[who][name] = scores[who]
            agreement = float(np.mean(student.argmax(-1) == teacher.argmax(-1))) \
                if teacher.shape[-1] > 1 else float(np.corrcoef(student[:, 0], teacher[:, 0])[0, 1])
            report["agreement"][name] = agreement
            lines.append(f"{name:>5} ({split.source}): " + "; ".join(
                f"{who} {_headline(scores[who])}" for who in ("teacher", "student"))
                + f"; agreement {agreement:.4f}")
        params = (f"parameters: teacher {report['teacher']['parameters'] or 'unknown'}, "
                  f"student {report['student']['parameters']}")
        print("\nDistillation (teacher vs student):\n" + "\n".join(lines + [params]), flush=True)
        if write:
            from tfimitate import files

            path = os.path.join(run.cfg.model_dir, "eval", REPORT_FILE)
            files.write_atomically(path, json.dumps(report, indent=2))
            logging.info("Wrote %s", path)


def _headline(scalars):
    return ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()
                     if k in ("accuracy", "macro_f1", "f1", "precision", "recall", "rmse",
                              "pearson"))

