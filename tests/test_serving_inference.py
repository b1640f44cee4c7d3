"""tf.Example inputs without a trained model: what export names a classify/regress signature,
what it refuses, and how Input protos become the serialized examples a signature gets."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from tfimitate.serving import export, inference
from tfimitate.serving.op_audit import ExportError


def test_method_names_follow_the_signature_names():
    assert inference.method_for("classify") == inference.CLASSIFY_METHOD
    assert inference.method_for("sentiment_classify") == inference.CLASSIFY_METHOD
    assert inference.method_for("regress") == inference.REGRESS_METHOD
    assert inference.method_for("serving_default") is None
    assert inference.method_for("classifyer") is None


def test_a_classify_signature_tf_serving_would_refuse_is_not_exported(tmp_path):
    class Wrong(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def classify(self, text):
            return {"scores": tf.ones([tf.shape(text)[0], 2])}

    module = Wrong()
    tf.saved_model.save(module, str(tmp_path), signatures={"classify": module.classify})
    with pytest.raises(ExportError, match="does not take one string input 'inputs'"):
        export.set_method_names(str(tmp_path))


def test_context_features_fill_in_and_examples_win():
    input_proto = input_pb2.Input()
    listed = input_proto.example_list_with_context
    inference.set_feature(listed.context.features.feature["lang"], "en", "lang")
    inference.set_feature(listed.context.features.feature["x"], 1.5, "x")
    for serialized in inference.to_examples({"x": [2.0, 4.0]}):
        listed.examples.add().ParseFromString(serialized)
    listed.examples.add()  # no features of its own
    parsed = tf.io.parse_example(inference.serialized_examples(input_proto), {
        "lang": tf.io.FixedLenFeature([], tf.string), "x": tf.io.FixedLenFeature([], tf.float32)})
    assert parsed["lang"].numpy().tolist() == [b"en"] * 3
    assert parsed["x"].numpy().tolist() == [2.0, 4.0, 1.5]
    with pytest.raises(Exception, match="Input is empty"):
        inference.serialized_examples(input_pb2.Input())


def test_feature_values_of_mixed_kinds_are_refused():
    example = tf.train.Example()
    with pytest.raises(ValueError, match="feature 'x' must hold"):
        inference.set_feature(example.features.feature["x"], ["a", 1], "x")
    inference.set_feature(example.features.feature["y"], [1, 2.5], "y")  # numbers: floats
    assert np.allclose(example.features.feature["y"].float_list.value, [1.0, 2.5])
