"""The precision an export computes in (--export_precision), chosen and checked.

float32 is the trained model as it is. bfloat16 rebuilds it under the bfloat16 dtype policy
(weights stored and matmuls and activations computed in bfloat16, LayerNorm still in float32,
outputs cast to float32), so the export runs bf16 kernels with no server flag and no
per-request weight casts (under mixed_bfloat16 every matmul cast its float32 kernel again:
20% more CPU per served text on SST-2, Zen 4). int8 quantizes the backbone's Dense and
EinsumDense layers with Keras' own `model.quantize("int8")` (int8 weights, per-token int8
activations; embeddings, normalisation and the head stay float32). Every precision but
float32 passes an accuracy gate before anything is written: its score on the run's
evaluation examples may drop at most --export_max_drop points below float32's. auto times
every candidate that passes (float32, bfloat16 where the CPU has bfloat16 units, int8) on
the serving examples through the serving signature and keeps the fastest. The choice, the
scores and the speeds go to <version>/assets.extra/tfimitate_precision.json.

Example:
    choice = choose(task, run, "auto", 0.5, data.eval, examples, labels_file)
    choice.precision, choice.module, choice.checks, choice.record
"""

import contextlib
import dataclasses
import gc
import json
import os
import time

from absl import logging

from tfimitate import files, runs, runtime
from tfimitate.errors import UserError
from tfimitate.tasks import base

PRECISIONS = ("float32", "bfloat16", "int8")
POLICY = {"float32": "float32", "bfloat16": "bfloat16", "int8": "float32"}
# The reloaded export against the in-memory model of its precision: bfloat16 carries 3
# significant digits, int8 activations 1/127 of their row's largest value (a float32
# round-off that moves one across a rounding step shows as 3e-3 on MiniLM-L6's
# probabilities), and the export pads batches to another length.
PARITY_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "int8": 1e-2}
PROVENANCE_FILE = os.path.join("assets.extra", "tfimitate_precision.json")
TIMING_REPEATS = 5


@dataclasses.dataclass
class Choice:
    """The precision chosen for an export, with what export_saved_model needs."""

    precision: str
    module: object  # the task's serving module around the model in that precision
    checks: dict  # parity checks: signature -> (inputs, outputs of the in-memory model)
    tolerance: float
    record: dict  # what the export records in PROVENANCE_FILE

    def write(self, version_dir):
        """Writes the record as PROVENANCE_FILE of `version_dir`."""
        files.write_atomically(os.path.join(version_dir, PROVENANCE_FILE),
                               json.dumps(self.record, indent=1))


def read(version_dir):
    """The precision record of an exported version ({} if it has none)."""
    path = os.path.join(version_dir, PROVENANCE_FILE)
    return json.loads(files.read_bytes(path)) if files.isfile(path) else {}


def choose(task, run, requested, max_drop, eval_split, examples, labels_file):
    """The Choice for --export_precision=`requested` of the trained `run`.

    `eval_split` (the run's evaluation examples) is only read when the gate runs (every
    precision but float32); `examples` are the serving examples of the parity check.
    Raises UserError (nothing written) where the asked precision fails the gate or Keras
    cannot quantize the model.
    """
    from tfimitate import techniques

    chosen = techniques.chosen(run.cfg)
    record = {"export_precision": None, "requested": requested}
    if requested == "float32":
        candidate = _candidate(task, run, "float32", chosen, examples, labels_file)
        record["export_precision"] = "float32"
        return _choice("float32", candidate, record)
    if eval_split is None:
        raise UserError(f"--export_precision={requested} needs the run's evaluation data for its "
                        "accuracy gate; give --eval_data=FILE or export with "
                        "--export_precision=float32.")
    names = [requested] if requested != "auto" else [
        name for name in PRECISIONS if name != "bfloat16" or runtime.has_bf16_units()]
    names = ["float32"] + [name for name in names if name != "float32"]
    candidates, trials = {}, {}
    for name in names:
        try:
            candidates[name] = _candidate(task, run, name, chosen, examples, labels_file)
        except UserError as error:
            if requested != "auto":
                raise
            trials[name] = {"refused": str(error)}
            logging.info("--export_precision=auto leaves out %s: %s", name, error)
            continue
        score = task.evaluate(candidates[name].run, eval_split).score
        trials[name] = {"score": score, "max_abs_diff_vs_float32": _drift(
            candidates[name].checks, candidates["float32"].checks)}
    reference = trials["float32"]["score"]
    for name, trial in trials.items():
        if "score" not in trial:
            continue
        trial["drop_points"] = round(100.0 * (reference - trial["score"]), 4)
        trial["passed"] = trial["drop_points"] <= max_drop
        if not trial["passed"] and requested != "auto":
            raise UserError(
                f"--export_precision={name}: its score on the run's evaluation examples "
                f"({eval_split.source}) is {100 * trial['score']:.2f}, {trial['drop_points']:.2f} "
                f"points below float32's {100 * reference:.2f}, more than --export_max_drop="
                f"{max_drop:g}; nothing was exported: use --export_precision=float32 or auto, "
                "or allow a larger drop.")
    timed = ([name for name in trials if trials[name].get("passed")] if requested == "auto"
             else ["float32", "bfloat16"] if requested == "bfloat16" and not runtime.has_bf16_units()
             else [requested])
    for name in timed:
        trials[name]["texts_per_s"] = _speed(candidates[name])
    if requested == "auto":
        precision = max(timed, key=lambda name: trials[name]["texts_per_s"])
    else:
        precision = requested
    if requested == "bfloat16" and not runtime.has_bf16_units():
        logging.warning(
            "--export_precision=bfloat16 on a CPU without AMX or AVX512-BF16 units: it served "
            "%.0f texts/s here against float32's %.0f; use --export_precision=auto.",
            trials["bfloat16"]["texts_per_s"], trials["float32"]["texts_per_s"])
    record.update(export_precision=precision, max_drop_points=max_drop,
                  eval_data=eval_split.source, eval_examples=len(eval_split),
                  timed_on=f"{len(examples[next(iter(examples))])} serving examples, best of "
                           f"{TIMING_REPEATS} calls of serving_default in process",
                  cpu_bf16_flags=sorted(runtime.cpu_flags() & set(runtime.BF16_CPU_FLAGS)),
                  candidates=trials)
    logging.info("Export precision %s (asked: %s): %s", precision, requested,
                 json.dumps(trials))
    return _choice(precision, candidates[precision], record)


