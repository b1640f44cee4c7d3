"""A development server that speaks TF Serving's gRPC protocol. Production uses TensorFlow Serving.

This is for laptops, tests and CI, where the `tensorflow_model_server` binary is
not available: it serves one model's SavedModel versions with the same
PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus)
protos, version layout, polling and status codes, so code written against it
works unchanged against the `tensorflow/serving` image (see serving/README.md).
It has no batching, no REST API and no monitoring; do not deploy it.

    python -m tfimitate.serving.devserver --model_name=sst2 \\
        --model_base_path=saved_models/sst2 --port=8500

Example (in Python):
    server = DevServer("sst2", "saved_models/sst2", port=0)   # 0: any free port
    server.start(); print(server.port); server.stop()
"""

import time
from concurrent import futures

import grpc
import tensorflow as tf
from absl import flags, logging
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfimitate.errors import UserError, run_cli
from tfimitate.serving.servables import ModelVersions, RequestError, numeric_versions

MAX_MESSAGE_BYTES = 64 << 20


def _abort(context, error):
    context.abort(error.code, str(error))


class _Handler:
    """Resolves a request's ModelSpec to a loaded version."""

    def __init__(self, versions):
        self.versions = versions

    def servable(self, request):
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        if spec.name != self.versions.name:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({spec.name})")
        if spec.version_label:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Unrecognized servable version label: {spec.version_label}")
        return self.versions.get(spec.version.value if spec.HasField("version") else None)

    def fill_spec(self, response, servable, signature_name=None):
        response.model_spec.name = self.versions.name
        response.model_spec.version.value = servable.version
        if signature_name is not None:
            response.model_spec.signature_name = signature_name


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Handler):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def Predict(self, request, context):
        try:
            servable = self.servable(request)
            signature_name = request.model_spec.signature_name or "serving_default"
            outputs = servable.run(signature_name, request.inputs, request.output_filter)
        except RequestError as error:
            _abort(context, error)
        response = predict_pb2.PredictResponse()
        self.fill_spec(response, servable, signature_name)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        try:
            servable = self.servable(request)
            if not request.metadata_field:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Metadata field {field} is not supported")
        except RequestError as error:
            _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self.fill_spec(response, servable)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Handler):
    """GetModelStatus; HandleReloadConfigRequest answers UNIMPLEMENTED."""

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        states = dict(self.versions.states)
        if spec.name != self.versions.name or spec.version_label:
            _abort(context, RequestError(grpc.StatusCode.NOT_FOUND,
                                         f"Could not find any versions of model {spec.name}"))
        if spec.HasField("version"):
            if spec.version.value not in states:
                _abort(context, RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {spec.version.value} of model {spec.name}"))
            states = {spec.version.value: states[spec.version.value]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, (state, message) in sorted(states.items()):
            status = response.model_version_status.add(version=version, state=state)
            if message:
                status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                status.status.error_message = message
        return response


class DevServer:
    """One model's versions behind a gRPC server on `host:port` (loopback by default).

    The port is this server's alone: gRPC's default SO_REUSEPORT would let a second server
    bind the same port and take half of the traffic, so it is turned off.
    """

    def __init__(self, model_name, model_base_path, port=8500, host="127.0.0.1",
                 poll_seconds=1.0, threads=8, max_num_load_retries=5, load_retry_interval=60.0):
        self.versions = ModelVersions(model_name, model_base_path, max_num_load_retries,
                                      load_retry_interval)
        self.poll_seconds = poll_seconds
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.versions), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.versions), self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise UserError(f"--host={host} --port={port}: cannot listen there (another server "
                            "uses the port, or the address is not local); stop it or choose "
                            "another --port or --host.")
        self.target = f"{host}:{self.port}"

    def start(self):
        """Loads the newest version, starts answering and polling for new versions."""
        self.versions.poll()
        self.server.start()
        self.versions.follow(self.poll_seconds)
        return self

    def stop(self, grace=None):
        self.versions.stop()
        self.server.stop(grace)


def _define_flags():
    """The server's flags, defined only when it runs as a program (no clash with train's)."""
    return dict(
        model_name=flags.DEFINE_string("model_name", None, "Name clients put in ModelSpec.name."),
        model_base_path=flags.DEFINE_string(
            "model_base_path", None,
            "Folder of integer version directories, e.g. saved_models/sst2 (what "
            "`--export_dir` wrote); the newest is served."),
        port=flags.DEFINE_integer("port", 8500, "gRPC port (TF Serving's default is 8500).",
                                  lower_bound=0, upper_bound=65535),
        host=flags.DEFINE_string(
            "host", "127.0.0.1",
            "Address to listen on. Loopback by default: this server has no authentication "
            "or TLS; use TF Serving for anything reachable by others."),
        poll_seconds=flags.DEFINE_float(
            "poll_seconds", 1.0, "How often to look for new versions (TF Serving's "
            "--file_system_poll_wait_seconds).", lower_bound=0.05),
        max_num_load_retries=flags.DEFINE_integer(
            "max_num_load_retries", 5, "How many times a version that failed to load is "
            "tried again (as TF Serving's flag of that name).", lower_bound=0),
        load_retry_interval_micros=flags.DEFINE_integer(
            "load_retry_interval_micros", 60_000_000, "Microseconds between those tries (as "
            "TF Serving's flag of that name).", lower_bound=0),
    )


def main(argv, holders):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; this program takes only flags.")
    base_path = holders["model_base_path"].value
    if not numeric_versions(base_path):
        raise UserError(f"--model_base_path={base_path} holds no integer version directory; "
                        "export a model there first (python -m tfimitate.export).")
    value = {name: holder.value for name, holder in holders.items()}
    server = DevServer(value["model_name"], base_path, value["port"], value["host"],
                       value["poll_seconds"], max_num_load_retries=value["max_num_load_retries"],
                       load_retry_interval=value["load_retry_interval_micros"] / 1e6).start()
    try:
        while server.versions.retrying():  # like TF Serving, wait for the first load's retries
            time.sleep(value["poll_seconds"])
        if server.versions.poll() is None:
            server.stop()
            raise UserError(f"--model_base_path={base_path}: the newest version failed to load "
                            f"after {value['max_num_load_retries']} retries (see the log above); "
                            "fix or remove it.")
        print(f"Serving {server.versions.name} on {server.target} (development server; "
              "production uses TensorFlow Serving). Ctrl-C stops.", flush=True)
        server.server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1)
    logging.info("Stopped.")


if __name__ == "__main__":
    _HOLDERS = _define_flags()
    flags.mark_flags_as_required(["model_name", "model_base_path"])
    run_cli(lambda argv: main(argv, _HOLDERS))
