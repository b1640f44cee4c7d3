"""Serving end to end on a tiny random backbone: export with warmup, the dev server over
gRPC, the client, hot version swaps, malformed requests and models.config."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

import helpers
from tfimitate import workflow
from tfimitate.errors import UserError
from tfimitate.serving import client as client_lib
from tfimitate.serving import config as config_lib
from tfimitate.serving import warmup
from tfimitate.serving.client import ServingClient, ServingError, records
from tfimitate.serving.devserver import DevServer

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
    expected = workflow.predict(trained.model_dir, input_path, str(tmp_path / "out.jsonl"))
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
                       timeout=30.0, metadata=False, status=False, input=None), **values)
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
