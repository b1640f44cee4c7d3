"""Teachers to distil from: a tfimitate run, a SavedModel, or a model served by TF Serving.

Every teacher gives class probabilities per label unit of a split (tasks/base.py), in
its own column order `labels` (for a regression student: its scores, [examples, 1], whose
one label is `score`):
  * a tfimitate run directory: its best (else newest) checkpoint, through its task's
    `probabilities`; labels from its experiment; restored only when first needed;
  * a SavedModel (a version directory, or a folder of numbered versions: the newest):
    any signature taking the task's raw inputs (strings; side features as exported) and
    returning class probabilities or logits (a regression: `score` or `outputs`, one number
    per example), called in batches through the task's `served_probabilities`;
  * `grpc://HOST:PORT/MODEL[:SIGNATURE]`: the same through TF Serving's Predict API,
    each request with a deadline and retried with backoff.
A served model's label names come from its assets/labels.txt (every tfimitate export
has one), else from a string output naming each row's top class (`label`, `tags`) on
the probe examples, else they are the column numbers ("0", "1", ...).

A run teacher is restored with `restore_run` (`tfimitate.runs.restore`, lent to the
technique by techniques.chosen; techniques import no workflow).

Example:
    teacher = open_teacher("runs/sst2_minilm", task, cfg, restore_run)
    teacher.check(split)                   # probes it: UserError before anything is written
    probs = teacher.probabilities(split)   # float32 [label units, len(teacher.labels)]
"""

import hashlib
import os

import numpy as np

from tfimitate import files, outputs
from tfimitate.errors import UserError

GRPC_PREFIX = "grpc://"
# Probed before anything is written: outputs, their kind and the label names.
PROBE_EXAMPLES = 256
# Output names taken as class scores when --teacher_output is not given, in this order.
OUTPUT_NAMES = ("probabilities", "logits")
# The same for a regression student: one score per example.
SCORE_NAMES = ("score", "outputs")
GRPC_RETRIES = 3
GRPC_BACKOFF_SECONDS = 1.0


def open_teacher(spec, task, cfg, restore_run):
    """The teacher `spec` names (--teacher), for a student of `task`; a run teacher is
    restored with restore_run(model_dir) -> (task, Run, step) when first needed."""
    if spec.startswith(GRPC_PREFIX):
        return GrpcTeacher(spec, task, cfg)
    path = os.path.expanduser(spec)
    if not files.isdir(path):
        raise UserError(f"--teacher={spec}: no such directory; give a tfimitate run directory, "
                        "a SavedModel directory or grpc://HOST:PORT/MODEL.")
    from tfimitate.config import EXPERIMENT_FILE

    if files.isfile(os.path.join(path, EXPERIMENT_FILE)):
        return RunTeacher(spec, path, task, restore_run)
    version = saved_model_dir(path)
    if version is None:
        raise UserError(f"--teacher={spec} holds neither a tfimitate run (experiment.json) nor "
                        "a SavedModel (saved_model.pb, or numbered version folders); check the path.")
    return SavedModelTeacher(spec, version, task, cfg)


def saved_model_dir(path):
    """`path` if it is a SavedModel, else its newest numbered version that is one, else None."""
    if files.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(int(name) for name in files.listdir(path) if name.isdigit()
                      and files.isfile(os.path.join(path, name, "saved_model.pb")))
    return os.path.join(path, str(versions[-1])) if versions else None


def _digest(*parts):
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else str(part).encode())
        sha.update(b"\0")
    return sha.hexdigest()


def _read(path):
    return files.read_bytes(path)


