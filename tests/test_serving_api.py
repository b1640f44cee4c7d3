"""TF Serving's whole API surface on one exported classifier: the classify signature and
its tf.Example inputs, Classify/Regress/MultiInference, REST in TF Serving's JSON formats,
version labels, models.config reload, monitoring and the rollout commands."""

import base64
import json
import os
import shutil
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, inference_pb2, model_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

import helpers
from tfimitate import workflow
from tfimitate.serving import export, inference, metrics, warmup
from tfimitate.serving.client import ServingClient, ServingError
from tfimitate.serving.devserver import DevServer
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


# ---- The dev server's APIs, on a models.config of two models -----------------------

class _HalfPlusTwo(tf.Module):
    """TF Serving's documentation model: y = x / 2 + 2, over Predict and Regress."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": x * 0.5 + 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
        return {"outputs": x * 0.5 + 2}


def _models_config(sentiment_base, half_base, stable=1, canary=2):
    return f"""model_config_list {{
  config {{
    name: "{MODEL}" base_path: "{sentiment_base}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: {stable} }}
    version_labels {{ key: "canary" value: {canary} }}
  }}
  config {{ name: "half_plus_two" base_path: "{half_base}" }}
}}
"""


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """A dev server (gRPC + REST + Prometheus) of sentiment versions 1 and 2 (labels stable and
    canary) and half_plus_two, following its models.config every 0.2 s."""
    root = tmp_path_factory.mktemp("served")
    sentiment = root / MODEL
    shutil.copytree(os.path.join(trained.export_dir, "1"), sentiment / "1")
    shutil.copytree(os.path.join(trained.export_dir, "1"), sentiment / "2")
    module = _HalfPlusTwo()
    tf.saved_model.save(module, str(root / "half" / "1"),
                        signatures={"serving_default": module.predict, "regress": module.regress})
    export.set_method_names(str(root / "half" / "1"))
    config_path = root / "models.config"
    config_path.write_text(_models_config(sentiment, root / "half"))
    monitoring = text_format.Parse('prometheus_config { enable: true path: "/metrics" }',
                                   metrics.monitoring_config())
    server = DevServer(model_config_file=str(config_path), port=0, rest_api_port=0,
                       poll_seconds=0.2, config_poll_seconds=0.2, monitoring=monitoring).start()
    server.config_path = str(config_path)
    server.roots = (sentiment, root / "half")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stubs(served):
    channel = grpc.insecure_channel(served.target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _rest(server, path, body=None, raw=None):
    """(HTTP status, decoded JSON or text) of a REST call to `server`."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data,
                                     method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            code, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        code, text = error.code, error.read().decode()
    return code, (json.loads(text) if text.startswith("{") else text)


def test_rest_predict_row_and_columnar_answer_what_grpc_predict_does(served):
    client = ServingClient(served.target, timeout=30)
    expected = client.predict(MODEL, {"text": TEXTS}).outputs
    code, rows = _rest(served, f"/v1/models/{MODEL}:predict", {"instances": TEXTS})
    assert code == 200 and len(rows["predictions"]) == len(TEXTS)
    for i, row in enumerate(rows["predictions"]):
        assert row["label"] == expected["label"][i].decode()
        assert row["class_id"] == int(expected["class_id"][i])
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], atol=1e-6)
    code, columns = _rest(served, f"/v1/models/{MODEL}/versions/2:predict",
                          {"signature_name": "serving_default", "inputs": {"text": TEXTS}})
    assert code == 200 and set(columns["outputs"]) == {"label", "class_id", "probabilities"}
    assert columns["outputs"]["label"] == [row["label"] for row in rows["predictions"]]
    b64 = [{"b64": base64.b64encode(text.encode()).decode()} for text in TEXTS]
    assert _rest(served, f"/v1/models/{MODEL}:predict", {"instances": b64})[1] == rows
    code, half = _rest(served, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (code, half) == (200, {"predictions": [2.5, 3.0, 4.5]})


def test_classify_over_grpc_and_rest_returns_predicts_probabilities(served, stubs):
    client = ServingClient(served.target, timeout=30)
    probabilities = client.predict(MODEL, {"text": TEXTS}).outputs["probabilities"]
    labels = open(os.path.join(served.roots[0], "1", "assets", "labels.txt")).read().split()
    request = _classification_request(TEXTS)
    request.model_spec.name = MODEL
    response = stubs.Classify(request, timeout=30)
    assert response.model_spec.version.value == 2 and response.model_spec.signature_name == "classify"
    code, answer = _rest(served, f"/v1/models/{MODEL}/labels/stable:classify",
                         {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]})
    assert code == 200
    for i, (grpc_one, rest_one) in enumerate(zip(response.result.classifications, answer["result"])):
        assert [c.label for c in grpc_one.classes] == [label for label, _ in rest_one] == labels
        np.testing.assert_allclose([c.score for c in grpc_one.classes], probabilities[i], atol=1e-6)
        np.testing.assert_allclose([score for _, score in rest_one], probabilities[i], atol=1e-6)
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add(model_spec=model_pb2.ModelSpec(name=MODEL, signature_name="classify"),
                    method_name=inference.CLASSIFY_METHOD)
    multi.input.CopyFrom(request.input)
    [result] = stubs.MultiInference(multi, timeout=30).results
    assert result.classification_result == response.result


