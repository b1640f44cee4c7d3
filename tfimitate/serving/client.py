"""Client for TensorFlow Serving (and the dev server), over gRPC or REST: Predict, Classify,
GetModelMetadata, GetModelStatus.

Uses the official `tensorflow-serving-api` protos (over REST: TF Serving's documented
JSON formats), so it talks to the `tensorflow/serving` image as it is. Prints one
JSON object per input text, laid out from the signature's output shapes (see
`records`): `label`, `class_id` and `probabilities` for classifiers; `words`, `tags`,
`scores` and `entities` for token classifiers; the same rules for any other signature.
With --examples, each row of a CSV/JSONL file is sent as a tf.Example to Classify.

    python -m tfimitate.serving.client --target=localhost:8500 --model_name=sst2 \\
        "a gripping film" "two hours I will not get back"
    python -m tfimitate.serving.client --target=localhost:8500 --model_name=sst2 --input=reviews.txt
    python -m tfimitate.serving.client --target=localhost:8500 --model_name=sst2 --metadata
    python -m tfimitate.serving.client --target=localhost:8500 --model_name=sst2 --status
    python -m tfimitate.serving.client --model_name=fashion_mnist photo.jpg shoe.png
    python -m tfimitate.serving.client --target=http://localhost:8501 --model_name=sst2 \
        --version_label=canary "a gripping film"                       # REST
    python -m tfimitate.serving.client --model_name=sst2 --examples=reviews.jsonl  # Classify

Example (in Python):
    client = ServingClient("localhost:8500", timeout=5)
    prediction = client.predict("sst2", {"text": ["a gripping film"]})
    print(prediction.version, records(["a gripping film"], prediction.outputs))
"""

import collections
import dataclasses
import json
import os
import sys
import time

import grpc
import numpy as np
import tensorflow as tf
from absl import flags
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfimitate import files
from tfimitate.data import readers
from tfimitate.errors import UserError, run_cli
from tfimitate.serving import inference, rest_client

MAX_MESSAGE_BYTES = 64 << 20
# Arguments with these suffixes are sent as `image_bytes` (image classifiers).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Answers worth another try: the server is restarting, overloaded or slow right now.
RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.RESOURCE_EXHAUSTED)


