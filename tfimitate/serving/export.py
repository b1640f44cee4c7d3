"""Write a servable SavedModel version directory, atomically, and prove it works.

Steps: write the SavedModel into a hidden temporary folder beside the versions
(TF Serving ignores non-numeric names), audit its ops against the target TF Serving
release, reload it twice (TF2's `tf.saved_model.load`, and TensorFlow's C++ session
loader, which is how TF Serving loads it) and compare every signature's outputs with
the in-memory Keras model on real examples, add the warmup requests, then rename it to `<export_dir>/<version>` in one step, so a server
polling the folder never sees half a model. For an object store (`gs://...`), where
a folder is only a name prefix and cannot be renamed in one step, the temporary is a
local folder, checked there, then uploaded to `<version>/` file by file,
`saved_model.pb` last (see README "Cloud storage" for what a server may see meanwhile).

Example:
    version_dir = export_saved_model(
        module, "saved_models/sst2",
        checks={"serving_default": ({"text": texts}, {"probabilities": keras_probs})})
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from tfimitate import files
from tfimitate.errors import UserError
from tfimitate.serving import inference, session_loader, trimming
from tfimitate.serving.op_audit import ExportError, audit

TEMPORARY_PREFIX = ".tmp-"
# Which run and checkpoint step a version was exported from (TF Serving ignores assets.extra).
SOURCE_FILE = os.path.join("assets.extra", "tfimitate_source.json")
# Which TF Serving releases the version loads on, and what it was checked with.
SERVING_FILE = os.path.join("assets.extra", "tfimitate_serving.json")
# Max abs difference of probabilities, by the compute dtype of the Keras dtype policy:
# 16-bit models carry 3 (bfloat16) or 4 (float16) significant digits, and the export
# pads batches to another length than the in-memory check does.
PARITY_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}


def existing_versions(export_dir):
    """Integer versions already under `export_dir`; refuses foreign entries."""
    if not files.isdir(export_dir):
        return []
    versions = []
    for name in sorted(files.listdir(export_dir)):
        if name.startswith("."):
            continue
        if not name.isdigit():
            raise UserError(
                f"--export_dir={export_dir} holds '{name}', which is not a numeric version "
                "directory; TF Serving loads only integer versions: move it away or choose "
                "another --export_dir.")
        versions.append(int(name))
    return versions


def next_version(export_dir, requested=None):
    """`requested` if free, else one more than the newest existing version (1 for none)."""
    versions = existing_versions(export_dir)
    if requested is not None:
        if requested in versions:
            raise UserError(
                f"--export_version={requested}: {export_dir}/{requested} already exists; "
                "versions are immutable, pick a new number.")
        return requested
    return max(versions, default=0) + 1


def record_source(version_dir, source):
    """Writes which run and step `version_dir` comes from (e.g. {"model_dir": ..., "step": 600})."""
    files.write_atomically(os.path.join(version_dir, SOURCE_FILE), json.dumps(source))


def record_serving(version_dir, release, requested, loads_on):
    """Writes the export's serving provenance: the target release (the one asked for, or the
    oldest that has every op), every release whose ops it uses, the checking TensorFlow."""
    files.write_atomically(os.path.join(version_dir, SERVING_FILE), json.dumps({
        "serving_version": release, "requested_serving_version": requested,
        "loads_on": loads_on, "checked_with": {
            "tensorflow": tf.__version__, "loader": "C++ LoadSavedModel (TF C API session)"},
    }, indent=1))


def read_source(version_dir):
    """What record_source wrote in `version_dir` ({} if nothing)."""
    path = os.path.join(version_dir, SOURCE_FILE)
    return json.loads(files.read_bytes(path)) if files.isfile(path) else {}


def version_exported_from(export_dir, source):
    """The version directory under `export_dir` exported from `source`, or None."""
    for version in sorted(existing_versions(export_dir), reverse=True):
        if read_source(os.path.join(export_dir, str(version))) == source:
            return os.path.join(export_dir, str(version))
    return None


def export_saved_model(module, export_dir, checks, version=None, write_extras=None,
                       serving_version=None, tolerance=None):
    """Saves `module.serving_signatures()` under `<export_dir>/<version>/`, checked.

    Args:
        module: a tf.Module whose `serving_signatures()` returns {name: tf.function
            with an input signature}, 'serving_default' among them.
        export_dir: the model's base path (what TF Serving's model_base_path names).
        checks: signature name -> (input tensors, {output name: NumPy array}) that the
            reloaded SavedModel must reproduce; every signature must have one.
        version: explicit version number, or None for the next one.
        write_extras: optional callable(temporary_dir) adding files (warmup requests).
        serving_version: the TF Serving release whose ops the graph must use (see
            releases.RELEASES, e.g. "2.12"); None: the oldest release that has them all.
        tolerance: max abs difference of float outputs in the parity checks; None: by the
            compute dtype of the Keras dtype policy (PARITY_TOLERANCE).

    Returns:
        The final version directory.
    """
    explicit = version is not None
    version = next_version(export_dir, version)
    files.makedirs(export_dir)
    final = os.path.join(export_dir, str(version))
    if files.is_remote(export_dir):
        temporary = tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{version}-")
    else:
        _remove_stale_temporaries(export_dir)
        temporary = os.path.join(export_dir, f"{TEMPORARY_PREFIX}{version}-{os.getpid()}")
    try:
        functions = module.serving_signatures()
        if "serving_default" not in functions or set(functions) != set(checks):
            raise ExportError(
                f"the task's signatures ({', '.join(sorted(functions))}) and parity checks "
                f"({', '.join(sorted(checks))}) must match and include serving_default; "
                "this is a bug in the task, please report it.")
        with trimming.core_op_trimming():  # loads on TF Serving 2.12-2.19 (TF Text 2.12)
            signatures = {name: function.get_concrete_function()
                          for name, function in functions.items()}
            tf.saved_model.save(module, temporary, signatures=signatures)  # may trace again
        set_method_names(temporary)
        release, loads_on = audit(temporary, serving_version)
        reloaded = tf.saved_model.load(temporary)
        for name, (inputs, expected) in checks.items():
            check_parity(reloaded.signatures[name], inputs, expected, name, tolerance)
        check_session_parity(temporary, checks, tolerance)
        record_serving(temporary, release, serving_version, loads_on)
        if write_extras is not None:
            write_extras(temporary)
        if files.is_remote(final):
            files.copy_tree(temporary, final, last=("saved_model.pb",))
        else:
            final = _rename_to_free_version(temporary, export_dir, version, explicit)
    finally:
        files.rmtree(temporary)
    logging.info("Exported version %d to %s (TF Serving %s and newer).", version, final, release)
    return final


def _rename_to_free_version(temporary, export_dir, version, explicit):
    """Renames `temporary` to `<export_dir>/<version>`; if another export took that version
    meanwhile, the same checkpoint's export is kept (and returned), else the next free
    version is taken (an `explicit` version is refused)."""
    while True:
        final = os.path.join(export_dir, str(version))
        try:
            os.rename(temporary, final)
            return final
        except OSError:
            if not os.path.isdir(final):
                raise
        source = read_source(temporary)
        if source and read_source(final) == source:
            logging.info("Another export wrote the same checkpoint as %s meanwhile.", final)
            return final
        if explicit:
            raise UserError(f"--export_version={version}: another export wrote {final} "
                            "meanwhile; versions are immutable, pick a new number.")
        version = next_version(export_dir)


def set_method_names(path):
    """Gives the classify/regress signatures of the SavedModel at `path` (by name, see
    inference.method_for) the method name TF Serving's Classify/Regress APIs require;
    `tf.saved_model.save` writes every signature as a Predict one."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel.FromString(files.read_bytes(pb_path))
    changed = False
    for meta_graph in saved_model.meta_graphs:
        for name, signature in meta_graph.signature_def.items():
            method = inference.method_for(name)
            if method is None:
                continue
            _check_example_signature(name, signature, method)
            signature.method_name = method
            changed = True
    if changed:
        with open(pb_path, "wb") as f:
            f.write(saved_model.SerializeToString())


