"""TF Serving's Classify, Regress and MultiInference on a loaded version: tf.Examples in.

These APIs take serialized `tf.Example`s (an `Input` proto: `example_list`, or
`example_list_with_context` whose context features every example shares) and run a
signature that returns `classes` and/or `scores` `[batch, classes]` (Classify) or
`outputs` `[batch]` or `[batch, 1]` (Regress), fed with the serialized examples as its
one string input. Our exports also give those signatures the method names
`tensorflow/serving/classify` / `regress` (see `method_for`), which TF Serving checks
only with --enable_signature_method_name_check (off by default, and not checked here).
The checks and messages follow tensorflow_serving/servables/tensorflow/classifier.cc and
regressor.cc.

Example:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify"
    example = request.input.example_list.examples.add()
    example.features.feature["text"].bytes_list.value.append(b"a fine film")
    result = classify(servable, request)   # a ClassificationResult
"""

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from tfimitate.serving.status import RequestError

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_KIND = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


def serialized_examples(input_proto):
    """The serialized tf.Examples of an Input proto, context features merged into each
    (an example's own feature wins over the context's of the same name)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = list(input_proto.example_list.examples)
    elif kind == "example_list_with_context":
        listed = input_proto.example_list_with_context
        examples = []
        for own in listed.examples:
            merged = tf.train.Example()
            merged.CopyFrom(listed.context)
            for name, feature in own.features.feature.items():
                merged.features.feature[name].CopyFrom(feature)
            examples.append(merged)
    else:
        examples = []
    if not examples:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    return [example.SerializeToString() for example in examples]


def _run(servable, signature_name, input_proto, method, wanted_outputs):
    """Runs the `method` signature on the Input's examples; returns (outputs, batch size)."""
    name = signature_name or "serving_default"
    signature = servable.signature_defs.get(name)
    if signature is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"No signature was found with the name: {name}")
    if not set(wanted_outputs) & set(signature.outputs):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Expected {_KIND[method]} signature outputs to contain "
                           f"{' or '.join(wanted_outputs)}; {name} has "
                           f"{', '.join(sorted(signature.outputs))}.")
    if len(signature.inputs) != 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Expected one input Tensor.")
    serialized = serialized_examples(input_proto)
    [input_name] = signature.inputs
    outputs = servable.run(name, {input_name: tf.make_tensor_proto(
        np.array(serialized, dtype=object))}, [o for o in wanted_outputs if o in signature.outputs])
    for output, value in outputs.items():
        if value.ndim < 1 or value.shape[0] != len(serialized):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Input batch size did not match output batch size: "
                               f"{len(serialized)} vs. {value.shape[0] if value.ndim else 0}")
    return outputs, len(serialized)


def classify(servable, request):
    """A ClassificationRequest's ClassificationResult: per example, (label, score) per class."""
    outputs, count = _run(servable, request.model_spec.signature_name, request.input,
                          CLASSIFY_METHOD, ("classes", "scores"))
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Expected classification signature outputs to contain at least one "
                           "of classes or scores.")
    for value, what in ((classes, "classes"), (scores, "scores")):
        if value is not None and value.ndim != 2:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected Tensor shape: [batch_size num_classes] but got "
                               f"{list(value.shape)} for {what}")
    result = classification_pb2.ClassificationResult()
    for i in range(count):
        classification = result.classifications.add()
        for j in range((classes if classes is not None else scores).shape[1]):
            item = classification.classes.add()
            if classes is not None:
                item.label = classes[i, j].decode("utf-8", "replace")
            if scores is not None:
                item.score = float(scores[i, j])
    return result


def regress(servable, request):
    """A RegressionRequest's RegressionResult: one value per example."""
    outputs, count = _run(servable, request.model_spec.signature_name, request.input,
                          REGRESS_METHOD, ("outputs",))
    values = outputs.get("outputs")
    if values is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "No output Tensor with the key outputs in the regression signature.")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Expected output Tensor shape to be either [batch_size] or "
                           f"[batch_size, 1] but got {list(outputs['outputs'].shape)}")
    result = regression_pb2.RegressionResult()
    for i in range(count):
        result.regressions.add(value=float(values[i]))
    return result


def multi_inference(servable, request):
    """A MultiInferenceRequest's MultiInferenceResponse: every task (a classify or regress
    signature of the same model) on the same examples."""
    if not request.tasks:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Empty tasks list.")
    names, signatures = {task.model_spec.name for task in request.tasks}, set()
    if len(names) != 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "All ModelSpecs in a MultiInferenceRequest must access the same model "
                           "name.")
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        signature_name = task.model_spec.signature_name or "serving_default"
        if signature_name in signatures:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Duplicate evaluation of signature: {signature_name}")
        signatures.add(signature_name)
        result = response.results.add()
        result.model_spec.name = task.model_spec.name
        result.model_spec.version.value = servable.version
        result.model_spec.signature_name = signature_name
        if task.method_name == CLASSIFY_METHOD:
            one = classification_pb2.ClassificationRequest(model_spec=task.model_spec,
                                                           input=request.input)
            result.classification_result.CopyFrom(classify(servable, one))
        elif task.method_name == REGRESS_METHOD:
            one = regression_pb2.RegressionRequest(model_spec=task.model_spec, input=request.input)
            result.regression_result.CopyFrom(regress(servable, one))
        else:
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
    return response


def method_for(signature_name):
    """The method name an export gives a signature, by its name: `classify` and `<x>_classify`
    (a multi-task subtask's) are classify signatures, `regress` and `<x>_regress` regress
    ones; anything else is a Predict signature (None: left as TensorFlow saves it)."""
    for method, suffix in ((CLASSIFY_METHOD, "classify"), (REGRESS_METHOD, "regress")):
        if signature_name == suffix or signature_name.endswith("_" + suffix):
            return method
    return None


def to_examples(columns):
    """Serialized tf.Examples, one per row of `columns` (feature name -> list of str, bytes,
    int or float; a list value is a feature of several values).

    Example:
        to_examples({"text": ["a fine film", "dull"]})  # [b"\\n...", b"\\n..."]
    """
    count = len(next(iter(columns.values())))
    rows = []
    for i in range(count):
        example = tf.train.Example()
        for name, values in columns.items():
            set_feature(example.features.feature[name], values[i], name)
        rows.append(example.SerializeToString())
    return rows


def set_feature(feature, value, name):
    """Fills a tf.train.Feature from a Python value (str/bytes, int, float, or a list of one
    kind); ValueError for anything else."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, (str, bytes)) for v in values):
        feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    else:
        raise ValueError(f"feature '{name}' must hold strings, integers or numbers of one kind, "
                         f"not {value!r}")
