"""A development server with TF Serving's APIs and flags. Production uses TensorFlow Serving.

This is for laptops, tests and CI, where the `tensorflow_model_server` binary is not
available. It takes TF Serving's own flags with their meanings, so one command line and
one models.config work on both:

    python -m tfimitate.serving.devserver --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --model_config_file_poll_wait_seconds=5 \\
        --monitoring_config_file=serving/monitoring.config
    python -m tfimitate.serving.devserver --model_name=sst2 --model_base_path=saved_models/sst2

gRPC: PredictionService (Predict, Classify, Regress, MultiInference, GetModelMetadata)
and ModelService (GetModelStatus, HandleReloadConfigRequest), the official protos.
REST on --rest_api_port (serving/rest.py), Prometheus metrics on it when the monitoring
config enables them (serving/metrics.py). Versions load through TensorFlow's C++
SavedModel loader with warmup, by each model's version policy; version labels,
status codes and messages are TF Serving's. No batching, no TLS, Python speed: do not
deploy it (serving/README.md lists where it differs from TF Serving).

Example (in Python):
    server = DevServer("sst2", "saved_models/sst2", port=0, rest_api_port=0)  # 0: free ports
    server.start(); print(server.target, server.rest_port); server.stop()
"""

import threading
import time
from concurrent import futures

import grpc
from absl import flags, logging
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from tfimitate.errors import UserError, run_cli
from tfimitate.serving import config as config_lib
from tfimitate.serving.api import Api
from tfimitate.serving.metrics import Metrics, monitoring_config
from tfimitate.serving.models import Models, single_model_config
from tfimitate.serving.rest import RestServer
from tfimitate.serving.servables import numeric_versions
from tfimitate.serving.status import RequestError

MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's when the path is empty


def _servicer(base, methods, api):
    """A gRPC servicer class whose `methods` call `api` (errors as their status)."""
    def make(method):
        def handler(self, request, context):
            try:
                return api.call(method, request, "GRPC")
            except RequestError as error:
                context.abort(error.code, str(error))
        return handler
    return type(base.__name__, (base,), {method: make(method) for method in methods})()