class RunTeacher:
    """A tfimitate run of the same task; its best (else newest) checkpoint."""

    kind = "run"

    def __init__(self, spec, path, task, restore_run):
        from tfimitate.config import Experiment
        from tfimitate.training import checkpoints

        self.spec, self.path, self.task = spec, path, task
        self.restore_run = restore_run
        self.cfg = Experiment.load(path)
        if self.cfg.task != task.NAME:
            raise UserError(f"--teacher={spec} is a {self.cfg.task} run but the student is "
                            f"{task.NAME}; distil from a run of the same task.")
        checkpoint = None
        for subdir in (checkpoints.BEST_SUBDIR, checkpoints.CHECKPOINT_SUBDIR):
            checkpoint = checkpoint or _latest_checkpoint(os.path.join(path, subdir))
        if checkpoint is None:
            raise UserError(f"--teacher={spec} has no checkpoint yet; train the teacher first.")
        self.labels = tuple(self.cfg.labels)
        self.fingerprint = _digest("run", os.path.realpath(path), _read(checkpoint + ".index"))
        self._run = None

    @property
    def run(self):
        """The restored teacher (a tasks.base.Run), loaded on first use."""
        if self._run is None:
            import keras

            policy = keras.mixed_precision.global_policy()  # restore sets the teacher's
            try:
                _, self._run, _ = self.restore_run(self.path)
            finally:
                keras.mixed_precision.set_global_policy(policy)
        return self._run

    @property
    def parameters(self):
        return int(self.run.model.count_params())

    def check(self, split):
        """Nothing to probe: the run's task and labels are known."""
        del split

    def probabilities(self, split):
        try:
            return self.task.probabilities(self.run, split)
        except outputs.BadOutputs as error:
            raise outputs.BadOutputs(f"--teacher={self.spec}: {error}") from None


def _latest_checkpoint(directory):
    import tensorflow as tf

    path = tf.train.latest_checkpoint(directory)
    return path if path and files.isfile(path + ".index") else None


class _ServedTeacher:
    """What SavedModel and gRPC teachers share: batching, output choice, label names.

    Subclasses set `spec` and `fingerprint` and implement `_call(signature, batch)`
    returning {output name: NumPy array}.
    """

    def __init__(self, spec, task, cfg, signature=None):
        self.spec, self.task = spec, task
        self.signature = cfg.teacher_signature or signature
        self.output = cfg.teacher_output
        self.batch_size = cfg.teacher_batch_size
        self.labels = None
        self.logits = None  # whether the chosen output holds logits (decided on the probe)
        self._names = None  # column -> name seen in a string output, while probing
        # A regression student (soft targets are scores) reads one score per example.
        self.scores = callable(getattr(task, "soft_target_loss", None))

    def check(self, split):
        """Probes the teacher on the first examples of `split`: its signature, its class
        scores and its label names (UserError naming the problem)."""
        probe = split.subset(range(min(PROBE_EXAMPLES, len(split))), split.source)
        self._names = {}
        try:
            probs = self.task.served_probabilities(probe, self._predict)
        finally:
            names, self._names = self._names, None
        if self.scores:
            from tfimitate.tasks.regression import SCORE

            self.labels = (SCORE,)
            return
        columns = probs.shape[-1]
        self.labels = self._asset_labels(columns) or tuple(
            names.get(i, str(i)) for i in range(columns))

    def probabilities(self, split):
        probs = self.task.served_probabilities(split, self._predict)
        if probs.shape[-1] != len(self.labels):
            raise UserError(f"--teacher={self.spec} answered {probs.shape[-1]} classes, not the "
                            f"{len(self.labels)} it had when probed; did the model change?")
        return probs

    def _asset_labels(self, columns):
        del columns
        return None

    def _predict(self, default_signature, inputs):
        """The `predict` of task.served_probabilities: per-example probability arrays."""
        signature = self.signature or default_signature
        count = len(next(iter(inputs.values())))
        rows = []
        for start in range(0, count, self.batch_size):
            batch = {name: _padded(values[start:start + self.batch_size])
                     for name, values in inputs.items()}
            answer = self._call(signature, batch)
            if self.scores:
                rows.extend(self._scores(signature, answer, next(iter(batch.values()))))
                continue
            probs = self._class_probabilities(signature, answer, next(iter(batch.values())))
            if self._names is not None:
                self._learn_names(answer, probs)
            rows.extend(probs)
        return rows

    def _output_name(self, signature, answer, candidates, wanted, kind):
        """The output of `answer` to read: --teacher_output, else the first of `candidates`
        it has; refused in one sentence when there is none (`wanted`, `kind`: its words)."""
        name = self.output or next((n for n in candidates if n in answer), None)
        if name not in answer:
            wanted = f"'{name}'" if name else wanted
            raise UserError(
                f"--teacher={self.spec}: signature '{signature}' returns no {wanted} (outputs: "
                f"{', '.join(sorted(answer))}); name its {kind} output with --teacher_output.")
        return name

    def _class_probabilities(self, signature, answer, examples):
        """The class probabilities in `answer` (output name -> array) for `examples` (the
        batch's first input: they name a bad row), checked to be numbers and, unless they
        are logits, probabilities."""
        name = self._output_name(signature, answer, OUTPUT_NAMES, "probabilities or logits",
                                 "class-score")
        value = np.asarray(answer[name])
        if value.dtype.kind != "f" or value.ndim < 2 or value.shape[-1] < 2:
            raise UserError(
                f"--teacher={self.spec}: output '{name}' of signature '{signature}' is "
                f"{value.dtype} {list(value.shape)}, not class probabilities or logits "
                "[batch, ..., classes]; name another with --teacher_output.")
        value = value.astype(np.float32)
        names = [" ".join(e) if isinstance(e, (list, tuple)) else e for e in examples]
        where = f"--teacher={self.spec} (output '{name}')"
        advice = "fix or replace the teacher; nothing was cached for this batch"
        outputs.check(value, where, advice, names=names)
        if self.logits is None:
            self.logits = _looks_like_logits(name, value)
        if self.logits:
            value = np.exp(value - value.max(axis=-1, keepdims=True))
            value /= value.sum(axis=-1, keepdims=True)
        else:
            outputs.check(value, where, advice, probabilities=True, names=names)
        return np.maximum(value, 0.0)

    def _scores(self, signature, answer, examples):
        """The one score per example in `answer` (a regression teacher), checked to be
        finite numbers."""
        name = self._output_name(signature, answer, SCORE_NAMES, "score or outputs", "score")
        value = np.asarray(answer[name])
        if value.dtype.kind != "f" or value.ndim > 2 or (value.ndim == 2 and value.shape[1] != 1) \
                or value.ndim == 0:
            raise UserError(
                f"--teacher={self.spec}: output '{name}' of signature '{signature}' is "
                f"{value.dtype} {list(value.shape)}, not one score per example ([batch] or "
                "[batch, 1]); name another with --teacher_output.")
        value = value.astype(np.float32).reshape(-1, 1)
        names = [" ".join(e) if isinstance(e, (list, tuple)) else e for e in examples]
        outputs.check(value, f"--teacher={self.spec} (output '{name}')",
                      "fix or replace the teacher; nothing was cached for this batch", names=names)
        return value[:, 0]

    def _learn_names(self, outputs, probs):
        top = probs.argmax(axis=-1)
        for value in outputs.values():
            value = np.asarray(value)
            if value.dtype.kind in "SOU" and value.shape == top.shape:
                for name, column in zip(value.ravel(), top.ravel()):
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    if name:
                        self._names.setdefault(int(column), name)