@dataclasses.dataclass
class _Candidate:
    run: base.Run  # the served model in this precision
    module: object
    checks: dict


def _drift(checks, reference):
    """Max abs difference of serving_default's float outputs from the float32 model's, on
    the serving examples."""
    import numpy as np

    got, want = checks["serving_default"][1], reference["serving_default"][1]
    return max((float(np.max(np.abs(got[k] - want[k]))) for k in want
                if want[k].dtype.kind == "f" and want[k].size), default=0.0)


def _choice(precision, candidate, record):
    return Choice(precision, candidate.module, candidate.checks, PARITY_TOLERANCE[precision],
                  record)


def _candidate(task, run, precision, chosen, examples, labels_file):
    """The served model in `precision`, its serving module and parity checks."""
    served_run = served(task, run, precision, chosen)
    # A model rebuilt for export is checked against itself; the trained one keeps the
    # check against the trained model (a technique may change the served model, e.g.
    # LoRA merges its adapters).
    checks = task.parity(run if _reuses(run, precision) else served_run, examples)
    return _Candidate(served_run, task.serving_module(served_run, labels_file), checks)


def served(task, run, precision, chosen=None):
    """A Run of the model `run` serves, computing in `precision` (the trained model itself
    where it already does; else a rebuilt copy, with the default strategy).

    Example:
        int8_run = served(task, run, "int8")   # run.model is left as it was
    """
    import tensorflow as tf

    from tfimitate import techniques

    chosen = techniques.chosen(run.cfg) if chosen is None else chosen
    served_model = techniques.prepare_export(chosen, _model_in(task, run, precision, chosen),
                                             run.cfg)
    if precision == "int8":
        _quantize(served_model)
    return dataclasses.replace(
        run, model=served_model,
        strategy=run.strategy if _reuses(run, precision) else tf.distribute.get_strategy())


def _reuses(run, precision):
    """True where the trained model already has `precision`'s dtype policy (and stays
    unchanged)."""
    return precision != "int8" and run.model.dtype_policy.name == POLICY[precision]


def _model_in(task, run, precision, chosen):
    """The trained model computing in `precision`'s dtype policy: itself if it already does
    (and is not to be quantized in place), else the same architecture rebuilt under that
    policy with its weights."""
    import keras

    if _reuses(run, precision):
        return run.model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICY[precision])
    try:
        model = runs.build_model(task, run.cfg, task.num_outputs(run.labels), chosen,
                                 load_weights=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.set_weights(run.model.get_weights())
    return model


def _quantize(model):
    """Quantizes the Dense and EinsumDense layers of the model's backbone to int8, in place."""
    import keras

    from tfimitate.techniques import parts

    backbone = parts.find_backbone(model, keras_hub=False)
    inside = {id(layer) for layer in parts.sublayers(backbone)} if backbone is not None else set()
    kinds = (keras.layers.Dense, keras.layers.EinsumDense)
    targets = lambda layer: isinstance(layer, kinds) and id(layer) in inside
    if not any(targets(layer) for layer in model._flatten_layers()):
        raise UserError("--export_precision=int8: Keras cannot quantize this model (its backbone "
                        "has no Dense or EinsumDense layer); export float32 or bfloat16.")
    with _frozen_gc():
        try:
            model.quantize("int8", filters=targets)
        except (ValueError, NotImplementedError, TypeError) as error:
            raise UserError(f"--export_precision=int8: Keras cannot quantize this model "
                            f"({' '.join(str(error).split())[:160]}); export float32 or "
                            "bfloat16.") from None


@contextlib.contextmanager
def _frozen_gc():
    """Keras collects garbage after each kernel it replaces (a second per layer with
    TensorFlow's heap); frozen, those collections skip the objects that already exist."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _speed(candidate):
    """Texts/s of the candidate's serving_default on its parity inputs (best of several)."""
    function = candidate.module.serving_signatures()["serving_default"]
    inputs, _ = candidate.checks["serving_default"]
    args = [inputs[spec.name] for spec in function.input_signature]
    count = len(args[0])
    function(*args)  # traces
    best = float("inf")
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - start)
    return round(count / best, 1)