class ServingError(UserError):
    """The server was unreachable, too slow, or refused a request; `code` is the grpc.StatusCode."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Prediction:
    """Outputs (name -> NumPy array) and the version that computed them."""

    outputs: dict
    version: int


class ServingClient:
    """One connection to a TF Serving endpoint: gRPC (`HOST:PORT`) or its REST API
    (`http://HOST:PORT`, e.g. port 8501). Every call has a deadline of `timeout` seconds
    and is tried `retries` more times after an unavailable, overloaded or slow server,
    waiting `backoff` seconds, then twice as long each time. `flag` names the setting
    that gave `target`, for error messages. Over REST, a Prediction's version is None
    (TF Serving's REST answers do not say which version computed them)."""

    def __init__(self, target, timeout=10.0, retries=0, backoff=0.5, flag="--target"):
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.flag = flag
        self.rest = target.startswith(("http://", "https://"))
        if self.rest:
            self.channel = None
            self.predictions = self.models = rest_client.RestStub(target)
            return
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                             ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        if self.channel is not None:
            self.channel.close()

    def predict(self, model_name, inputs, version=None, version_label=None,
                signature_name="serving_default", output_filter=()):
        """Runs a signature on `inputs` (name -> list or array); returns a Prediction."""
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        _fill_spec(request.model_spec, model_name, version, version_label)
        request.model_spec.signature_name = signature_name
        for name, values in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        response = self._call(self.predictions.Predict, request)
        return Prediction({name: tf.make_ndarray(proto) for name, proto in response.outputs.items()},
                          None if self.rest else response.model_spec.version.value)

    def classify(self, model_name, examples, version=None, version_label=None,
                 signature_name="classify"):
        """TF Serving's Classify on `examples` (serialized tf.Examples); returns, per
        example, a list of (label, score) for every class."""
        request = classification_pb2.ClassificationRequest()
        _fill_spec(request.model_spec, model_name, version, version_label)
        request.model_spec.signature_name = signature_name
        for serialized in examples:
            request.input.example_list.examples.add().ParseFromString(serialized)
        response = self._call(self.predictions.Classify, request)
        return [[(c.label, c.score) for c in one.classes]
                for one in response.result.classifications]

    def predict_in_batches(self, model_name, inputs, batch_size, **kwargs):
        """Yields one Prediction per `batch_size` consecutive examples of `inputs`."""
        count = len(next(iter(inputs.values())))
        for start in range(0, count, batch_size):
            yield self.predict(model_name, {name: list(values[start:start + batch_size])
                                            for name, values in inputs.items()}, **kwargs)

    def metadata(self, model_name, version=None, version_label=None):
        """The model's version and SignatureDefs, as a JSON-ready dict."""
        version, signatures = self._signature_defs(model_name, version, version_label)
        return {"model": model_name, "version": version,
                "signature_def": json_format.MessageToDict(signatures)["signatureDef"]}

    def item_outputs(self, model_name, signature_name="serving_default", version=None,
                     version_label=None):
        """Names of the signature's outputs that list items per example (shape [-1, -1, ...]),
        the `item_outputs` of `records`."""
        _, signatures = self._signature_defs(model_name, version, version_label)
        if signature_name not in signatures.signature_def:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"--signature_name={signature_name}: the model has no such "
                               f"signature (it has {', '.join(sorted(signatures.signature_def))}).")
        outputs = signatures.signature_def[signature_name].outputs
        return {name for name, info in outputs.items()
                if len(info.tensor_shape.dim) >= 2 and info.tensor_shape.dim[1].size == -1}

    def _signature_defs(self, model_name, version, version_label):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _fill_spec(request.model_spec, model_name, version, version_label)
        response = self._call(self.predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return response.model_spec.version.value, signatures

    def status(self, model_name, version=None, version_label=None):
        """One dict per known version: its state and, after a failure, the error."""
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, model_name, version, version_label)
        response = self._call(self.models.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"model": model_name, "version": status.version,
                 "state": states.Name(status.state),
                 **({"error": status.status.error_message} if status.status.error_message else {})}
                for status in response.model_version_status]

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except (grpc.RpcError, rest_client.RestError) as error:
                if error.code() not in RETRIED_CODES or attempt == self.retries:
                    raise _explain(error, self.target, self.timeout, self.flag,
                                   attempt + 1) from None
            time.sleep(self.backoff * 2 ** attempt)


def _fill_spec(spec, model_name, version, version_label):
    spec.name = model_name
    if version is not None:
        spec.version.value = version
    elif version_label:
        spec.version_label = version_label


def _explain(error, target, timeout, flag="--target", attempts=1):
    """One sentence for a failed call, by status code."""
    code = error.code()
    details = (error.details() or "").strip().splitlines()
    details = details[0] if details else code.name
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        message = (f"{flag}={target}: no server answers there{tries} ({details}); start TF "
                   f"Serving (or the dev server) or fix {flag}.")
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        prefix = "--" if flag == "--target" else flag + "_"  # --timeout, or --teacher_timeout
        message = (f"{flag}={target}: no answer within {prefix}timeout={timeout:g} s{tries}; "
                   f"raise {prefix}timeout, lower {prefix}batch_size or check the server's load.")
    else:
        message = f"the server at {target} answered {code.name}: {details}"
    return ServingError(code, message)


