"""TF Serving's REST API as a stub of the gRPC calls, for the client (client.py).

`RestStub` takes the same request protos as the gRPC stubs (Predict, Classify,
GetModelMetadata, GetModelStatus) and answers the same response protos, speaking TF
Serving's documented JSON formats to `http://HOST:PORT` (its --rest_api_port): so
`ServingClient("http://localhost:8501")` works like `ServingClient("localhost:8500")`.
Failures raise `RestError`, shaped like grpc.RpcError (code(), details()).

Example:
    stub = RestStub("http://localhost:8501")
    response = stub.Predict(request, timeout=10)   # a PredictResponse
"""

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2)


class RestError(Exception):
    """A failed REST call, shaped like grpc.RpcError (code(), details()) for `_explain`."""

    def __init__(self, code, details):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


# TF Serving's HTTP codes back to the gRPC status (serving/status.py has the other way).
_HTTP_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
               409: grpc.StatusCode.ABORTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
               501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE,
               504: grpc.StatusCode.DEADLINE_EXCEEDED}


def _json_strings(array):
    """A string tensor as JSON: text where every value is UTF-8, else {"b64": ...} values."""
    try:
        return np.vectorize(lambda v: v.decode("utf-8"), otypes=[object])(array).tolist()
    except UnicodeDecodeError:
        return np.vectorize(lambda v: {"b64": base64.b64encode(v).decode()},
                            otypes=[object])(array).tolist()


class RestStub:
    """TF Serving's REST API behind the gRPC stubs' calls: request protos in, response protos
    out (Predict, Classify, GetModelMetadata, GetModelStatus), in TF Serving's JSON formats."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def _send(self, path, body, timeout):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         method="GET" if data is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read().decode())
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                details = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                details = text.strip() or error.reason
            raise RestError(_HTTP_CODES.get(error.code, grpc.StatusCode.UNKNOWN),
                             f"HTTP {error.code}: {details}") from None
        except (TimeoutError, socket.timeout):
            raise RestError(grpc.StatusCode.DEADLINE_EXCEEDED, "timed out") from None
        except (urllib.error.URLError, OSError) as error:
            raise RestError(grpc.StatusCode.UNAVAILABLE,
                             str(getattr(error, "reason", error))) from None

    @staticmethod
    def _path(spec, verb=""):
        path = f"/v1/models/{urllib.parse.quote(spec.name)}"
        if spec.HasField("version"):
            path += f"/versions/{spec.version.value}"
        elif spec.version_label:
            path += f"/labels/{urllib.parse.quote(spec.version_label)}"
        return path + verb

    def Predict(self, request, timeout):
        inputs = {}
        for name, proto in request.inputs.items():
            array = tf.make_ndarray(proto)
            inputs[name] = _json_strings(array) if array.dtype == object else array.tolist()
        answer = self._send(self._path(request.model_spec, ":predict"), {
            "signature_name": request.model_spec.signature_name, "inputs": inputs}, timeout)
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # TF Serving leaves out the name of a lone output
            metadata = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=request.model_spec, metadata_field=["signature_def"])
            signatures = get_model_metadata_pb2.SignatureDefMap()
            self.GetModelMetadata(metadata, timeout).metadata["signature_def"].Unpack(signatures)
            signature = signatures.signature_def[request.model_spec.signature_name
                                                 or "serving_default"]
            outputs = {next(iter(signature.outputs)): outputs}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for name, value in outputs.items():
            if request.output_filter and name not in request.output_filter:
                continue
            array = np.array(value)
            if array.dtype.kind == "U":
                array = array.astype(object)
            elif array.dtype == object:  # {"b64": ...} values of a *_bytes output
                array = np.vectorize(lambda v: base64.b64decode(v["b64"]), otypes=[object])(array)
            response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
        return response

    def Classify(self, request, timeout):
        examples = [json_format.MessageToDict(e.features)["feature"] if e.features.feature
                    else {} for e in request.input.example_list.examples]
        body = {"signature_name": request.model_spec.signature_name,
                "examples": [{name: _feature_json(feature) for name, feature in e.items()}
                             for e in examples]}
        answer = self._send(self._path(request.model_spec, ":classify"), body, timeout)
        response = classification_pb2.ClassificationResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for one in answer["result"]:
            classification = response.result.classifications.add()
            for label, score in one:
                classification.classes.add(label=label, score=score)
        return response

    def GetModelMetadata(self, request, timeout):
        answer = self._send(self._path(request.model_spec, "/metadata"), None, timeout)
        return json_format.ParseDict(answer, get_model_metadata_pb2.GetModelMetadataResponse())

    def GetModelStatus(self, request, timeout):
        answer = self._send(self._path(request.model_spec), None, timeout)
        return json_format.ParseDict(answer, get_model_status_pb2.GetModelStatusResponse())


def _feature_json(feature):
    """A tf.train.Feature (as MessageToDict gives it) as TF Serving's REST JSON value."""
    if "bytesList" in feature:
        values = [base64.b64decode(v) for v in feature["bytesList"].get("value", [])]
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            return [{"b64": base64.b64encode(v).decode()} for v in values]
    if "int64List" in feature:
        return [int(v) for v in feature["int64List"].get("value", [])]
    return [float(v) for v in feature.get("floatList", {}).get("value", [])]
