"""Write a servable SavedModel version directory, atomically, and prove it works.

Steps: write the SavedModel into a hidden temporary folder beside the versions
(TF Serving ignores non-numeric names), audit its ops, reload it and compare its
outputs with the in-memory Keras model on real examples, add the warmup
requests, then rename it to `<export_dir>/<version>` in one step, so a server
polling the folder never sees half a model.

Example:
    version_dir = export_saved_model(module, "saved_models/sst2",
                                     parity_inputs=inputs, expected=keras_probs)
"""

import os
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

from tfimitate.errors import UserError
from tfimitate.serving.op_audit import ExportError, audit_saved_model

TEMPORARY_PREFIX = ".tmp-"
# Max abs difference of probabilities, by the compute dtype of the Keras dtype policy:
# 16-bit models carry 3 (bfloat16) or 4 (float16) significant digits, and the export
# pads batches to another length than the in-memory check does.
PARITY_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}


def existing_versions(export_dir):
    """Integer versions already under `export_dir`; refuses foreign entries."""
    if not os.path.isdir(export_dir):
        return []
    versions = []
    for name in sorted(os.listdir(export_dir)):
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


def export_saved_model(module, export_dir, parity_inputs, expected, version=None,
                       write_extras=None):
    """Saves `module.serve` as `serving_default` under `<export_dir>/<version>/`.

    Args:
        module: a tf.Module with a `serve` tf.function that has an input signature;
            an optional `extra_signatures()` method returns more {name: tf.function}.
        export_dir: the model's base path (what TF Serving's model_base_path names).
        parity_inputs: dict of example input tensors for the signature.
        expected: dict output name -> NumPy array the reloaded model must reproduce.
        version: explicit version number, or None for the next one.
        write_extras: optional callable(temporary_dir) adding files (warmup requests).

    Returns:
        The final version directory.
    """
    version = next_version(export_dir, version)
    os.makedirs(export_dir, exist_ok=True)
    _remove_stale_temporaries(export_dir)
    temporary = os.path.join(export_dir, f"{TEMPORARY_PREFIX}{version}-{os.getpid()}")
    final = os.path.join(export_dir, str(version))
    try:
        signatures = {"serving_default": module.serve.get_concrete_function()}
        if hasattr(module, "extra_signatures"):
            signatures.update({name: function.get_concrete_function()
                               for name, function in module.extra_signatures().items()})
        tf.saved_model.save(module, temporary, signatures=signatures)
        audit_saved_model(temporary)
        check_parity(temporary, parity_inputs, expected)
        if write_extras is not None:
            write_extras(temporary)
        os.rename(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logging.info("Exported version %d to %s", version, final)
    return final


def check_parity(export_path, inputs, expected, tolerance=None):
    """Reloads the SavedModel and compares `serving_default` with `expected` outputs."""
    if tolerance is None:
        import keras

        tolerance = PARITY_TOLERANCE[keras.mixed_precision.global_policy().compute_dtype]
    reloaded = tf.saved_model.load(export_path)
    outputs = reloaded.signatures["serving_default"](**inputs)
    for name, want in expected.items():
        got = outputs[name].numpy()
        if got.shape != want.shape:
            raise ExportError(
                f"the reloaded SavedModel's '{name}' has shape {got.shape}, the Keras model's "
                f"{want.shape}; the export graph is wrong, please report this.")
        if want.dtype.kind not in "fc":  # strings, ints, bools: exactly equal
            if not np.array_equal(got, want):
                raise ExportError(
                    f"the reloaded SavedModel's '{name}' differs from the Keras model's on real "
                    "examples; the export is not trustworthy, please report this.")
            continue
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        if diff > tolerance:
            raise ExportError(
                f"the reloaded SavedModel's '{name}' differs from the Keras model by {diff:.2e} "
                f"(> {tolerance:g}) on real examples; the export is not trustworthy, please report this.")
        logging.info("Parity check on %d examples: '%s' max abs diff %.2e.", len(want), name, diff)


def _remove_stale_temporaries(export_dir):
    """Deletes temporary folders left by exports whose process died (e.g. SIGKILL)."""
    for name in os.listdir(export_dir):
        if name.startswith(TEMPORARY_PREFIX) and not _process_alive(name.rsplit("-", 1)[-1]):
            shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