def test_regress_over_grpc_and_rest_with_context(served, stubs):
    code, answer = _rest(served, "/v1/models/half_plus_two:regress",
                         {"signature_name": "regress", "examples": [{"x": 1.0}, {"x": 2.0}, {}],
                          "context": {"x": 9.0}})
    assert (code, answer) == (200, {"result": [2.5, 3.0, 6.5]})  # the context fills in x=9
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "regress"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(4.0)
    assert [r.value for r in stubs.Regress(request, timeout=30).result.regressions] == [4.0]
    code, answer = _rest(served, f"/v1/models/{MODEL}:regress",
                         {"signature_name": "classify", "examples": [{"text": "x"}]})
    assert code == 400 and "outputs" in answer["error"]


def test_status_and_metadata_over_rest_as_tf_serving_prints_them(served):
    code, status = _rest(served, f"/v1/models/{MODEL}")
    assert code == 200 and status == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("1", "2")]}
    assert _rest(served, f"/v1/models/{MODEL}/labels/stable")[1]["model_version_status"][0][
        "version"] == "1"
    code, metadata = _rest(served, f"/v1/models/{MODEL}/labels/canary/metadata")
    assert code == 200 and metadata["model_spec"]["version"] == "2"
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    assert set(signatures["serving_default"]["inputs"]) == {"text"}


def test_version_labels_over_grpc(served):
    client = ServingClient(served.target, timeout=30)
    assert client.predict(MODEL, {"text": ["x"]}, version_label="stable").version == 1
    assert client.predict(MODEL, {"text": ["x"]}, version_label="canary").version == 2
    assert client.predict(MODEL, {"text": ["x"]}).version == 2
    with pytest.raises(ServingError) as raised:
        client.predict(MODEL, {"text": ["x"]}, version_label="nope")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND and "label: nope" in str(raised.value)


BAD_REQUESTS = {  # what TF Serving answers: HTTP status and a part of the error message
    "wrong input name": (f"/v1/models/{MODEL}:predict", {"instances": [{"txt": "a"}]}, 400,
                         "txt"),
    "wrong dtype": (f"/v1/models/{MODEL}:predict", {"instances": [3]}, 400, "string"),
    "malformed JSON": (f"/v1/models/{MODEL}:predict", b'{"instances": [', 400, "JSON Parse error"),
    "no instances": (f"/v1/models/{MODEL}:predict", {"signature_name": "x"}, 400,
                     "Missing 'inputs' or 'instances' key"),
    "ragged": ("/v1/models/half_plus_two:predict", {"inputs": [[1.0], [1.0, 2.0]]}, 400,
               "different lengths"),
    "unknown label": (f"/v1/models/{MODEL}/labels/gold:predict", {"instances": ["a"]}, 404,
                      "Unrecognized servable version label: gold"),
    "unknown version": (f"/v1/models/{MODEL}/versions/7:predict", {"instances": ["a"]}, 404,
                        f"Specific({MODEL}, 7)"),
    "unknown model": ("/v1/models/nope:predict", {"instances": ["a"]}, 404, "Latest(nope)"),
    "unknown signature": (f"/v1/models/{MODEL}:predict",
                          {"signature_name": "x", "instances": ["a"]}, 400, '"x" not found'),
    "missing feature": (f"/v1/models/{MODEL}:classify",
                        {"signature_name": "classify", "examples": [{"txt": "a"}]}, 400, "text"),
    "malformed path": ("/v1/models/m/versions/x:predict", {"instances": ["a"]}, 400,
                       "Malformed request"),
}


@pytest.mark.parametrize("kind", sorted(BAD_REQUESTS))
def test_bad_rest_requests_are_answered_as_tf_serving_answers_them(kind, served):
    path, body, code, part = BAD_REQUESTS[kind]
    answer = _rest(served, path, raw=body if isinstance(body, bytes) else None,
                   body=None if isinstance(body, bytes) else body)
    assert answer[0] == code and set(answer[1]) == {"error"} and part in answer[1]["error"], answer
    assert _rest(served, f"/v1/models/{MODEL}:predict", {"instances": ["fine"]})[0] == 200


def test_prometheus_endpoint_counts_requests_by_model_status_and_entrypoint(served):
    def counts():
        page = _rest(served, "/metrics")[1]
        found = {}
        for line in page.splitlines():
            if line.startswith(":tensorflow:serving:") and not line.startswith("# "):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
        return found

    ok = f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}}'
    bad = f':tensorflow:serving:request_count{{model_name="{MODEL}",status="INVALID_ARGUMENT"}}'
    latency = (':tensorflow:serving:request_latency_count{model_name="%s",API="Predict",'
               'entrypoint="%%s"}' % MODEL)
    before = counts()
    _rest(served, f"/v1/models/{MODEL}:predict", {"instances": ["a", "b"]})
    _rest(served, f"/v1/models/{MODEL}:predict", {"instances": ["a"]})
    _rest(served, f"/v1/models/{MODEL}:predict", {"instances": [3]})  # refused before Predict,
    client = ServingClient(served.target, timeout=30)                 # as in TF Serving
    client.predict(MODEL, {"text": ["a"]})
    with pytest.raises(ServingError):
        client.predict(MODEL, {"txt": ["a"]})
    after = counts()
    assert after[ok] - before.get(ok, 0) == 3
    assert after[bad] - before.get(bad, 0) == 1
    assert after[latency % "REST"] - before.get(latency % "REST", 0) == 2
    assert after[latency % "GRPC"] - before.get(latency % "GRPC", 0) == 2
    assert f':tensorflow:serving:request_latency_bucket{{model_name="{MODEL}",API="Predict",' \
           'entrypoint="GRPC",le="+Inf"}' in "\n".join(after)
