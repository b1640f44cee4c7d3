"""The export refuses graphs TF Serving cannot run and models that do not reload faithfully."""

import os

import numpy as np
import pytest

import tfimitate  # noqa: F401
import tensorflow as tf

from tfimitate.serving import export, op_audit


class Doubler(tf.Module):
    def __init__(self, use_python):
        super().__init__()
        self.use_python = use_python
        self.serve = tf.function(self._double, input_signature=[tf.TensorSpec([None], tf.float32, name="x")])

    def _double(self, x):
        if self.use_python:
            y = tf.py_function(lambda v: v * 2, [x], tf.float32)
        else:
            y = x * 2
        return {"y": y}

    def serving_signatures(self):
        return {"serving_default": self.serve}


def checks(x, y):
    return {"serving_default": ({"x": tf.constant(x)}, {"y": np.array(y)})}


def test_servable_ops_include_core_and_tf_text_but_not_python_callbacks():
    ops = op_audit.servable_ops()
    assert {"MatMul", "StatefulPartitionedCall", "FastWordpieceTokenizeWithOffsets"} <= ops
    assert not {"PyFunc", "EagerPyFunc"} & ops


def test_py_function_fails_the_export_and_leaves_nothing(tmp_path):
    base = str(tmp_path / "m")
    with pytest.raises(op_audit.ExportError, match="EagerPyFunc"):
        export.export_saved_model(Doubler(True), base, checks([1.0, 2.0], [2.0, 4.0]))
    assert os.listdir(base) == []


def test_parity_mismatch_fails_the_export(tmp_path):
    base = str(tmp_path / "m")
    with pytest.raises(op_audit.ExportError, match="differs from the Keras model"):
        export.export_saved_model(Doubler(False), base, checks([1.0, 2.0], [2.0, 4.1]))
    assert os.listdir(base) == []
    path = export.export_saved_model(Doubler(False), base, checks([1.0, 2.0], [2.0, 4.0]))
    assert path == os.path.join(base, "1") and os.listdir(base) == ["1"]


def test_stale_temporary_of_a_dead_export_is_removed(tmp_path):
    base = tmp_path / "m"
    (base / ".tmp-1-999999999").mkdir(parents=True)
    export.export_saved_model(Doubler(False), str(base), checks([1.0], [2.0]))
    assert sorted(os.listdir(base)) == ["1"]


@pytest.mark.parametrize("x, expected", [([float("nan"), 2.0], [float("nan"), 4.0]),
                                         ([1.0, 2.0], [2.0, float("nan")])])
def test_nan_outputs_fail_the_export_even_where_both_sides_agree(tmp_path, x, expected):
    base = str(tmp_path / "m")
    with pytest.raises(op_audit.ExportError, match="NaN or infinite"):
        export.export_saved_model(Doubler(False), base, checks(x, expected))
    assert os.listdir(base) == []
