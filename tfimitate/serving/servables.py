"""Load the SavedModel versions of a model folder that its version policy wants, like TF Serving.

TF Serving's file-system source polls `<model_base_path>/` for integer version
directories (anything else, such as our `.tmp-*` export folders, is ignored), loads
the ones the model's policy wants (by default the newest) with TensorFlow's C++
session loader, replays their warmup requests, and only then moves traffic to them
and unloads the others. `ModelVersions` does the same for the dev server, through the
same C++ loader (`session_loader`), so a version TF Serving cannot run fails here
too, and resolves the model's version labels.

Example:
    versions = ModelVersions("sst2", "saved_models/sst2")
    versions.poll()                      # loads the newest version
    outputs = versions.get().run("serving_default", {"text": tf.make_tensor_proto(["fun"])})
"""

import os
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import get_model_status_pb2

from tfimitate import files
from tfimitate.serving import inference, session_loader, warmup
from tfimitate.serving.status import RequestError

State = get_model_status_pb2.ModelVersionStatus.State
# A request's tensor may name more elements than it gives values (TF fills in the last one),
# up to this many; beyond, it is refused rather than allocated.
MAX_FILLED_ELEMENTS = 1 << 20


def numeric_versions(base_path):
    """Integer version directories under `base_path`, ascending (hidden/other names ignored)."""
    if not files.isdir(base_path):
        return []
    return sorted(int(name) for name in files.listdir(base_path)
                  if name.isdigit() and files.isdir(os.path.join(base_path, name)))


def _tensor_shape(shape_proto):
    return None if shape_proto.unknown_rank else [dim.size for dim in shape_proto.dim]


class Servable:
    """One loaded version: its SignatureDefs (as TF Serving reports them), run in a session
    that TensorFlow's C++ SavedModel loader filled, as TF Serving's is."""

    def __init__(self, version, path):
        self.version = version
        self.path = path
        self.session = session_loader.SessionModel(path)
        self.signature_defs = self.session.signature_defs

    def run(self, signature_name, inputs, output_filter=()):
        """Runs a signature on TensorProto inputs; returns a dict of NumPy outputs.

        Raises:
            RequestError: unknown signature/input/output, wrong dtype or shape, or
                a graph error caused by the inputs.
        """
        if signature_name not in self.signature_defs:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        signature = self.signature_defs[signature_name]
        arrays = _check_inputs(signature, inputs)
        unknown = sorted(set(output_filter) - set(signature.outputs))
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {unknown[0]}. Outputs "
                               f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        try:
            return self.session.run(signature_name, arrays, output_filter)
        except session_loader.RunError as error:
            raise RequestError(_GRPC_CODES.get(error.code, grpc.StatusCode.INTERNAL),
                               str(error)) from None


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}  # TF and gRPC share the numbers


def _check_inputs(signature, inputs):
    """Checks TensorProto inputs against a SignatureDef; returns them as NumPy arrays."""
    expected = set(signature.inputs)
    for name in sorted(set(inputs) - expected):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input tensor alias not found in signature: {name}. Inputs expected "
                           f"to be in the set {{{','.join(sorted(expected))}}}.")
    missing = sorted(expected - set(inputs))
    if missing:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Missing input keys: {', '.join(missing)}.")
    arrays = {}
    for name, proto in inputs.items():
        info = signature.inputs[name]
        if proto.dtype != info.dtype:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{name}' has dtype {_dtype_name(proto.dtype)}; the "
                               f"signature expects {_dtype_name(info.dtype)}.")
        _check_size(name, proto)
        try:
            value = tf.make_ndarray(proto)
        except (TypeError, ValueError):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensor parsing error: {name}") from None
        shape = _tensor_shape(info.tensor_shape)
        if shape is not None and (len(shape) != value.ndim or any(
                want not in (-1, got) for want, got in zip(shape, value.shape))):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{name}' has shape {list(value.shape)}; the signature "
                               f"expects {shape} (-1: any size).")
        arrays[name] = value
    return arrays