def _looks_like_logits(name, value):
    """Logits unless the output is named like probabilities or holds them (rows >= 0
    summing to 1, or to 0 on padding)."""
    if "logit" in name.lower():
        return True
    if "prob" in name.lower():
        return False
    sums = value.sum(axis=-1)
    return not (np.all(value >= 0) and np.all((np.abs(sums - 1) < 1e-3) | (sums == 0)))


def _padded(values):
    """A batch of per-example values: strings as they are, lists of strings padded with ""."""
    values = list(values)
    if values and isinstance(values[0], (list, tuple)):
        longest = max(len(v) for v in values)
        return [list(v) + [""] * (longest - len(v)) for v in values]
    return values


class SavedModelTeacher(_ServedTeacher):
    """A SavedModel signature loaded in this process."""

    kind = "saved_model"

    def __init__(self, spec, path, task, cfg):
        from tfimitate.serving import saved_models

        super().__init__(spec, task, cfg)
        self.path = path
        self.loaded = saved_models.load(path, f"--teacher={spec}")
        index = os.path.join(path, "variables", "variables.index")
        self.fingerprint = _digest("saved_model", _read(os.path.join(path, "saved_model.pb")),
                                   _read(index) if files.isfile(index) else b"",
                                   self.signature, self.output)

    @property
    def parameters(self):
        """Float weights saved in the SavedModel's variables."""
        import tensorflow as tf

        prefix = os.path.join(self.path, "variables", "variables")
        if not files.isfile(prefix + ".index"):
            return 0
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
        return int(sum(np.prod(shape) for name, shape in reader.get_variable_to_shape_map().items()
                       if dtypes[name].is_floating and "seed_generator" not in name))

    def _asset_labels(self, columns):
        path = os.path.join(self.path, "assets", "labels.txt")
        if not files.isfile(path):
            return None
        text = files.read_bytes(path).decode("utf-8")
        labels = tuple(line for line in text.split("\n") if line.strip())
        return labels if len(labels) == columns else None

    def _call(self, signature, batch):
        import tensorflow as tf

        if signature not in self.loaded.signatures:
            raise UserError(f"--teacher={self.spec} has no signature '{signature}' (it has "
                            f"{', '.join(sorted(self.loaded.signatures))}); choose one with "
                            "--teacher_signature.")
        function = self.loaded.signatures[signature]
        specs = function.structured_input_signature[1]
        batch = _match_inputs(batch, sorted(specs), self.spec, signature)
        try:  # strings; side features as the signature takes them (numbers: float32)
            outputs = function(**{name: tf.constant(values, specs[name].dtype)
                                  for name, values in batch.items()})
        except (TypeError, ValueError, tf.errors.OpError) as error:
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise UserError(f"--teacher={self.spec}: signature '{signature}' failed on the "
                            f"task's raw inputs ({reason}); a teacher must take them as the "
                            "student's export does (texts as strings).") from None
        return {name: value.numpy() for name, value in outputs.items()}


