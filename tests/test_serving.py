"""Serving end to end on a tiny random backbone: export with warmup, the dev server over
gRPC, the client, hot version swaps, malformed requests and models.config; then TF Serving's
whole API surface on the same export: the classify signature and its tf.Example inputs,
Classify/Regress/MultiInference, REST in TF Serving's JSON formats, version labels,
models.config reload, monitoring and the rollout commands."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, inference_pb2, model_management_pb2,
                                     model_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

import helpers
from tfimitate import workflow
from tfimitate.errors import UserError
from tfimitate.serving import client as client_lib
from tfimitate.serving import config as config_lib
from tfimitate.serving import (compat, export, inference, metrics, rollout, session_loader,
                               warmup)
from tfimitate.serving.client import ServingClient, ServingError, records
from tfimitate.serving.devserver import DevServer
from tfimitate.serving.servables import Servable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "sentiment"
TEXTS = ["the film was good fun", "awful boring plot", "a great story , love it", "worst",
         "the actor is not very good but the plot is fun"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 6 steps and exported to <root>/saved_models/sentiment/1."""
    root = tmp_path_factory.mktemp("serving")
    cfg = helpers.experiment(
        root, backbone=helpers.tiny_bert_preset(root),
        train_data=helpers.write_table(root, "train.csv", helpers.sentiment_rows(64)),
        eval_data=helpers.write_table(root, "eval.csv", helpers.sentiment_rows(40, seed=1)),
        export_dir=str(root / "saved_models" / MODEL))
    workflow.train(cfg)
    return cfg


