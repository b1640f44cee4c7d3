"""TF Serving's PredictionService and ModelService calls on request protos, shared by the dev
server's gRPC and REST front ends (as TF Serving's REST handler calls its gRPC impls).

Every call resolves its ModelSpec (name, and a version or a version label) through
`Models`, answers with the official response proto or raises RequestError with TF
Serving's status and message, and is counted in `Metrics` under its entry point.

Example:
    api = Api(models, Metrics())
    response = api.call("Predict", request, "GRPC")   # a PredictResponse
"""

import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from tfimitate.serving import inference
from tfimitate.serving.status import RequestError

# Calls counted per request (TF Serving's API label); the status calls are not.
_COUNTED = ("Predict", "Classify", "Regress", "MultiInference")


class Api:
    """The calls, by their gRPC method names, on the models of `models`."""

    def __init__(self, models, metrics):
        self.models = models
        self.metrics = metrics

    def call(self, method, request, entrypoint):
        """Runs `method` ("Predict", "Classify", ...) on `request`; counts it."""
        start = time.monotonic()
        status, examples = "OK", 0
        try:
            response = getattr(self, "_" + method)(request)
            if method == "Classify":
                examples = len(response.result.classifications)
            elif method == "Regress":
                examples = len(response.result.regressions)
            return response
        except RequestError as error:
            status = error.code.name
            raise
        finally:
            if method in _COUNTED:
                if method != "MultiInference":
                    name = request.model_spec.name
                else:
                    name = request.tasks[0].model_spec.name if request.tasks else ""
                self.metrics.record(name, method, entrypoint, status,
                                    time.monotonic() - start, examples)

    def servable(self, request):
        """The loaded version a request's ModelSpec names."""
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        return self.models.get(spec.name, spec.version.value if spec.HasField("version") else None,
                               spec.version_label or None)

    @staticmethod
    def _fill_spec(response_spec, request_spec, servable, signature_name=None):
        response_spec.name = request_spec.name
        response_spec.version.value = servable.version
        if signature_name is not None:
            response_spec.signature_name = signature_name

    def _Predict(self, request):
        servable = self.servable(request)
        signature_name = request.model_spec.signature_name or "serving_default"
        outputs = servable.run(signature_name, request.inputs, request.output_filter)
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, request.model_spec, servable, signature_name)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def _Classify(self, request):
        return self._infer(request, classification_pb2.ClassificationResponse(), inference.classify)

    def _Regress(self, request):
        return self._infer(request, regression_pb2.RegressionResponse(), inference.regress)

    def _infer(self, request, response, run):
        """`response` (Classification or Regression) holding `run(servable, request)`'s result."""
        servable = self.servable(request)
        response.result.CopyFrom(run(servable, request))
        self._fill_spec(response.model_spec, request.model_spec, servable,
                        request.model_spec.signature_name or "serving_default")
        return response

    def _MultiInference(self, request):
        if not request.tasks:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Empty tasks list.")
        return inference.multi_inference(self.servable(request.tasks[0]), request)

    def _GetModelMetadata(self, request):
        servable = self.servable(request)
        if not request.metadata_field:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field {field} is not supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, request.model_spec, servable)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signatures)
        return response

    def _GetModelStatus(self, request):
        spec = request.model_spec
        versions = self.models.versions(spec.name)
        states = dict(versions.states)
        version = spec.version.value if spec.HasField("version") else None
        if spec.version_label:
            if spec.version_label not in versions.labels:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Unrecognized servable version label: {spec.version_label}")
            version = versions.labels[spec.version_label]
        if version is not None:
            if version not in states:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {spec.name}")
            states = {version: states[version]}
        if not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, (state, message) in sorted(states.items()):
            status = response.model_version_status.add(version=number, state=state)
            status.status.SetInParent()  # TF Serving always sets it (error_code OK)
            if message:
                status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                status.status.error_message = message
        return response
