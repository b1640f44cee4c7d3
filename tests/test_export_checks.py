"""The export refuses graphs TF Serving cannot run and models that do not reload faithfully."""

import json
import os

import numpy as np
import pytest

import tfimitate  # noqa: F401
import tensorflow as tf

from tfimitate.errors import UserError
from tfimitate.serving import export, op_audit, session_loader, trimming
from tfimitate.serving.module import ServingModule


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


def test_every_release_lists_core_and_tf_text_ops_and_the_trim_only_from_tf_text_2_13():
    from tfimitate.serving import releases

    for release in releases.RELEASES:
        ops = op_audit.op_list(release)["ops"]
        assert {"MatMul", "StatefulPartitionedCall", "FastWordpieceTokenizeWithOffsets",
                "SentencepieceOp", "DecodeImage"} <= set(ops), release
        trims = "TFText>RoundRobinTrim" in ops
        assert trims == (releases.RELEASES[release].tensorflow_text >= "2.13"), release


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


class Classifier(tf.Module):
    """A Keras model held plainly (as every task held it before ServingModule)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.serve = tf.function(lambda x: {"y": self.model(x)},
                                 input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])

    def serving_signatures(self):
        return {"serving_default": self.serve}


class ServedClassifier(ServingModule):
    def __init__(self, model):
        super().__init__(model=model)
        self.serve = tf.function(lambda x: {"y": self.model(x)},
                                 input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])

    def serving_signatures(self):
        return {"serving_default": self.serve}


def tiny_keras_model():
    import keras

    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LayerNormalization()(inputs)))


def test_a_plainly_held_keras_model_fails_as_tf_serving_loads_it_and_nothing_is_written(tmp_path):
    """tf.saved_model.load reloads it fine; TensorFlow's C++ loader (TF Serving's) does not."""
    model = tiny_keras_model()
    x = np.random.default_rng(0).random((3, 4), np.float32)
    want = {"serving_default": ({"x": tf.constant(x)}, {"y": model(x).numpy()})}
    base = str(tmp_path / "m")
    with pytest.raises(op_audit.ExportError,
                       match="signature serving_default fails when TensorFlow Serving's loader "
                             r"runs it \(Could not find variable .*ServingModule"):
        export.export_saved_model(Classifier(model), base, want)
    assert os.listdir(base) == []
    path = export.export_saved_model(ServedClassifier(model), base, want)
    got = session_loader.SessionModel(path).run("serving_default", {"x": x})["y"]
    np.testing.assert_allclose(got, want["serving_default"][1]["y"], atol=1e-6)
    provenance = json.load(open(os.path.join(path, export.SERVING_FILE)))
    assert provenance["serving_version"] == "2.12" and provenance["loads_on"][-1] == "2.21"


def test_core_op_round_robin_trim_equals_tf_text_on_random_segments():
    import tensorflow_text

    rng = np.random.default_rng(0)
    for _ in range(150):
        rows = int(rng.integers(1, 5))
        segments = [tf.ragged.constant([list(rng.integers(0, 9, rng.integers(0, 12)))
                                        for _ in range(rows)], tf.int32, row_splits_dtype=tf.int64,
                                       inner_shape=())
                    for _ in range(int(rng.integers(1, 4)))]
        budget = int(rng.integers(0, 20))
        want = tensorflow_text.RoundRobinTrimmer(budget).trim(segments)
        got = trimming.CoreOpRoundRobinTrimmer(budget).trim(segments)
        assert [w.to_list() for w in want] == [g.to_list() for g in got]
    assert trimming.round_robin_lengths(tf.constant([[3, 4, 2]]), 5).numpy().tolist() == [[2, 2, 1]]


class Trimmer(tf.Module):
    """A pair packer's trim, the op TF Serving 2.12-2.19 lack unless traced with core ops."""

    def __init__(self):
        super().__init__()
        self.serve = tf.function(self._trim, input_signature=[
            tf.TensorSpec([None], tf.string, name="a"), tf.TensorSpec([None], tf.string, name="b")])

    def _trim(self, a, b):
        import tensorflow_text

        first, second = tensorflow_text.RoundRobinTrimmer(3).trim(
            [tf.strings.split(a), tf.strings.split(b)])
        return {"a": first.to_tensor(""), "b": second.to_tensor("")}

    def serving_signatures(self):
        return {"serving_default": self.serve}