def _check_size(name, proto):
    """Refuses a TensorProto whose shape has a negative dimension, or more elements than
    its values give and MAX_FILLED_ELEMENTS allows (TF fills the rest with the last value),
    as TF Serving refuses to parse it: before NumPy tries to allocate it."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    count = int(np.prod(dims, dtype=np.float64)) if dims else 1
    given = len(proto.tensor_content) // max(tf.dtypes.as_dtype(proto.dtype).size, 1) \
        if proto.tensor_content else sum(len(value) for field, value in proto.ListFields()
                                         if field.name.endswith("_val"))
    if any(size < 0 for size in dims) or count > max(given, MAX_FILLED_ELEMENTS):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"tensor parsing error: {name} (shape {dims} with {given} values)")


def _dtype_name(enum_value):
    try:
        return tf.dtypes.as_dtype(enum_value).name
    except TypeError:
        return f"unknown dtype {enum_value}"


def wanted_versions(policy, versions):
    """The versions of `versions` (ascending) that a ServableVersionPolicy proto (models.config
    `model_version_policy`) serves: the newest `latest.num_versions` (default 1), the listed
    `specific` ones that exist, or `all`."""
    kind = policy.WhichOneof("policy_choice") if policy is not None else None
    if kind == "specific":
        return sorted(set(policy.specific.versions) & set(versions))
    if kind == "all":
        return list(versions)
    count = policy.latest.num_versions if kind == "latest" else 0
    return list(versions[-(count or 1):])


class ModelVersions:
    """Serves the versions of one model that its policy wants (by default the newest), swapping
    to newer ones without dropping requests, and the version labels that name them.

    A version that fails to load is retried `max_num_load_retries` times, `load_retry_interval`
    seconds apart (TF Serving's --max_num_load_retries / --load_retry_interval_micros): a
    version copied in non-atomically may be complete on the next try. Meanwhile its state is
    LOADING (with the last error); after the last try it is END with the error. A version the
    policy no longer wants is unloaded only once a wanted one is available, as TF Serving's
    availability-preserving policy does.
    """

    def __init__(self, name, base_path, max_num_load_retries=5, load_retry_interval=60.0,
                 policy=None, labels=None):
        self.name = name
        self.base_path = base_path
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self.policy = policy  # a ServableVersionPolicy proto; None: the newest version
        self.labels = dict(labels or {})  # label -> version
        self.states = {}  # version -> (State, error message or "")
        self._failures = {}  # version -> (failed loads, time.monotonic() of the next try)
        self._loaded = {}  # version -> Servable; replaced whole, never changed in place
        self._lock = threading.Lock()

    def get(self, version=None, label=None):
        """The servable for `version`, or for the version `label` names (neither: the newest
        loaded); RequestError NOT_FOUND otherwise."""
        loaded = self._loaded
        if label:
            if label not in self.labels:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        if version is None and loaded:
            return loaded[max(loaded)]
        if version not in loaded:
            spec = f"Latest({self.name})" if version is None else f"Specific({self.name}, {version})"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec}")
        return loaded[version]

    def available(self):
        """The loaded (AVAILABLE) versions, ascending."""
        return sorted(self._loaded)

    def check_labels(self, labels):
        """Refuses (RequestError FAILED_PRECONDITION) labels naming a version that is not
        available, as TF Serving does without --allow_version_labels_for_unavailable_models."""
        for label, version in sorted(labels.items()):
            if version not in self._loaded:
                raise RequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {self.name}, which "
                    "is not currently available for inference")

    def retrying(self):
        """True while a wanted version failed to load and has retries left."""
        wanted = wanted_versions(self.policy, numeric_versions(self.base_path))
        return any(0 < self._failures.get(version, (0, 0.0))[0] <= self.max_num_load_retries
                   for version in wanted if version not in self._loaded)

    def poll(self, unload=True):
        """Loads the wanted versions (or retries them when their time comes) and, with
        `unload`, unloads the others once a wanted one is available. A deleted newest version
        rolls back to the one before it, as in TF Serving. Returns the newest served version
        (None while there is none).
        """
        with self._lock:
            wanted = wanted_versions(self.policy, numeric_versions(self.base_path))
            loaded = dict(self._loaded)
            for version in sorted(set(wanted) - set(loaded), reverse=True):
                servable = self._load(version)
                if servable is not None:
                    loaded[version] = servable
            if unload and any(version in loaded for version in wanted):
                for version in set(loaded) - set(wanted):
                    del loaded[version]
            for version in set(self._loaded) - set(loaded):  # before traffic moves: a client
                self.states[version] = (State.END, "")        # served by the new versions never
            self._loaded = loaded                             # reads them LOADING
            return max(loaded) if loaded else None

    def _load(self, version):
        """Loads and warms up one version; None (state LOADING or END) when it fails or waits."""
        failures, next_try = self._failures.get(version, (0, 0.0))
        if failures > self.max_num_load_retries or time.monotonic() < next_try:
            return None
        self.states[version] = (State.LOADING, self.states.get(version, (None, ""))[1])
        try:
            servable = Servable(version, os.path.join(self.base_path, str(version)))
            self._warm_up(servable)
        except Exception as error:  # a broken version must not stop the server
            self._failed(version, failures + 1, f"{type(error).__name__}: {error}")
            return None
        self._failures.pop(version, None)
        self.states[version] = (State.AVAILABLE, "")
        logging.info("Serving %s version %d from %s", self.name, version, servable.path)
        return servable

    def _failed(self, version, failures, message):
        self._failures[version] = (failures, time.monotonic() + self.load_retry_interval)
        if failures > self.max_num_load_retries:
            logging.error("Could not load %s version %d (%d attempts), giving up: %s",
                          self.name, version, failures, message)
            self.states[version] = (State.END, message)
        else:
            logging.warning("Could not load %s version %d (attempt %d of %d); retrying in %g s: %s",
                            self.name, version, failures, self.max_num_load_retries + 1,
                            self.load_retry_interval, message)
            self.states[version] = (State.LOADING, message)

    @staticmethod
    def _warm_up(servable):
        logs = warmup.read_warmup_logs(servable.path)
        for log in logs:
            kind = log.WhichOneof("log_type")
            if kind == "predict_log":
                request = log.predict_log.request
                servable.run(request.model_spec.signature_name or "serving_default",
                             request.inputs, request.output_filter)
            elif kind == "classify_log":
                inference.classify(servable, log.classify_log.request)
            elif kind == "regress_log":
                inference.regress(servable, log.regress_log.request)
            elif kind == "multi_inference_log":
                inference.multi_inference(servable, log.multi_inference_log.request)
            else:
                raise ValueError(f"warmup record of unsupported type {kind}")
        logging.info("Replayed %d warmup requests for version %d.", len(logs), servable.version)

    def unload_all(self):
        """Unloads every version (the model left the config)."""
        with self._lock:
            for version in self._loaded:
                self.states[version] = (State.END, "")
            self._loaded = {}