def _python(value):
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def records(texts, outputs, item_outputs=None):
    """One JSON-ready dict per text, laid out from the outputs' shapes, for any signature.

    An output with one value (or a fixed-size vector) per example is a field as it is
    (`label`, `class_id`, `probabilities`). An output that lists items per example,
    padded to the longest (`words`, `tags`, `scores`: one entry per word), is cut to
    the example's items: as many as its string outputs of that length have before
    their "" padding. Item outputs that share a name prefix (`entity_text`,
    `entity_type`, `entity_start`, `entity_end`) become one list of objects named by
    the plural of the prefix (`entities`: [{"text", "type", "start", "end"}]).

    `item_outputs` names the item outputs; the client reads them from the signature
    (a second dimension of -1). Without it they are guessed: the 2-D outputs whose
    length a 2-D string output shares.

    Example:
        records(["fun"], {"label": np.array([b"pos"]), "probabilities": np.array([[.1, .9]])})
        # [{"text": "fun", "label": "pos", "probabilities": [0.1, 0.9]}]
    """
    if item_outputs is None:
        string_lengths = {v.shape[1] for v in outputs.values() if v.ndim == 2 and v.dtype.kind in "OSU"}
        item_outputs = [n for n, v in outputs.items() if v.ndim >= 2 and v.shape[1] in string_lengths]
    item_outputs = [n for n in outputs if n in set(item_outputs)]
    by_prefix = collections.defaultdict(list)
    for name in item_outputs:
        by_prefix[name.split("_", 1)[0] if "_" in name else (name,)].append(name)
    groups = collections.defaultdict(list)  # plural of a prefix, or an item length -> names
    for prefix, names in by_prefix.items():
        if isinstance(prefix, str) and len(names) > 1 and len({outputs[n].shape[1] for n in names}) == 1:
            groups[_plural(prefix)] = names
        else:
            for name in names:
                groups[outputs[name].shape[1]].append(name)
    rows = []
    for i, text in enumerate(texts):
        row = {"text": text}
        row.update({n: _python(v[i]) for n, v in outputs.items() if n not in item_outputs})
        for key, names in groups.items():
            count = _item_count([outputs[n][i] for n in names])
            if isinstance(key, str):
                fields = [n.split("_", 1)[1] for n in names]
                row[key] = [dict(zip(fields, item)) for item in
                            zip(*(_python(outputs[n][i][:count]) for n in names))]
            else:
                row.update({n: _python(outputs[n][i][:count]) for n in names})
        rows.append(row)
    return rows


def _item_count(values):
    """How many leading items are real: up to the last non-empty entry of the string values
    (all of them when there are none)."""
    strings = [v for v in values if v.ndim == 1 and v.dtype.kind in "OSU"]
    if not strings:
        return len(values[0])
    filled = [j for j in range(len(strings[0])) if any(len(v[j]) for v in strings)]
    return filled[-1] + 1 if filled else 0


def _plural(word):
    """'entity' -> 'entities', 'box' -> 'boxes', 'span' -> 'spans'."""
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def read_texts(spec):
    """The texts of `--input`: a UTF-8 file (optionally .gz/.bz2) or `-` for stdin, one text
    per line, blank lines skipped."""
    if spec == "-":
        text = readers.decode_utf8(sys.stdin.buffer.read(), "--input=- (stdin)",
                                   "send UTF-8 text.").replace("\r\n", "\n")
    else:
        text = readers.read_text(readers.resolve_path(spec, "--input"), "--input")
    texts = [line for line in text.split("\n") if line.strip()]
    if not texts:
        raise UserError(f"--input={spec}: no text in it; give one text per line.")
    return texts


def image_inputs(arguments):
    """{"image_bytes": [file contents]} when every argument is an image file, else None.

    Example:
        image_inputs(["cat.jpg", "dog.png"])  # {"image_bytes": [b"\\xff\\xd8...", b"\\x89PNG..."]}
    """
    is_image = [os.path.splitext(a)[1].lower() in IMAGE_SUFFIXES for a in arguments]
    if not any(is_image):
        return None
    if not all(is_image):
        raise UserError("some arguments are image files and some are not; classify images or "
                        "texts in one call, not both.")
    contents = []
    for path in arguments:
        if not files.isfile(path):
            raise UserError(f"{path}: no such image file; check the path.")
        contents.append(files.read_bytes(path))
    return {"image_bytes": contents}


def _define_flags():
    """The client's flags, defined only when it runs as a program (no clash with train's)."""
    return dict(
        target=flags.DEFINE_string(
            "target", "localhost:8500", "HOST:PORT of the gRPC endpoint, or http://HOST:PORT of "
            "the REST one (TF Serving's --rest_api_port, e.g. 8501)."),
        model_name=flags.DEFINE_string("model_name", None,
                                       "Model name, as in models.config (e.g. sst2)."),
        version=flags.DEFINE_integer("version", None, "Ask for this version (default: newest).",
                                     lower_bound=1),
        version_label=flags.DEFINE_string(
            "version_label", None, "Ask for the version with this label (e.g. stable), as "
            "assigned in models.config."),
        signature_name=flags.DEFINE_string("signature_name", "serving_default",
                                           "Signature to call."),
        text_pair=flags.DEFINE_multi_string(
            "text_pair", None, "Second text of pair models, once per TEXT, in the same order."),
        batch_size=flags.DEFINE_integer("batch_size", 32, "Texts per Predict request.",
                                        lower_bound=1),
        timeout=flags.DEFINE_float("timeout", 10.0, "Deadline of each call, in seconds.",
                                   lower_bound=0.001),
        metadata=flags.DEFINE_bool("metadata", False,
                                   "Print the model's signatures (GetModelMetadata) instead."),
        status=flags.DEFINE_bool("status", False,
                                 "Print the state of each version (GetModelStatus) instead."),
        rest=flags.DEFINE_bool(
            "rest", False, "Talk to TF Serving's REST API at --target (e.g. localhost:8501), "
            "as an http:// --target does, instead of gRPC."),
        examples=flags.DEFINE_string(
            "examples", None, "Classify the rows of this CSV/TSV/JSONL file as tf.Examples "
            "(TF Serving's Classify API, signature `classify`) instead of texts."),
        features=flags.DEFINE_list(
            "features", None, "With --examples: the columns that become tf.Example features "
            "(default: the model's input names, e.g. text)."),
        input=flags.DEFINE_string(
            "input", None, "Read the texts from this UTF-8 file (or `-`: stdin), one per "
            "line, instead of the arguments."),
    )