def _check_example_signature(name, signature, method):
    """Refuses a classify/regress signature that TF Serving's API would refuse."""
    outputs = set(signature.outputs)
    allowed = {"classes", "scores"} if method == inference.CLASSIFY_METHOD else {"outputs"}
    if (list(signature.inputs) != ["inputs"] or signature.inputs["inputs"].dtype != tf.string.as_datatype_enum
            or not outputs or not outputs <= allowed):
        raise ExportError(
            f"signature {name} is named as a {method} signature but does not take one string "
            f"input 'inputs' (serialized tf.Examples) and return {' and/or '.join(sorted(allowed))}; "
            "this is a bug in the task, please report it.")


def check_session_parity(path, checks, tolerance=None):
    """Loads `path` with TensorFlow's C++ session loader, as TF Serving does, and compares
    every signature's outputs on the `checks` inputs with the expected ones."""
    try:
        session = session_loader.SessionModel(path)
    except session_loader.LoadError as error:
        raise ExportError(
            f"TensorFlow Serving's loader (TensorFlow's C++ LoadSavedModel) refuses the export: "
            f"{_first_line(error)}; nothing was exported, please report this.") from None
    try:
        for name, (inputs, expected) in checks.items():
            feeds = {key: np.asarray(value) for key, value in inputs.items()}
            try:
                outputs = session.run(name, feeds, expected)
            except session_loader.RunError as error:
                raise ExportError(
                    f"signature {name} fails when TensorFlow Serving's loader runs it "
                    f"({_first_line(error)}); the serving module must hold its Keras models "
                    "through tfimitate.serving.module.ServingModule so that TF Serving restores "
                    "the variables the graph reads; nothing was exported.") from None
            compare_outputs(outputs, expected, f"{name} (as TF Serving loads it)", tolerance)
    finally:
        session.close()


