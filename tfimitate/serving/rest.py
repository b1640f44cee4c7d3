"""TF Serving's REST API (the --rest_api_port) in its documented JSON formats, on `api.Api`.

    POST /v1/models/NAME[/versions/N | /labels/L]:predict   {"instances": [...]} (row) or
                                                            {"inputs": ...} (columnar)
    POST /v1/models/NAME[/versions/N | /labels/L]:classify  {"examples": [{feature: value}],
    POST /v1/models/NAME[/versions/N | /labels/L]:regress    "context": {...}} (tf.Examples)
    GET  /v1/models/NAME[/versions/N | /labels/L]           status (GetModelStatusResponse)
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata  signatures (GetModelMetadataResponse)
    GET  <prometheus_config.path>                           metrics, when monitoring is on

Binary strings travel as {"b64": "..."}, both ways (outputs whose name ends in `_bytes`).
Row-format answers are {"predictions": [...]} (one value per instance for one output,
else one object per instance), columnar ones {"outputs": ...}; Classify answers
{"result": [[[label, score], ...], ...]}, Regress {"result": [value, ...]}; errors
{"error": "..."} with TF Serving's HTTP code for the gRPC status (status.http_status).

Example:
    server = RestServer(api, port=0, metrics_path="/monitoring/prometheus/metrics")
    server.start(); print(server.port); server.stop()
"""

import base64
import http.server
import json
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from tfimitate.serving import inference
from tfimitate.serving.status import RequestError, http_status

_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
                   r"(?::(classify|regress|predict)|/(metadata))?", re.IGNORECASE)


def _invalid(message):
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _spec(spec, name, version, label):
    spec.name = name
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label


def _json_body(body):
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _invalid(f"JSON Parse error: {error}") from None
    if not isinstance(value, dict):
        raise _invalid("JSON Value is not an object: the request body must be a JSON object.")
    return value


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _shape(value, where):
    """The shape of a nested JSON list; refuses ragged ones."""
    if not isinstance(value, list):
        return ()
    shapes = {_shape(item, where) for item in value}
    if len(shapes) > 1:
        raise _invalid(f"{where}: the lists have different lengths; a tensor needs the same "
                       "number of values in every row.")
    return (len(value),) + (shapes.pop() if shapes else ())


def _leaves(value):
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _leaf(value, dtype, where):
    """One JSON value as an element of a tensor of `dtype`."""
    if dtype == tf.string:
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise _invalid(f"{where}: Unable to base64 decode {value['b64']!r}") from None
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if dtype.is_floating or isinstance(value, int):
            return value
    kind = "Object" if isinstance(value, dict) else type(value).__name__
    raise _invalid(f"{where}: JSON Value: {json.dumps(value)} Type: {kind} is not of expected "
                   f"type: {dtype.name}")


