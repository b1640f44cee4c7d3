"""Dev server robustness without training: one server per port, and load retries like
TF Serving's --max_num_load_retries, on a tiny hand-made SavedModel."""

import socket
import time

import pytest
import tensorflow as tf

from tfimitate.errors import UserError
from tfimitate.serving.client import ServingClient
from tfimitate.serving.devserver import DevServer
from tfimitate.serving.servables import ModelVersions, State


class _Lengths(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"length": tf.strings.length(text)}


def _save_model(directory):
    module = _Lengths()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})


def test_a_second_server_on_the_same_port_is_refused(tmp_path):
    first = DevServer("m", str(tmp_path), port=0)
    try:
        with pytest.raises(UserError, match=rf"--port={first.port}: cannot listen there"):
            DevServer("m", str(tmp_path), port=first.port)
    finally:
        first.stop()


def test_a_port_held_by_another_program_is_refused(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(UserError, match="cannot listen there"):
            DevServer("m", str(tmp_path), port=other.getsockname()[1])


def test_a_rest_port_in_use_is_refused_and_an_unstarted_server_stops(tmp_path):
    first = DevServer("m", str(tmp_path), port=0, rest_api_port=0)
    try:
        with pytest.raises(UserError, match=rf"--rest_api_port={first.rest_port}: cannot listen"):
            DevServer("m", str(tmp_path), port=0, rest_api_port=first.rest_port)
    finally:
        first.stop()  # never started: returns at once


def test_a_version_that_failed_to_load_is_retried_until_it_loads(tmp_path):
    (tmp_path / "1").mkdir()  # seen before its SavedModel is copied in
    versions = ModelVersions("m", str(tmp_path), max_num_load_retries=3, load_retry_interval=3.0)
    assert versions.poll() is None and versions.retrying()
    failed_at = time.monotonic()
    state, message = versions.states[1]
    assert state == State.LOADING and "saved_model.pb" in message
    _save_model(tmp_path / "1")
    assert time.monotonic() - failed_at < 3.0 and versions.poll() is None  # waits its interval
    time.sleep(max(0.0, failed_at + 3.05 - time.monotonic()))
    assert versions.poll() == 1 and not versions.retrying()
    assert versions.states[1] == (State.AVAILABLE, "")
    outputs = versions.get().run("serving_default", {"text": tf.make_tensor_proto(["abc"])})
    assert outputs["length"].tolist() == [3]


def test_a_version_that_keeps_failing_ends_after_the_retries(tmp_path):
    (tmp_path / "1").mkdir()
    versions = ModelVersions("m", str(tmp_path), max_num_load_retries=2, load_retry_interval=0.0)
    attempts = 0
    while versions.retrying() or attempts == 0:
        versions.poll()
        attempts += 1
        assert attempts <= 3
    assert attempts == 3 and versions.states[1][0] == State.END  # the first load, 2 retries
    _save_model(tmp_path / "1")
    assert versions.poll() is None  # given up, as TF Serving does, until a new version
    _save_model(tmp_path / "2")
    assert versions.poll() == 2


def test_status_shows_loading_with_the_error_while_retrying(tmp_path):
    (tmp_path / "1").mkdir()
    server = DevServer("m", str(tmp_path), port=0, poll_seconds=0.1, max_num_load_retries=50,
                       load_retry_interval=0.2).start()
    try:
        client = ServingClient(server.target, timeout=10)
        [status] = client.status("m")
        assert status["state"] == "LOADING" and "saved_model.pb" in status["error"]
        _save_model(tmp_path / "1")
        deadline = time.monotonic() + 30
        while client.status("m")[0]["state"] != "AVAILABLE" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.status("m") == [{"model": "m", "version": 1, "state": "AVAILABLE"}]
        assert client.predict("m", {"text": ["hello"]}).outputs["length"].tolist() == [5]
    finally:
        server.stop()


def test_a_version_tf_serving_cannot_run_fails_here_too(tmp_path):
    """A Keras model held plainly by its tf.Module reloads in Python, but TF Serving's C++
    loader leaves the variables its signature reads uninitialised: the dev server, loading
    through the same loader, refuses the version when its warmup request fails."""
    import keras
    import numpy as np

    from tfimitate.serving import warmup

    class Plain(tf.Module):
        def __init__(self):
            super().__init__()
            inputs = keras.Input((2,))
            self.model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
            self.serve = tf.function(lambda x: {"y": self.model(x)},
                                     input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])

    module = Plain()
    path = str(tmp_path / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    assert tf.saved_model.load(path).signatures["serving_default"](x=tf.ones([1, 2]))["y"].shape == (1, 1)
    warmup.write_warmup_requests(path, {"serving_default": {"x": tf.constant(np.ones([2, 2], np.float32))}})
    versions = ModelVersions("m", str(tmp_path), max_num_load_retries=0)
    assert versions.poll() is None
    state, message = versions.states[1]
    assert state == State.END and "Could not find variable dense" in message


def test_a_bad_models_config_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "models.config"
    for text, message in (
            ("model_config_list { config { name: 'm' base_path: ", "not a valid ModelServerConfig"),
            (f"model_config_list {{ config {{ name: 'm' base_path: '{tmp_path}' }} "
             f"config {{ name: 'm' base_path: '{tmp_path}' }} }}", "list model m multiple times")):
        path.write_text(text)
        with pytest.raises(UserError, match=rf"^--model_config_file={path}: .*{message}"):
            DevServer(model_config_file=str(path), port=0)


def test_a_label_on_a_missing_version_stops_start_up_and_a_bad_reload_keeps_serving(tmp_path):
    _save_model(tmp_path / "m" / "1")
    path = tmp_path / "models.config"
    config = "model_config_list {{ config {{ name: 'm' base_path: '{}' {} }} }}"
    path.write_text(config.format(tmp_path / "m", "version_labels { key: 'stable' value: 2 }"))
    server = DevServer(model_config_file=str(path), port=0)
    with pytest.raises(UserError, match="label to version 2 of model m, which is not currently"):
        server.start()
    server.stop()
    path.write_text(config.format(tmp_path / "m", "version_labels { key: 'stable' value: 1 }"))
    server = DevServer(model_config_file=str(path), port=0, config_poll_seconds=0.1).start()
    try:
        client = ServingClient(server.target, timeout=10)
        assert client.predict("m", {"text": ["abc"]}, version_label="stable").version == 1
        path.write_text("model_config_list { config { name: 'm' ")  # half-written by hand
        assert isinstance(server.reload_config_file(), UserError)
        assert client.predict("m", {"text": ["abc"]}, version_label="stable").version == 1
    finally:
        server.stop()


@pytest.mark.parametrize("dims", [[-5], [10 ** 12], [2, -1]])
def test_a_tensor_shape_its_values_cannot_fill_is_invalid_argument(dims):
    """TF Serving refuses to parse such a TensorProto (INVALID_ARGUMENT); it must neither be
    read as a batch of 1 nor be allocated (a MemoryError, UNKNOWN)."""
    import grpc
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    from tfimitate.serving import servables
    from tfimitate.serving.status import RequestError

    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["text"].dtype = tf.string.as_datatype_enum
    signature.inputs["text"].tensor_shape.dim.add(size=-1)
    proto = tf.make_tensor_proto(["a gripping film"])
    del proto.tensor_shape.dim[:]
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(RequestError, match="tensor parsing error: text") as raised:
        servables._check_inputs(signature, {"text": proto})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert servables._check_inputs(signature, {"text": tf.make_tensor_proto(["a", "b"])})[
        "text"].tolist() == [b"a", b"b"]