def _first_line(error):
    return str(error).split(" Debug info:")[0].strip().splitlines()[0]


def check_parity(signature, inputs, expected, name="serving_default", tolerance=None):
    """Compares a reloaded signature's outputs on `inputs` with the `expected` outputs."""
    outputs = {key: value.numpy() for key, value in signature(**inputs).items()}
    compare_outputs(outputs, expected, name, tolerance)


def compare_outputs(outputs, expected, name, tolerance=None):
    """Compares NumPy `outputs` of signature `name` with the `expected` ones.

    Floats must agree within `tolerance` (by the dtype policy) and be NaN or infinite
    in neither; strings, ints and bools must be equal.
    """
    if tolerance is None:
        import keras

        tolerance = PARITY_TOLERANCE[keras.mixed_precision.global_policy().compute_dtype]
    for output, want in expected.items():
        got = outputs[output]
        what = f"the reloaded SavedModel's {name} '{output}'"
        if got.shape != want.shape:
            raise ExportError(
                f"{what} has shape {got.shape}, the Keras model's {want.shape}; the export "
                "graph is wrong, please report this.")
        if want.dtype.kind not in "fc":  # strings, ints, bools: exactly equal
            if not np.array_equal(got, want):
                raise ExportError(
                    f"{what} differs from the Keras model's on real examples; the export is "
                    "not trustworthy, please report this.")
            continue
        if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
            raise ExportError(
                f"{what} holds NaN or infinite values on real examples; the model's weights or "
                "inputs are broken, so nothing was exported.")
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        if diff > tolerance:
            raise ExportError(
                f"{what} differs from the Keras model by {diff:.2e} (> {tolerance:g}) on real "
                "examples; the export is not trustworthy, please report this.")
        logging.info("Parity check on %d examples: %s '%s' max abs diff %.2e.",
                     len(want), name, output, diff)


def _remove_stale_temporaries(export_dir):
    """Deletes temporary folders left by exports whose process died (e.g. SIGKILL)."""
    for name in os.listdir(export_dir):
        if name.startswith(TEMPORARY_PREFIX) and not _process_alive(name.rsplit("-", 1)[-1]):
            files.rmtree(os.path.join(export_dir, name))


def _process_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