@pytest.fixture(scope="module")
def server(trained):
    server = DevServer(MODEL, trained.export_dir, port=0, poll_seconds=0.2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    client = ServingClient(server.target, timeout=30)
    yield client
    client.close()


def test_warmup_file_holds_real_eval_examples(trained):
    requests = warmup.read_warmup_requests(os.path.join(trained.export_dir, "1"))
    assert 1 <= len(requests) <= warmup.MAX_RECORDS
    eval_texts = {text for text, _ in helpers.sentiment_rows(40, seed=1)}
    sizes = []
    for request in requests:
        assert request.model_spec.signature_name == "serving_default"
        texts = [t.decode() for t in tf.make_ndarray(request.inputs["text"])]
        assert texts and set(texts) <= eval_texts
        sizes.append(len(texts))
    assert sizes == [1, 2, 4, 8, 16, 32]


def test_devserver_and_client_match_workflow_predict(trained, client, tmp_path):
    input_path = helpers.write_lines(tmp_path, "in.txt", TEXTS)
    workflow.predict(trained.model_dir, input_path, str(tmp_path / "out.jsonl"))
    expected = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    rows = []
    for prediction in client.predict_in_batches(MODEL, {"text": TEXTS}, batch_size=2):
        assert prediction.version == 1
        rows += records(TEXTS[len(rows):len(rows) + 2], prediction.outputs)
    assert [row["text"] for row in rows] == TEXTS
    for row, want in zip(rows, expected):
        assert row["label"] == want["label"]
        np.testing.assert_allclose(row["probabilities"], list(want["probabilities"].values()),
                                   atol=1e-5, rtol=0)


def test_metadata_and_status(client):
    metadata = client.metadata(MODEL)
    assert metadata["version"] == 1
    serving = metadata["signature_def"]["serving_default"]
    assert set(serving["inputs"]) == {"text"}
    assert set(serving["outputs"]) == {"label", "class_id", "probabilities"}
    assert serving["inputs"]["text"]["dtype"] == "DT_STRING"
    assert client.status(MODEL) == [{"model": MODEL, "version": 1, "state": "AVAILABLE"}]


def _tensor(values, **kwargs):
    return tf.make_tensor_proto(values, **kwargs)


def _request(name=MODEL, inputs=None, **spec):
    request = predict_pb2.PredictRequest()
    if name is not None:
        request.model_spec.name = name
        for key, value in spec.items():
            if key == "version":
                request.model_spec.version.value = value
            else:
                setattr(request.model_spec, key, value)
    for key, value in (inputs if inputs is not None else {"text": _tensor(["fun"])}).items():
        request.inputs[key].CopyFrom(value)
    return request


def _more_values_than_shape():
    proto = _tensor(["a", "b", "c"])
    proto.tensor_shape.dim[0].size = 2  # fewer values would repeat the last one, as in TF
    return proto


MALFORMED = {
    "unknown model": (_request(name="nope"), grpc.StatusCode.NOT_FOUND),
    "unknown version": (_request(version=99), grpc.StatusCode.NOT_FOUND),
    "unknown version label": (_request(version_label="stable"), grpc.StatusCode.NOT_FOUND),
    "no model spec": (_request(name=None), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown signature": (_request(signature_name="summarize"),
                          grpc.StatusCode.FAILED_PRECONDITION),
    "no inputs": (_request(inputs={}), grpc.StatusCode.INVALID_ARGUMENT),
    "wrong input name": (_request(inputs={"sentence": _tensor(["fun"])}),
                         grpc.StatusCode.INVALID_ARGUMENT),
    "extra input": (_request(inputs={"text": _tensor(["fun"]), "text_pair": _tensor(["x"])}),
                    grpc.StatusCode.INVALID_ARGUMENT),
    "float input": (_request(inputs={"text": _tensor([1.0, 2.0])}), grpc.StatusCode.INVALID_ARGUMENT),
    "int input": (_request(inputs={"text": _tensor([1, 2], dtype=tf.int64)}),
                  grpc.StatusCode.INVALID_ARGUMENT),
    "scalar input": (_request(inputs={"text": _tensor("fun")}), grpc.StatusCode.INVALID_ARGUMENT),
    "matrix input": (_request(inputs={"text": _tensor([["a", "b"]])}),
                     grpc.StatusCode.INVALID_ARGUMENT),
    "more values than its shape": (_request(inputs={"text": _more_values_than_shape()}),
                                    grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_request_gets_its_status_and_server_keeps_serving(kind, client):
    request, code = MALFORMED[kind]
    with pytest.raises(grpc.RpcError) as raised:
        client.predictions.Predict(request, timeout=30)
    assert raised.value.code() == code, raised.value.details()
    assert client.predict(MODEL, {"text": ["still fine"]}).outputs["label"].shape == (1,)


def test_unknown_output_filter_metadata_field_and_status(client):
    with pytest.raises(ServingError) as raised:
        client.predict(MODEL, {"text": ["x"]}, output_filter=["logits"])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and "logits" in str(raised.value)
    with pytest.raises(ServingError) as raised:
        client.status("nope")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as raised:
        client.metadata(MODEL, version=7)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    only = client.predict(MODEL, {"text": ["x"]}, output_filter=["label"])
    assert set(only.outputs) == {"label"}


def test_unreachable_server_is_one_clear_error():
    client = ServingClient("127.0.0.1:1", timeout=5)
    with pytest.raises(ServingError) as raised:
        client.predict(MODEL, {"text": ["x"]})
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert str(raised.value).startswith("--target=127.0.0.1:1: no server answers there")
    assert "\n" not in str(raised.value)


def test_new_version_is_picked_up_without_failed_requests(trained, server, client):
    versions, failures, stop = [], [], threading.Event()

    def send():
        while not stop.is_set():
            try:
                versions.append(client.predict(MODEL, {"text": TEXTS[:2]}).version)
            except Exception as error:  # every failure counts, whatever its type
                failures.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        workflow.export(trained.model_dir, trained.export_dir, version=2)  # .tmp-2-*, then 2/
        deadline = time.monotonic() + 60
        while versions[-1:] != [2] and not failures and time.monotonic() < deadline:
            stop.wait(0.05)
        count = len(versions)
        while len(versions) < count + 3 and not failures and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        sender.join()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2 and sorted(versions) == versions
    assert {s["version"]: s["state"] for s in client.status(MODEL)} == {1: "END", 2: "AVAILABLE"}
    shutil.rmtree(os.path.join(trained.export_dir, "2"))  # roll back
    assert server.versions.poll() == 1 and client.predict(MODEL, {"text": ["x"]}).version == 1


def test_broken_version_is_reported_and_old_one_kept(tmp_path):
    base = tmp_path / "model"
    (base / "1").mkdir(parents=True)  # a numeric directory without a SavedModel
    (base / ".tmp-2-123").mkdir()
    server = DevServer(MODEL, str(base), port=0, max_num_load_retries=0).start()
    try:
        client = ServingClient(server.target, timeout=10)
        [status] = client.status(MODEL)
        assert status["state"] == "END" and status["error"]
        with pytest.raises(ServingError) as raised:
            client.predict(MODEL, {"text": ["x"]})
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_models_config_parses_and_lists_exports(trained, tmp_path):
    saved_models = os.path.dirname(trained.export_dir)
    text = config_lib.models_config_text(saved_models)
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (MODEL, f"/models/{MODEL}",
                                                                    "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1
    with pytest.raises(Exception, match="holds no exported model"):
        config_lib.models_config_text(str(tmp_path))


def test_shipped_models_config_parses():
    with open(os.path.join(REPO, "serving", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_records_trim_ner_padding_into_words_tags_and_entities():
    outputs = {
        "words": np.array([[b"John", b"lives", b"in", b"Paris"], [b"Hi", b"", b"", b""]]),
        "tags": np.array([[b"B-PER", b"O", b"O", b"B-LOC"], [b"O", b"", b"", b""]]),
        "entity_text": np.array([[b"John", b"Paris"], [b"", b""]]),
        "entity_type": np.array([[b"PER", b"LOC"], [b"", b""]]),
        "entity_start": np.array([[0, 14], [-1, -1]]), "entity_end": np.array([[4, 19], [-1, -1]])}
    first, second = records(["John lives in Paris", "Hi"], outputs)
    assert first["tags"] == ["B-PER", "O", "O", "B-LOC"]
    assert first["entities"] == [{"text": "John", "type": "PER", "start": 0, "end": 4},
                                 {"text": "Paris", "type": "LOC", "start": 14, "end": 19}]
    assert second == {"text": "Hi", "words": ["Hi"], "tags": ["O"], "entities": []}


def test_records_lay_out_any_signature_by_its_item_outputs():
    outputs = {  # a multi-task signature: 2 classes and, by chance, 2 padded words
        "label": np.array([b"pos", b"neg"]), "probabilities": np.array([[0.25, 0.75], [1.0, 0.0]]),
        "words": np.array([[b"fun", b""], [b"so", b"dull"]]),
        "box_label": np.array([[b"cat"], [b""]]), "box_score": np.array([[0.5], [0.0]])}
    first, second = records(["fun", "so dull"], outputs, item_outputs={"words", "box_label",
                                                                        "box_score"})
    assert first == {"text": "fun", "label": "pos", "probabilities": [0.25, 0.75], "words": ["fun"],
                     "boxes": [{"label": "cat", "score": 0.5}]}
    assert second == {"text": "so dull", "label": "neg", "probabilities": [1.0, 0.0],
                      "words": ["so", "dull"], "boxes": []}


def test_client_reads_item_outputs_from_the_signature(client):
    assert client.item_outputs(MODEL) == set()  # label, class_id, probabilities: per example
    with pytest.raises(ServingError, match="--signature_name=nope: the model has no such"):
        client.item_outputs(MODEL, "nope")


def test_client_main_reads_texts_from_a_file_or_stdin(server, capsys, monkeypatch, tmp_path):
    path = helpers.write_lines(tmp_path, "texts.txt", [TEXTS[0], "", TEXTS[1]])
    client_lib.main(["client"], _client_flags(server.target, input=path))
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == TEXTS[:2]
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(
        buffer=types.SimpleNamespace(read=lambda: f"{TEXTS[2]}\r\n".encode())))
    client_lib.main(["client"], _client_flags(server.target, input="-"))
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == TEXTS[2:3]
    with pytest.raises(UserError, match="--input given as well as TEXT arguments"):
        client_lib.main(["client", "x"], _client_flags(server.target, input=path))


def _client_flags(target, **values):
    values = dict(dict(target=target, model_name=MODEL, version=None, version_label=None,
                       signature_name="serving_default", text_pair=None, batch_size=2,
                       timeout=30.0, metadata=False, status=False, input=None, rest=False,
                       examples=None, features=None), **values)
    return {name: types.SimpleNamespace(value=value) for name, value in values.items()}


def test_client_main_prints_one_json_object_per_text(server, capsys):
    client_lib.main(["client", *TEXTS[:3]], _client_flags(server.target))
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == TEXTS[:3]
    assert all(row["label"] in ("0", "1") and len(row["probabilities"]) == 2 for row in rows)
    client_lib.main(["client"], _client_flags(server.target, status=True))
    assert "AVAILABLE" in [status["state"] for status in json.loads(capsys.readouterr().out)]


def test_cli_client_error_is_one_line_and_exit_2(server):
    bad = _run("tfimitate.serving.client", f"--target={server.target}", "--model_name=nope", "x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: the server at {server.target} answered NOT_FOUND: "
        "Servable not found for request: Latest(nope)")


def test_cli_config_writes_models_config(trained, tmp_path):
    out = tmp_path / "models.config"
    done = _run("tfimitate.serving.config", f"--saved_models={os.path.dirname(trained.export_dir)}",
                f"--models_config={out}")
    assert done.returncode == 0, done.stderr
    assert f'name: "{MODEL}"' in out.read_text()
    config_lib.write_models_config(str(out), out.read_text().replace(
        "latest {\n        num_versions: 1\n      }", "specific { versions: 1 }\n")
        .replace('model_platform: "tensorflow"', 'model_platform: "tensorflow"\n'
                 '    version_labels { key: "canary" value: 1 }'))
    again = _run("tfimitate.serving.config", f"--saved_models={os.path.dirname(trained.export_dir)}",
                 f"--models_config={out}", "--label_stable")
    assert again.returncode == 0, again.stderr
    [model] = config_lib.read_models_config(str(out)).model_config_list.config
    assert dict(model.version_labels) == {"canary": 1}  # kept; --label_stable adds no label
    assert list(model.model_version_policy.specific.versions) == [1]
    labelled = config_lib.models_config(os.path.dirname(trained.export_dir), label_stable=True)
    [model] = labelled.model_config_list.config
    assert dict(model.version_labels) == {"stable": 1}
    assert list(model.model_version_policy.specific.versions) == [1]
    missing = _run("tfimitate.serving.config", f"--saved_models={tmp_path / 'none'}",
                   f"--models_config={out}")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --saved_models=")


@pytest.mark.parametrize("name,gpu", [("docker-compose.yml", False), ("docker-compose.gpu.yml", True)])
def test_compose_files_run_tf_serving_on_the_shipped_configs(name, gpu):
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO, "serving", name)) as f:
        service = yaml.safe_load(f)["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving:") and service["image"].endswith("-gpu") == gpu
    command = service["command"]
    for flag in ("--port=8500", "--rest_api_port=8501", "--model_config_file=/config/models.config",
                 "--enable_batching=true", "--enable_model_warmup=true",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config"):
        assert flag in command
    shipped = [volume.split(":")[0] for volume in service["volumes"] if volume.startswith("./")]
    assert len(shipped) == 3
    for source in shipped:
        assert os.path.isfile(os.path.join(REPO, "serving", source)), source
    assert (service.get("environment", {}).get("TF_ENABLE_ONEDNN_OPTS") == "1") != gpu


# ---- TF Serving's whole API surface on the same export ------------------------------

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
    replayed = session_loader.run_all(path, compat.warmup_calls(path))  # what compat replays
    assert "error" not in replayed and replayed["classify#11/scores"].shape == (32, 2)


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
    for change, code, part in (
            (dict(signature_name="serving_default"), grpc.StatusCode.INVALID_ARGUMENT,
             "classes or scores"),  # serving_default answers labels, not classes/scores
            (dict(version_label="gold"), grpc.StatusCode.NOT_FOUND, "label: gold")):
        bad = classification_pb2.ClassificationRequest()
        bad.CopyFrom(request)
        for key, value in change.items():
            setattr(bad.model_spec, key, value)
        with pytest.raises(grpc.RpcError) as raised:
            stubs.Classify(bad, timeout=30)
        assert raised.value.code() == code and part in raised.value.details()


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
    multi = inference_pb2.MultiInferenceRequest(input=request.input)
    multi.tasks.add(model_spec=request.model_spec, method_name=inference.REGRESS_METHOD)
    [result] = stubs.MultiInference(multi, timeout=30).results
    assert [r.value for r in result.regression_result.regressions] == [4.0]
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


def test_reload_config_request_refuses_a_label_on_a_missing_version(served):
    """ModelService.HandleReloadConfigRequest answers TF Serving's status and keeps the labels."""
    sentiment, half = served.roots
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(_models_config(sentiment, half, stable=1, canary=9), request.config)
    with grpc.insecure_channel(served.target) as channel:
        answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=30)
    assert answer.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "version 9 of model sentiment" in answer.status.error_message
    assert served.models.versions(MODEL).labels == {"stable": 1, "canary": 2}


def _wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)
    return time.monotonic()


def test_rollout_label_promote_rollback_under_a_polling_server(served, tmp_path):
    """Labels move within one poll (0.2 s here) for a client following them; a canary worse
    than stable, a missing or unchecked version leave models.config as it was."""
    sentiment, config_path = served.roots[0], served.config_path
    saved_models, original = str(sentiment.parent), open(config_path).read()
    flipped = sentiment / "3"  # version 1 with its labels swapped: every answer wrong
    shutil.copytree(sentiment / "1", flipped)
    (flipped / "assets" / "labels.txt").write_text(
        "\n".join(reversed((sentiment / "1" / "assets" / "labels.txt").read_text().split())) + "\n")
    unchecked = sentiment / "4"
    shutil.copytree(sentiment / "1", unchecked)
    os.remove(unchecked / "assets.extra" / "tfimitate_serving.json")
    code, answer = _rest(served, f"/v1/models/{MODEL}/versions/1:predict", {"instances": TEXTS})
    eval_data = tmp_path / "eval.jsonl"  # labelled with stable's answers: stable scores 1.0
    eval_data.write_text("".join(json.dumps({"text": t, "label": p["label"]}) + "\n"
                                 for t, p in zip(TEXTS, answer["predictions"])))
    client = ServingClient(served.target, timeout=30)
    version = lambda label: client.predict(MODEL, {"text": ["x"]}, version_label=label).version
    flags = dict(models_config=config_path, saved_models=saved_models, model_name=MODEL)
    try:
        rollout.run("label", label="canary", version=3, server=served.target, **flags)
        _wait_for(lambda: version("canary") == 3)
        before = open(config_path).read()
        with pytest.raises(UserError, match=r"scores 0\.0000 accuracy .* below stable's 1\.0000"):
            rollout.run("promote", eval_data=str(eval_data), **flags)
        assert open(config_path).read() == before
        blessing = json.loads((flipped / rollout.BLESSING_FILE).read_text())
        assert (blessing["blessed"], blessing["candidate"], blessing["baseline"]) == (False, 3, 1)
        for bad, message in ((9, "holds no SavedModel"), (4, "was not checked")):
            with pytest.raises(UserError, match=message):
                rollout.run("label", label="canary", version=bad, **flags)
        assert open(config_path).read() == before
        rollout.run("label", label="canary", version=2, **flags)  # unloaded by canary=3: TF
        assert version("canary") == 3                              # Serving must load it first
        rollout.run("label", label="canary", version=2, server=served.target, **flags)
        _wait_for(lambda: version("canary") == 2)
        rollout.run("promote", eval_data=str(eval_data), **flags)
        written = time.monotonic()
        assert _wait_for(lambda: version("stable") == 2) - written < 1.0  # within one poll
        assert version("previous") == 1
        assert {s["version"]: s["state"] for s in client.status(MODEL)}[3] == "END"
        rollout.run("rollback", **flags)
        _wait_for(lambda: version("stable") == 1)
    finally:
        config_lib.write_models_config(config_path, original)
        _wait_for(lambda: served.models.versions(MODEL).labels == {"stable": 1, "canary": 2})


def test_a_label_on_a_version_not_loaded_is_refused_and_the_old_labels_kept(served, caplog):
    sentiment, half = served.roots
    original = open(served.config_path).read()
    client = ServingClient(served.target, timeout=30)
    try:
        config_lib.write_models_config(served.config_path,
                                       _models_config(sentiment, half, stable=2, canary=9))
        message = "version 9 of model sentiment, which is not currently available"
        _wait_for(lambda: message in caplog.text)
        assert client.predict(MODEL, {"text": ["x"]}, version_label="stable").version == 1
        assert client.predict(MODEL, {"text": ["x"]}, version_label="canary").version == 2
    finally:
        config_lib.write_models_config(served.config_path, original)


def test_client_over_rest_answers_as_over_grpc(served, tmp_path, capsys):
    grpc_client = ServingClient(served.target, timeout=30)
    rest_client = ServingClient(f"http://127.0.0.1:{served.rest_port}", timeout=30)
    for spec in ({}, {"version": 1}, {"version_label": "canary"}):
        want, got = (c.predict(MODEL, {"text": TEXTS}, **spec) for c in (grpc_client, rest_client))
        assert got.version is None and want.version is not None
        assert [r["label"] for r in records(TEXTS, got.outputs)] == \
            [r["label"] for r in records(TEXTS, want.outputs)]
        np.testing.assert_allclose(got.outputs["probabilities"], want.outputs["probabilities"],
                                   atol=1e-6)
        assert rest_client.metadata(MODEL, **spec) == grpc_client.metadata(MODEL, **spec)
        assert rest_client.status(MODEL, **spec) == grpc_client.status(MODEL, **spec)
    examples = inference.to_examples({"text": TEXTS})
    for got, want in zip(rest_client.classify(MODEL, examples), grpc_client.classify(MODEL, examples)):
        assert [label for label, _ in got] == [label for label, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    half = rest_client.predict("half_plus_two", {"x": np.array([1.0, 2.0], np.float32)})
    assert half.outputs["y"].tolist() == [2.5, 3.0]  # a lone output, named from the metadata
    with pytest.raises(ServingError) as raised:
        rest_client.predict(MODEL, {"text": ["x"]}, version_label="gold")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND and "label: gold" in str(raised.value)
    path = helpers.write_lines(tmp_path, "rows.jsonl", [json.dumps({"text": t}) for t in TEXTS])
    holders = _client_flags(f"127.0.0.1:{served.rest_port}", rest=True, version_label="stable",
                            examples=path)
    client_lib.main(["client"], holders)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in printed] == TEXTS
    assert [row["label"] for row in printed] == \
        [label for label in grpc_client.predict(MODEL, {"text": TEXTS}, version_label="stable")
         .outputs["label"].astype(str)]


def test_devserver_runs_the_compose_files_command_line(trained, tmp_path):
    """TF Serving's command line from serving/docker-compose.yml, paths and ports aside, with
    the shipped monitoring.config: REST answers and the Prometheus page counts the request."""
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO, "serving", "docker-compose.yml")) as f:
        command = yaml.safe_load(f)["services"]["tfserving"]["command"]
    models = tmp_path / "models.config"
    models.write_text(f'model_config_list {{ config {{ name: "{MODEL}" '
                      f'base_path: "{trained.export_dir}" model_platform: "tensorflow" }} }}')
    ports = {"--port": _free_port(), "--rest_api_port": _free_port()}
    args = []
    for arg in command:
        flag, _, value = arg.partition("=")
        value = str(ports.get(flag, value)).replace("/config/", os.path.join(REPO, "serving", ""))
        args.append(f"{flag}={models if flag == '--model_config_file' else value}")
    process = subprocess.Popen([sys.executable, "-m", "tfimitate.serving.devserver", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Serving {MODEL} on 127.0.0.1:{ports['--port']}, REST on port "
                               f"{ports['--rest_api_port']}"), (line, process.stderr.read())
        url = f"http://127.0.0.1:{ports['--rest_api_port']}"
        body = json.dumps({"instances": ["a fine film"]}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{url}/v1/models/{MODEL}:predict", data=body), timeout=30) as answer:
            assert json.loads(answer.read())["predictions"][0]["label"]
        with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=30) as answer:
            page = answer.read().decode()
        assert f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}} 1' in page
    finally:
        process.terminate()
        process.wait(timeout=30)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