def _match_inputs(batch, names, spec, signature):
    """The task's inputs renamed to the signature's (one input each: any names)."""
    if set(batch) == set(names):
        return batch
    if len(batch) == 1 and len(names) == 1:
        return {names[0]: next(iter(batch.values()))}
    raise UserError(f"--teacher={spec}: signature '{signature}' takes inputs "
                    f"({', '.join(names)}), not this task's ({', '.join(sorted(batch))}); "
                    "choose another --teacher_signature.")


class GrpcTeacher(_ServedTeacher):
    """A model served by TF Serving (or the dev server), queried with Predict."""

    kind = "grpc"
    parameters = None  # not visible through the serving API

    def __init__(self, spec, task, cfg):
        from tfimitate.serving.client import ServingClient

        address = spec[len(GRPC_PREFIX):]
        target, _, model = address.partition("/")
        model, _, signature = model.partition(":")
        if ":" not in target or not model:
            raise UserError(f"--teacher={spec}: write grpc://HOST:PORT/MODEL[:SIGNATURE].")
        super().__init__(spec, task, cfg, signature or None)
        self.model = model
        self.client = ServingClient(target, timeout=cfg.teacher_timeout, retries=GRPC_RETRIES,
                                    backoff=GRPC_BACKOFF_SECONDS, flag="--teacher")
        self.fingerprint = None  # known once the probe found the served version
        self.version = None  # the served version the probe found; every request asks for it

    def check(self, split):
        metadata = self._ask(self.client.metadata, self.model)
        self.version = metadata["version"]
        self.inputs = {name: sorted(signature.get("inputs", {}))
                       for name, signature in metadata["signature_def"].items()}
        super().check(split)
        self.fingerprint = _digest("grpc", self.client.target, self.model, self.version,
                                   self.signature, self.output)

    def _call(self, signature, batch):
        if signature not in self.inputs:
            raise UserError(f"--teacher={self.spec}: the served model has no signature "
                            f"'{signature}' (it has {', '.join(sorted(self.inputs))}); choose "
                            "one with --teacher_signature or the grpc:// address.")
        batch = _match_inputs(batch, self.inputs[signature], self.spec, signature)
        # Numeric side features go as float32, as the export takes them (not float64).
        batch = {name: np.asarray(values, np.float32) if values and isinstance(values[0], float)
                 else values for name, values in batch.items()}
        # Pinned: the cached outputs (named by this version) must all come from it.
        prediction = self._ask(self.client.predict, self.model, batch, version=self.version,
                               signature_name=signature)
        if prediction.version != self.version:
            raise self._moved(f"version {prediction.version} answered")
        return prediction.outputs

    def _moved(self, what):
        return UserError(
            f"--teacher={self.spec}: the teacher's outputs were being cached from version "
            f"{self.version} of {self.model}, but {what}; the server changed version while "
            "distilling, so re-run: the new version's outputs are cached afresh.")

    def _ask(self, method, *args, **kwargs):
        import grpc

        from tfimitate.serving.client import RETRIED_CODES, ServingError

        try:
            return method(*args, **kwargs)
        except ServingError as error:
            if error.code in RETRIED_CODES:
                raise
            if self.version is not None and error.code == grpc.StatusCode.NOT_FOUND:
                raise self._moved("the server no longer serves it") from None
            raise UserError(f"--teacher={self.spec}: {error}; check the model name and "
                            "--teacher_signature.") from None
