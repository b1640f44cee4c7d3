"""Warmup requests TF Serving replays before a new version takes traffic.

TF Serving reads `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`PredictionLog` protos, at most 1,000) from each version directory and runs them
once while loading, so the first real request does not pay for lazy
initialisation. We build them from real evaluation examples, one request per
common batch size, for every signature (Classify/Regress requests for those
signatures, see inference.method_for).

Example:
    write_warmup_requests(version_dir, {"serving_default": {"text": tf.constant(["a fine film", "dull"])}})
    requests = read_warmup_requests(version_dir)
"""

import os

import numpy as np

import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, predict_pb2, prediction_log_pb2,
                                     regression_pb2)

from tfimitate.serving import inference

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving refuses to load a version with more.
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def warmup_requests(inputs, model_name="", signature_name="serving_default",
                    batch_sizes=BATCH_SIZES):
    """PredictRequests over real examples, one per batch size the examples can fill.

    Args:
        inputs: dict input name -> tensor whose first dimension is the example.
        model_name: written into each request's model_spec (TF Serving ignores it).
        signature_name: the signature the requests call.
        batch_sizes: request sizes to cover; sizes above the example count are skipped.
    """
    count = int(next(iter(inputs.values())).shape[0])
    sizes = [size for size in batch_sizes if size <= count]
    requests, start = [], 0
    for size in sizes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        rows = [(start + i) % count for i in range(size)]
        for name, values in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(tf.gather(values, rows).numpy()))
        requests.append(request)
        start = (start + size) % count
    return requests


def write_warmup_requests(version_dir, signature_inputs, model_name=""):
    """Writes `<version_dir>/assets.extra/tf_serving_warmup_requests` with requests for
    every signature of `signature_inputs` (name -> input tensors); returns its path."""
    path = os.path.join(version_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in signature_inputs.items():
            for request in warmup_requests(inputs, model_name, signature_name):
                writer.write(_log(request, inference.method_for(signature_name)).SerializeToString())
    return path


def _log(request, method):
    """The PredictionLog of a PredictRequest, as a Classify/Regress request for those methods
    (its one input holds serialized tf.Examples)."""
    if method is None:
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
    kind = (classification_pb2.ClassificationRequest if method == inference.CLASSIFY_METHOD
            else regression_pb2.RegressionRequest)
    converted = kind(model_spec=request.model_spec)
    [tensor] = request.inputs.values()
    for serialized in tf.make_ndarray(tensor):
        converted.input.example_list.examples.add().ParseFromString(serialized)
    if method == inference.CLASSIFY_METHOD:
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=converted))
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=converted))


def read_warmup_logs(version_dir):
    """The PredictionLogs of a version's warmup file ([] when it has none)."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(record)
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def read_warmup_requests(version_dir):
    """The PredictRequests of a version's warmup file ([] when it has none)."""
    return [log.predict_log.request for log in read_warmup_logs(version_dir)
            if log.HasField("predict_log")]


def read_warmup_inputs(version_dir):
    """(signature name, {input name: NumPy array}) of each Predict, Classify and Regress
    warmup request of a version; the examples of Classify/Regress ones as the serialized
    tf.Examples their signature's one input `inputs` takes (our exports' name for it)."""
    calls = []
    for log in read_warmup_logs(version_dir):
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            calls.append((request.model_spec.signature_name or "serving_default",
                          {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}))
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            calls.append((request.model_spec.signature_name or "serving_default", {
                "inputs": np.array(inference.serialized_examples(request.input), dtype=object)}))
    return calls