def test_exports_trace_the_trim_with_core_ops_and_older_targets_refuse_the_tf_text_op(tmp_path):
    inputs = {"a": tf.constant(["one two three", "four"]), "b": tf.constant(["x y", "z w v u"])}
    outputs = {"a": np.array([[b"one", b"two"], [b"four", b""]]),
               "b": np.array([[b"x", b""], [b"z", b"w"]])}
    path = export.export_saved_model(Trimmer(), str(tmp_path / "m"),
                                     {"serving_default": (inputs, outputs)}, serving_version="2.12")
    assert "TFText>RoundRobinTrim" not in op_audit.saved_model_ops(path)
    tf.saved_model.save(Trimmer(), str(tmp_path / "raw"))  # traced outside the export: TF Text op
    assert op_audit.audit_saved_model(str(tmp_path / "raw")) == "2.20"
    with pytest.raises(op_audit.ExportError, match=r"op TFText>RoundRobinTrim \(node '.*"
                       r"RoundRobinTrimmer/trim/.*' of function .*\) is not in TF Serving 2.15 "
                       r"\(TensorFlow 2.15.1 \+ TF Text 2.12.1\); choose a newer --serving_version"):
        op_audit.audit_saved_model(str(tmp_path / "raw"), serving_version="2.15.1")


def test_an_attribute_the_target_does_not_know_is_refused_only_where_it_matters():
    """Dropped by the older TensorFlow: harmless when it names things or holds the default."""
    from tensorflow.core.framework import attr_value_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    old, new = op_audit.op_list("2.12")["ops"], op_audit.op_list("2.21")["ops"]
    op, attr = next((op, attr) for op in sorted(old) for attr, (default, _) in new[op].items()
                    if attr not in old[op] and attr != "debug_name" and default == "b: false")
    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.meta_info_def.stripped_op_list.op.add(name=op).attr.add(
        name=attr, type="bool", default_value=attr_value_pb2.AttrValue(b=False))
    node = meta_graph.graph_def.node.add(name="layer/op", op=op)
    node.attr["debug_name"].s = b"layer/weights"
    node.attr[attr].b = False
    assert op_audit.problems(meta_graph, "2.12") == []
    node.attr[attr].b = True
    found, = op_audit.problems(meta_graph, "2.12")
    assert found.startswith(f"attribute {attr}=b: true of op {op} (node 'layer/op') is unknown "
                            "to TF Serving 2.12")
    assert op_audit.problems(meta_graph, "2.21") == []


def test_an_unknown_serving_version_is_one_sentence():
    from tfimitate.errors import UserError
    from tfimitate.serving import releases

    with pytest.raises(UserError, match=r"--serving_version=1.15 is not a TF Serving release "
                                        r"tfimitate knows; use one of 2.12, .*2.21"):
        releases.release("1.15")
    assert releases.release("2.19.1") == "2.19" and releases.stand_in("2.17") == "2.12"


def test_an_export_losing_the_race_for_its_version_keeps_the_winner_or_takes_the_next(tmp_path):
    """Two exports into one folder pick the same version; the second to finish renames onto
    a taken version: the same checkpoint is 'already exported', another one takes the next."""
    export_lib, export_dir = export, str(tmp_path / "export")

    def version(name, source):
        directory = os.path.join(export_dir, name)
        os.makedirs(directory)
        export_lib.record_source(directory, source)
        return directory

    winner = version("1", {"model_dir": "/runs/a", "step": 4})
    same = version(".tmp-same", {"model_dir": "/runs/a", "step": 4})
    assert export_lib._rename_to_free_version(same, export_dir, 1, False) == winner
    other = version(".tmp-other", {"model_dir": "/runs/a", "step": 6})
    assert export_lib._rename_to_free_version(other, export_dir, 1, False) == \
        os.path.join(export_dir, "2")
    late = version(".tmp-late", {"model_dir": "/runs/b", "step": 1})
    with pytest.raises(UserError, match="--export_version=2: another export wrote .*2 meanwhile"):
        export_lib._rename_to_free_version(late, export_dir, 2, True)