class DevServer:
    """TF Serving's gRPC (and optionally REST) API on `host` (loopback by default), for one
    model (`model_name`, `model_base_path`) or the models of `model_config_file`.

    `poll_seconds` is --file_system_poll_wait_seconds, `config_poll_seconds`
    --model_config_file_poll_wait_seconds (0: read once), `rest_api_port` None: no REST
    port, `monitoring` a MonitoringConfig. The ports are this server's alone (gRPC's
    default SO_REUSEPORT would let a second server take half of the traffic).
    """

    def __init__(self, model_name=None, model_base_path=None, port=8500, host="127.0.0.1",
                 poll_seconds=1.0, threads=8, max_num_load_retries=5, load_retry_interval=60.0,
                 rest_api_port=None, model_config_file=None, config_poll_seconds=0.0,
                 monitoring=None):
        self.model_config_file = model_config_file
        self.config = (config_lib.read_models_config(model_config_file) if model_config_file
                       else single_model_config(model_name, model_base_path))
        self.poll_seconds = poll_seconds
        self.config_poll_seconds = config_poll_seconds
        self.models = Models(max_num_load_retries, load_retry_interval)
        self.metrics = Metrics()
        self.api = Api(self.models, self.metrics)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_servicer(
            prediction_service_pb2_grpc.PredictionServiceServicer,
            ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata"), self.api),
            self.server)
        model_service = _servicer(model_service_pb2_grpc.ModelServiceServicer,
                                  ("GetModelStatus",), self.api)
        model_service.HandleReloadConfigRequest = self._reload_request
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(model_service, self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise UserError(f"--host={host} --port={port}: cannot listen there (another server "
                            "uses the port, or the address is not local); stop it or choose "
                            "another --port or --host.")
        self.target = f"{host}:{self.port}"
        self.rest = None
        if rest_api_port is not None:
            prometheus = (monitoring or monitoring_config()).prometheus_config
            metrics_path = (prometheus.path or DEFAULT_METRICS_PATH) if prometheus.enable else None
            try:
                self.rest = RestServer(self.api, rest_api_port, host, metrics_path)
            except OSError as error:
                self.server.stop(None)
                raise UserError(f"--host={host} --rest_api_port={rest_api_port}: cannot listen "
                                f"there ({error.strerror}); choose another --rest_api_port.") \
                    from None
        self.rest_port = self.rest.port if self.rest else None
        self._stop = threading.Event()

    @property
    def versions(self):
        """The ModelVersions of the only model (single-model servers)."""
        [name] = self.models.names()
        return self.models.versions(name)

    def start(self):
        """Loads the configured models, starts answering and polling."""
        try:
            error = self.models.configure(self.config)
        except RequestError as refused:
            error = refused
        if error is not None:  # TF Serving does not start either
            where = f"--model_config_file={self.model_config_file}: " if self.model_config_file \
                else ""
            raise UserError(f"{where}{error}; fix the config (labels may name only versions "
                            "that load).")
        self.server.start()
        if self.rest:
            self.rest.start()
        self._every(self.poll_seconds, self.models.poll, "poll-versions")
        if self.model_config_file and self.config_poll_seconds > 0:
            self._every(self.config_poll_seconds, self.reload_config_file, "poll-config")
        return self

    def _every(self, seconds, function, name):
        def loop():
            while not self._stop.wait(seconds):
                function()
        threading.Thread(target=loop, name=name, daemon=True).start()

    def reload_config_file(self):
        """Re-reads --model_config_file and applies it if it changed; a file TF Serving would
        refuse is logged and the served state kept. Returns the error, or None."""
        try:
            config = config_lib.read_models_config(self.model_config_file)
        except UserError as error:
            logging.error("Not reloading: %s", error)
            return error
        if config == self.config:
            return None
        self.config = config
        logging.info("Reloading %s.", self.model_config_file)
        return self.models.configure(config)

    def _reload_request(self, request, context):
        """ModelService.HandleReloadConfigRequest: applies the request's config."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            error = self.models.configure(request.config)
        except RequestError as refused:
            error = refused
        if error is None:
            self.config = request.config
        else:
            response.status.error_code = error.code.value[0]
            response.status.error_message = str(error)
        return response

    def stop(self, grace=None):
        self._stop.set()
        if self.rest:
            self.rest.stop()
        self.server.stop(grace)


def _define_flags():
    """TF Serving's flags (and --host), defined only when the server runs as a program."""
    return dict(
        port=flags.DEFINE_integer("port", 8500, "gRPC port (TF Serving's default is 8500).",
                                  lower_bound=0, upper_bound=65535),
        rest_api_port=flags.DEFINE_integer(
            "rest_api_port", 0, "REST port (TF Serving uses 8501 in its docs); 0: no REST API.",
            lower_bound=0, upper_bound=65535),
        model_name=flags.DEFINE_string("model_name", None, "Name clients put in ModelSpec.name "
                                       "(with --model_base_path; or use --model_config_file)."),
        model_base_path=flags.DEFINE_string(
            "model_base_path", None,
            "Folder of integer version directories, e.g. saved_models/sst2 (what "
            "`--export_dir` wrote); the newest is served."),
        model_config_file=flags.DEFINE_string(
            "model_config_file", None, "A models.config (ModelServerConfig text proto): several "
            "models, version policies and version_labels. Replaces --model_name/--model_base_path."),
        model_config_file_poll_wait_seconds=flags.DEFINE_float(
            "model_config_file_poll_wait_seconds", 0, "How often to re-read --model_config_file "
            "and apply its changes; 0: read it once.", lower_bound=0),
        monitoring_config_file=flags.DEFINE_string(
            "monitoring_config_file", None, "A MonitoringConfig text proto; with "
            "prometheus_config { enable: true } the REST port serves Prometheus metrics."),
        file_system_poll_wait_seconds=flags.DEFINE_float(
            "file_system_poll_wait_seconds", 1.0, "How often to look for new versions.",
            lower_bound=0.05),
        host=flags.DEFINE_string(
            "host", "127.0.0.1",
            "Address to listen on (not a TF Serving flag; it listens on all). Loopback by "
            "default: this server has no authentication or TLS."),
        max_num_load_retries=flags.DEFINE_integer(
            "max_num_load_retries", 5, "How many times a version that failed to load is "
            "tried again (as TF Serving's flag of that name).", lower_bound=0),
        load_retry_interval_micros=flags.DEFINE_integer(
            "load_retry_interval_micros", 60_000_000, "Microseconds between those tries (as "
            "TF Serving's flag of that name).", lower_bound=0),
        # TF Serving's flags that serving/docker-compose.yml passes and this server accepts
        # without acting on them, so that the same command line runs here.
        enable_batching=flags.DEFINE_bool(
            "enable_batching", False, "Accepted and ignored: this server does not batch."),
        batching_parameters_file=flags.DEFINE_string(
            "batching_parameters_file", None, "Accepted and ignored: this server does not batch."),
        enable_model_warmup=flags.DEFINE_bool(
            "enable_model_warmup", True, "Accepted and ignored: warmup requests are always "
            "replayed here."),
    )


def main(argv, holders):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; this program takes only flags.")
    value = {name: holder.value for name, holder in holders.items()}
    if value["enable_batching"] or value["batching_parameters_file"]:
        logging.warning("--enable_batching/--batching_parameters_file: this development server "
                        "does not batch requests; TF Serving does.")
    if bool(value["model_config_file"]) == bool(value["model_name"] or value["model_base_path"]):
        raise UserError("give either --model_config_file, or --model_name with "
                        "--model_base_path (as TF Serving takes them).")
    if not value["model_config_file"]:
        if not (value["model_name"] and value["model_base_path"]):
            raise UserError("--model_name and --model_base_path go together; give both.")
        if not numeric_versions(value["model_base_path"]):
            raise UserError(f"--model_base_path={value['model_base_path']} holds no integer "
                            "version directory; export a model there first "
                            "(python -m tfimitate.export).")
    monitoring = None
    if value["monitoring_config_file"]:
        monitoring = config_lib.read_text_proto(
            value["monitoring_config_file"], monitoring_config(),
            "--monitoring_config_file")
        if monitoring.prometheus_config.enable and not value["rest_api_port"]:
            raise UserError("--monitoring_config_file enables Prometheus metrics, which TF "
                            "Serving serves on the REST port; give --rest_api_port too.")
    server = DevServer(
        value["model_name"], value["model_base_path"], value["port"], value["host"],
        value["file_system_poll_wait_seconds"], max_num_load_retries=value["max_num_load_retries"],
        load_retry_interval=value["load_retry_interval_micros"] / 1e6,
        rest_api_port=value["rest_api_port"] or None,
        model_config_file=value["model_config_file"],
        config_poll_seconds=value["model_config_file_poll_wait_seconds"],
        monitoring=monitoring).start()
    try:
        while server.models.retrying():  # like TF Serving, wait for the first load's retries
            time.sleep(value["file_system_poll_wait_seconds"])
            server.models.poll()
        missing = server.models.unavailable()
        if missing:
            server.stop()
            raise UserError(f"model(s) {', '.join(missing)}: no version loaded (see the log "
                            "above); fix or remove the newest version, or the base_path.")
        rest = f", REST on port {server.rest_port}" if server.rest else ""
        print(f"Serving {', '.join(server.models.names())} on {server.target}{rest} "
              "(development server; production uses TensorFlow Serving). Ctrl-C stops.",
              flush=True)
        server.server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1)
    logging.info("Stopped.")


if __name__ == "__main__":
    _HOLDERS = _define_flags()
    run_cli(lambda argv: main(argv, _HOLDERS))