def classify_file(client, model_name, path, features, batch_size, signature_name, spec):
    """Prints TF Serving's Classify answer for every row of a CSV/TSV/JSONL file: the row's
    `features` (default: serving_default's input names) become a tf.Example's features."""
    if not features:
        _, signatures = client._signature_defs(model_name, **spec)
        features = sorted(signatures.signature_def["serving_default"].inputs)
    rows = readers.read_rows(path, features, "--examples")
    if not rows:
        raise UserError(f"--examples={path}: no rows in it; give one example per row.")
    signature_name = "classify" if signature_name == "serving_default" else signature_name
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        columns = {name: [row.values[i] for row in batch] for i, name in enumerate(features)}
        answers = client.classify(model_name, inference.to_examples(columns),
                                  signature_name=signature_name, **spec)
        for i, classes in enumerate(answers):
            best = max(classes, key=lambda c: c[1])[0] if classes else None
            print(json.dumps({**{name: values[i] for name, values in columns.items()},
                              "label": best, "scores": dict(classes)}, ensure_ascii=False))
    sys.stdout.flush()


def main(argv, holders):
    value = {name: holder.value for name, holder in holders.items()}
    if value["version"] is not None and value["version_label"]:
        raise UserError("--version and --version_label both given; use one of them.")
    spec = dict(version=value["version"], version_label=value["version_label"])
    texts = argv[1:]
    target = value["target"]
    if value["rest"] and not target.startswith(("http://", "https://")):
        target = "http://" + target
    client = ServingClient(target, value["timeout"])
    if value["metadata"] or value["status"]:
        result = (client.metadata if value["metadata"] else client.status)(value["model_name"], **spec)
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if value["examples"]:
        if texts or value["input"]:
            raise UserError("--examples given as well as texts; classify one or the other.")
        classify_file(client, value["model_name"], value["examples"], value["features"],
                      value["batch_size"], value["signature_name"], spec)
        return
    if value["input"]:
        if texts:
            raise UserError("--input given as well as TEXT arguments; use one of them.")
        texts = read_texts(value["input"])
    if not texts:
        raise UserError("no TEXT given; pass the texts to classify as arguments, or "
                        "--input=FILE (or - for stdin), or --metadata / --status.")
    inputs = image_inputs(texts) or {"text": texts}
    if value["text_pair"]:
        if len(value["text_pair"]) != len(texts):
            raise UserError(f"--text_pair given {len(value['text_pair'])} times for {len(texts)} "
                            "texts; give one --text_pair per TEXT.")
        inputs["text_pair"] = value["text_pair"]
    item_outputs = client.item_outputs(value["model_name"], value["signature_name"], **spec)
    start = 0
    for prediction in client.predict_in_batches(value["model_name"], inputs, value["batch_size"],
                                                signature_name=value["signature_name"], **spec):
        count = len(next(iter(prediction.outputs.values())))
        for row in records(texts[start:start + count], prediction.outputs, item_outputs):
            if "image_bytes" in inputs:
                row = {"image": row.pop("text"), **row}
            print(json.dumps(row, ensure_ascii=False))
        start += count
    sys.stdout.flush()


if __name__ == "__main__":
    _HOLDERS = _define_flags()
    flags.mark_flags_as_required(["model_name"])
    run_cli(lambda argv: main(argv, _HOLDERS))