def _tensor(value, info, where):
    """A JSON value (nested lists of scalars) as the TensorProto of a signature input."""
    dtype = tf.dtypes.as_dtype(info.dtype)
    shape = _shape(value, where)
    leaves = [_leaf(item, dtype, where) for item in _leaves(value)]
    array = np.array(leaves, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    return tf.make_tensor_proto(array.reshape(shape))


def _named_inputs(value, inputs, where):
    """{input name: JSON value}: an object of named inputs, or the value of the only input."""
    if isinstance(value, dict) and not _is_b64(value):
        return value
    if len(inputs) != 1:
        raise _invalid(f"{where}: the signature takes {len(inputs)} inputs "
                       f"({', '.join(sorted(inputs))}); give an object of named inputs.")
    return {next(iter(inputs)): value}


def predict_request(body, name, version, label, signature_inputs):
    """A PredictRequest from a REST body, and "row" or "columnar" (how to answer).

    `signature_inputs(signature_name)` returns the signature's inputs (name -> TensorInfo).
    """
    request = predict_pb2.PredictRequest()
    _spec(request.model_spec, name, version, label)
    value = _json_body(body)
    request.model_spec.signature_name = str(value.get("signature_name") or "")
    if ("instances" in value) == ("inputs" in value):
        raise _invalid("Missing 'inputs' or 'instances' key" if "inputs" not in value else
                       "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                       "keys exist")
    inputs = signature_inputs(request.model_spec.signature_name or "serving_default")
    if "instances" in value:
        instances = value["instances"]
        if not isinstance(instances, list) or not instances:
            raise _invalid("Expecting 'instances' to be a non-empty list/array")
        rows = [_named_inputs(row, inputs, f"item {i} of 'instances'")
                for i, row in enumerate(instances)]
        names = set(rows[0])
        for i, row in enumerate(rows):
            if set(row) != names:
                raise _invalid(f"Failed to process element: {i} of 'instances' list: it names "
                               f"inputs {sorted(row)}, the first one {sorted(names)}.")
        columns = {key: [row[key] for row in rows] for key in names}
        form = "row"
    else:
        columns = _named_inputs(value["inputs"], inputs, "'inputs'")
        form = "columnar"
    for key, column in columns.items():
        if key not in inputs:
            raise _invalid(f"input tensor alias not found in signature: {key}. Inputs expected "
                           f"to be in the set {{{','.join(sorted(inputs))}}}.")
        request.inputs[key].CopyFrom(_tensor(column, inputs[key], f"input '{key}'"))
    return request, form


def _json_value(array, name):
    """A NumPy output as JSON-ready lists (strings as text, `*_bytes` outputs as b64)."""
    if array.dtype == object or array.dtype.kind in "SU":
        to_string = ((lambda v: {"b64": base64.b64encode(v).decode()}) if name.endswith("_bytes")
                     else (lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v))
        return np.vectorize(to_string, otypes=[object])(array).tolist()
    if array.dtype in (np.float32, np.float16):
        return _map(array.tolist(), lambda v: float(str(array.dtype.type(v))))
    return array.tolist()


def _float32(value):
    """A float32 (a proto `float`) in its shortest form: 0.88, not 0.8799999952316284."""
    return float(str(np.float32(value)))


def _map(value, function):
    """`function` applied to every number of nested lists."""
    return [_map(v, function) for v in value] if isinstance(value, list) else function(value)


def predict_json(response, form):
    """The REST answer of a PredictResponse, in the request's format."""
    outputs = {name: tf.make_ndarray(proto) for name, proto in sorted(response.outputs.items())}
    if form == "columnar":
        values = {name: _json_value(array, name) for name, array in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise _invalid(f"Tensors have inconsistent batch sizes {sizes}; use the columnar format "
                       "('inputs') for this signature.")
    values = {name: _json_value(array, name) for name, array in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    count = next(iter(sizes.values()))
    return {"predictions": [{name: value[i] for name, value in values.items()}
                            for i in range(count)]}


def _feature_map(value, where):
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a JSON object of features")
    example = tf.train.Example()
    for key, feature in value.items():
        items = feature if isinstance(feature, list) else [feature]
        try:
            items = [base64.b64decode(v["b64"], validate=True) if _is_b64(v) else v
                     for v in items]
            inference.set_feature(example.features.feature[key], items, key)
        except (ValueError, TypeError) as error:
            raise _invalid(f"{where}: {error}") from None
    return example


def example_request(kind, body, name, version, label):
    """A Classification/RegressionRequest from a REST body {"examples": [...], "context": ...}."""
    request = kind()
    _spec(request.model_spec, name, version, label)
    value = _json_body(body)
    request.model_spec.signature_name = str(value.get("signature_name") or "")
    examples = value.get("examples")
    if not isinstance(examples, list) or not examples:
        raise _invalid("'examples' must be a non-empty list of JSON objects (one per tf.Example)")
    parsed = [_feature_map(example, f"item {i} of 'examples'") for i, example in enumerate(examples)]
    if "context" in value:
        target = request.input.example_list_with_context
        target.context.CopyFrom(_feature_map(value["context"], "'context'"))
    else:
        target = request.input.example_list
    target.examples.extend(parsed)
    return request


def _proto_json(message):
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True))


class RestHandler:
    """Answers one REST request: (HTTP status, content type, body text)."""

    def __init__(self, api, metrics_path=None):
        self.api = api
        self.metrics_path = metrics_path

    def handle(self, method, path, body):
        path = path.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, "text/plain", self.api.metrics.page()
        try:
            answer = self._answer(method, path, body)
            return 200, "application/json", json.dumps(answer, indent=1)
        except RequestError as error:
            return (http_status(error.code), "application/json",
                    json.dumps({"error": str(error)}))

    def _answer(self, method, path, body):
        match = _PATH.fullmatch(path)
        if not match or (method == "POST") != bool(match.group(4)) or method not in ("GET", "POST"):
            raise _invalid(f"Malformed request: {method} {path}")
        name, version, label, verb, metadata = match.groups()
        verb = verb and verb.lower()
        if verb == "predict":
            def inputs(signature_name):
                probe = predict_pb2.PredictRequest()
                _spec(probe.model_spec, name, version, label)
                signatures = self.api.servable(probe).signature_defs
                if signature_name not in signatures:
                    raise _invalid(f'Serving signature name: "{signature_name}" not found in '
                                   "signature def")
                return signatures[signature_name].inputs
            request, form = predict_request(body, name, version, label, inputs)
            return predict_json(self.api.call("Predict", request, "REST"), form)
        if verb == "classify":
            request = example_request(classification_pb2.ClassificationRequest, body, name,
                                      version, label)
            result = self.api.call("Classify", request, "REST").result
            return {"result": [[[c.label, _float32(c.score)] for c in one.classes]
                               for one in result.classifications]}
        if verb == "regress":
            request = example_request(regression_pb2.RegressionRequest, body, name, version, label)
            return {"result": [_float32(r.value) for r in self.api.call(
                "Regress", request, "REST").result.regressions]}
        if metadata:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            _spec(request.model_spec, name, version, label)
            return _proto_json(self.api.call("GetModelMetadata", request, "REST"))
        request = get_model_status_pb2.GetModelStatusRequest()
        _spec(request.model_spec, name, version, label)
        return _proto_json(self.api.call("GetModelStatus", request, "REST"))


class RestServer:
    """The REST port: a threading HTTP server around RestHandler (loopback by default)."""

    def __init__(self, api, port, host="127.0.0.1", metrics_path=None):
        handler = RestHandler(api, metrics_path)

        class Request(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                code, content_type, text = handler.handle(self.command, self.path, body)
                data = text.encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

            def log_message(self, format, *args):  # noqa: A002 (the base class's name)
                logging.debug("REST %s", format % args)

        self.httpd = http.server.ThreadingHTTPServer((host, port), Request)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest",
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only if it runs
            self.httpd.shutdown()
        self.httpd.server_close()
