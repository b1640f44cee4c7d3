"""TF Serving's whole API surface on one exported classifier: the classify signature and
its tf.Example inputs, Classify/Regress/MultiInference, REST in TF Serving's JSON formats,
version labels, models.config reload, monitoring and the rollout commands."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2

import helpers
from tfimitate import workflow
from tfimitate.serving import inference, warmup
from tfimitate.serving.servables import Servable

MODEL = "sentiment"
TEXTS = ["the film was good fun", "awful boring plot", "worst"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 6 steps, exported to <root>/saved_models/sentiment/1."""
    root = tmp_path_factory.mktemp("serving_api")
    cfg = helpers.experiment(
        root, backbone=helpers.tiny_bert_preset(root),
        train_data=helpers.write_table(root, "train.csv", helpers.sentiment_rows(64)),
        eval_data=helpers.write_table(root, "eval.csv", helpers.sentiment_rows(40, seed=1)),
        export_dir=str(root / "saved_models" / MODEL))
    workflow.train(cfg)
    return cfg


@pytest.fixture(scope="module")
def servable(trained):
    return Servable(1, os.path.join(trained.export_dir, "1"))


def _classification_request(texts, signature_name="classify"):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = signature_name
    for serialized in inference.to_examples({"text": texts}):
        request.input.example_list.examples.add().ParseFromString(serialized)
    return request


def test_export_has_a_classify_signature_tf_serving_accepts(trained):
    path = os.path.join(trained.export_dir, "1")
    saved_model = saved_model_pb2.SavedModel.FromString(
        open(os.path.join(path, "saved_model.pb"), "rb").read())
    signature = saved_model.meta_graphs[0].signature_def["classify"]
    assert signature.method_name == "tensorflow/serving/classify"
    assert list(signature.inputs) == ["inputs"] and set(signature.outputs) == {"classes", "scores"}
    assert saved_model.meta_graphs[0].signature_def["serving_default"].method_name == \
        "tensorflow/serving/predict"
    kinds = [log.WhichOneof("log_type") for log in warmup.read_warmup_logs(path)]
    assert kinds.count("classify_log") == 6 and kinds.count("predict_log") == 6


def test_classify_returns_predicts_labels_and_probabilities(trained, servable):
    predicted = servable.run("serving_default", {"text": tf.make_tensor_proto(TEXTS)})
    labels = open(os.path.join(servable.path, "assets", "labels.txt")).read().split()
    result = inference.classify(servable, _classification_request(TEXTS))
    assert len(result.classifications) == len(TEXTS)
    for i, classification in enumerate(result.classifications):
        assert [c.label for c in classification.classes] == labels
        assert labels[int(np.argmax([c.score for c in classification.classes]))] == \
            predicted["label"][i].decode()
        np.testing.assert_allclose([c.score for c in classification.classes],
                                   predicted["probabilities"][i], atol=1e-6)
