"""Load a SavedModel the way TensorFlow Serving does and run its signatures.

TF Serving loads a version with TensorFlow's C++ `LoadSavedModel` into a session:
it imports the graph, runs the saver's restore op and the init op, then answers
each request by feeding and fetching the SignatureDef's tensor names. That path
is not the TF2 object-graph restore of `tf.saved_model.load`, and graphs that
reload fine in Python can fail there (Keras 3 exports whose signatures read
variables nothing restores). This module calls the same C++ loader through
TensorFlow's C API (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`), so the
export check and the dev server see what TF Serving sees.

It imports only NumPy and TensorFlow (plus TF Text, whose ops TF Serving links),
so it also runs as a script under an older TensorFlow, standing in for the TF
Serving release built with it (see `tfimitate.serving.compat`):

    python session_loader.py SAVED_MODEL INPUTS.tfrecord OUTPUTS.tfrecord

where each record is a `NamedTensorProto` named `<signature>/<input or output>`.

Example:
    session = SessionModel("saved_models/sst2/1")
    outputs = session.run("serving_default", {"text": np.array([b"a fine film"], object)})
"""

import ctypes
import glob
import os
import sys

import numpy as np

_STRING = 7
# TF_DataType -> NumPy dtype of the tensors our signatures use (bfloat16 via ml_dtypes).
_NUMPY_TYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16,
                6: np.int8, 9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16,
                22: np.uint32, 23: np.uint64}
_TSTRING_BYTES = 24  # sizeof(TF_TString)


class LoadError(Exception):
    """The C++ loader refused the SavedModel (message as TensorFlow gives it)."""


class RunError(Exception):
    """A signature failed in the session; `code` is TensorFlow's (= gRPC's) status code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _library():
    """TensorFlow's C API, from the TensorFlow this process imported (any version >= 2.5)."""
    import tensorflow as tf

    folder = os.path.dirname(tf.__file__)
    for name in ("libtensorflow_cc.so.2", "libtensorflow_cc.2.dylib", "python/_pywrap_tensorflow_internal.so"):
        for path in glob.glob(os.path.join(folder, name)):
            library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            if hasattr(library, "TF_LoadSessionFromSavedModel"):
                return _declare(library)
    raise LoadError(f"TensorFlow's C API (TF_LoadSessionFromSavedModel) was not found under {folder}.")


def _declare(c):
    p, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "TF_NewStatus": ([], p), "TF_DeleteStatus": ([p], None), "TF_GetCode": ([p], i),
        "TF_Message": ([p], ctypes.c_char_p), "TF_NewGraph": ([], p),
        "TF_DeleteGraph": ([p], None), "TF_NewSessionOptions": ([], p),
        "TF_SetConfig": ([p, p, size, p], None), "TF_DeleteSessionOptions": ([p], None),
        "TF_LoadSessionFromSavedModel": (
            [p, p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), i, p, p, p], p),
        "TF_GraphOperationByName": ([p, ctypes.c_char_p], p),
        "TF_SessionRun": ([p, p, p, p, i, p, p, i, p, i, p, p], None),
        "TF_CloseSession": ([p, p], None), "TF_DeleteSession": ([p, p], None),
        "TF_AllocateTensor": ([i, ctypes.POINTER(ctypes.c_int64), i, size], p),
        "TF_DeleteTensor": ([p], None), "TF_TensorData": ([p], p),
        "TF_TensorByteSize": ([p], size), "TF_TensorType": ([p], i), "TF_NumDims": ([p], i),
        "TF_Dim": ([p, i], ctypes.c_int64), "TF_StringInit": ([p], None),
        "TF_StringCopy": ([p, ctypes.c_char_p, size], None),
        "TF_StringGetDataPointer": ([p], p), "TF_StringGetSize": ([p], size),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(c, name)
        function.argtypes, function.restype = arguments, result
    return c


_C = None


def _c():
    global _C
    if _C is None:
        _C = _library()
    return _C


class _Status:
    def __init__(self):
        self.handle = _c().TF_NewStatus()

    def failure(self):
        """(TensorFlow status code, message) of a failed call, else None."""
        code = _c().TF_GetCode(self.handle)
        return (code, _c().TF_Message(self.handle).decode("utf-8", "replace")) if code else None

    def __del__(self):
        if _C is not None and self.handle:
            _C.TF_DeleteStatus(self.handle)


def _signature_defs(path):
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise LoadError(f"{path}/saved_model.pb has no MetaGraph tagged 'serve'.")


class SessionModel:
    """One SavedModel loaded by TensorFlow's C++ loader into a session, as TF Serving loads it.

    Raises LoadError when the loader refuses it (an op the TensorFlow in this process does
    not register, a corrupt file). Thread-safe: requests may run concurrently.
    """

    def __init__(self, path, threads=0):
        import tensorflow_text  # noqa: F401  (registers TF Text's ops, which TF Serving links)
        from tensorflow.core.protobuf import config_pb2

        c = _c()
        self.path = path
        self.signature_defs = _signature_defs(path)
        self._graph = c.TF_NewGraph()
        options = c.TF_NewSessionOptions()
        status = _Status()
        config = config_pb2.ConfigProto(intra_op_parallelism_threads=threads,
                                        inter_op_parallelism_threads=threads).SerializeToString()
        c.TF_SetConfig(options, config, len(config), status.handle)
        tags = (ctypes.c_char_p * 1)(b"serve")
        self._session = c.TF_LoadSessionFromSavedModel(
            options, None, os.fsencode(path), tags, 1, self._graph, None, status.handle)
        c.TF_DeleteSessionOptions(options)
        failure = status.failure()
        if failure:
            raise LoadError(failure[1])

    def run(self, signature_name, inputs, output_names=()):
        """Feeds `inputs` (alias -> NumPy array) to a signature; returns {output alias: array}.

        Raises:
            RunError: the session failed (e.g. an uninitialised variable, a bad input value).
        """
        signature = self.signature_defs[signature_name]
        output_names = list(output_names) or sorted(signature.outputs)
        feeds = [(self._endpoint(signature.inputs[name].name), _to_tensor(value))
                 for name, value in inputs.items()]
        fetches = [self._endpoint(signature.outputs[name].name) for name in output_names]
        input_array = (_Output * len(feeds))(*(endpoint for endpoint, _ in feeds))
        values = (ctypes.c_void_p * len(feeds))(*(tensor for _, tensor in feeds))
        output_array = (_Output * len(fetches))(*fetches)
        results = (ctypes.c_void_p * len(fetches))()
        status = _Status()
        try:
            _c().TF_SessionRun(self._session, None, input_array, values, len(feeds),
                               output_array, results, len(fetches), None, 0, None, status.handle)
            failure = status.failure()
            if failure:
                raise RunError(*failure)
            return {name: _to_numpy(result) for name, result in zip(output_names, results)}
        finally:
            for _, tensor in feeds:
                _c().TF_DeleteTensor(tensor)
            for result in results:
                if result:
                    _c().TF_DeleteTensor(result)

    def _endpoint(self, tensor_name):
        operation, _, index = tensor_name.partition(":")
        handle = _c().TF_GraphOperationByName(self._graph, operation.encode())
        if not handle:
            raise LoadError(f"the graph has no operation '{operation}' that its SignatureDef names.")
        return _Output(handle, int(index or 0))

    def close(self):
        if self._session:
            status = _Status()
            _c().TF_CloseSession(self._session, status.handle)
            _c().TF_DeleteSession(self._session, status.handle)
            _c().TF_DeleteGraph(self._graph)
            self._session = None

    def __del__(self):
        if _C is not None and getattr(self, "_session", None):
            self.close()


def _to_tensor(value):
    value = np.asarray(value)
    dims = (ctypes.c_int64 * value.ndim)(*value.shape)
    if value.dtype.kind in "OSU":
        items = [item.encode() if isinstance(item, str) else bytes(item) for item in value.reshape(-1)]
        tensor = _c().TF_AllocateTensor(_STRING, dims, value.ndim, _TSTRING_BYTES * len(items))
        data = _c().TF_TensorData(tensor)
        for k, item in enumerate(items):
            element = data + k * _TSTRING_BYTES
            _c().TF_StringInit(element)
            _c().TF_StringCopy(element, item, len(item))
        return tensor
    dtype = next((code for code, kind in _NUMPY_TYPES.items() if np.dtype(kind) == value.dtype), None)
    if dtype is None:
        raise RunError(3, f"inputs of dtype {value.dtype} are not supported by this check.")
    value = np.ascontiguousarray(value)
    tensor = _c().TF_AllocateTensor(dtype, dims, value.ndim, value.nbytes)
    ctypes.memmove(_c().TF_TensorData(tensor), value.ctypes.data, value.nbytes)
    return tensor


def _to_numpy(tensor):
    c = _c()
    shape = tuple(c.TF_Dim(tensor, k) for k in range(c.TF_NumDims(tensor)))
    dtype, data = c.TF_TensorType(tensor), c.TF_TensorData(tensor)
    if dtype == _STRING:
        count = int(np.prod(shape, dtype=np.int64))
        items = [ctypes.string_at(c.TF_StringGetDataPointer(data + k * _TSTRING_BYTES),
                                  c.TF_StringGetSize(data + k * _TSTRING_BYTES))
                 for k in range(count)]
        return np.array(items, dtype=object).reshape(shape)
    if dtype == 14:  # bfloat16
        import ml_dtypes
        numpy_type = ml_dtypes.bfloat16
    elif dtype in _NUMPY_TYPES:
        numpy_type = _NUMPY_TYPES[dtype]
    else:
        raise RunError(13, f"an output has TF_DataType {dtype}, which this check cannot read.")
    size = c.TF_TensorByteSize(tensor)
    return np.frombuffer(ctypes.string_at(data, size), dtype=numpy_type).reshape(shape).copy()


def read_named_tensors(path):
    """{"<signature>/<name>": NumPy array} from a TFRecord file of NamedTensorProtos."""
    import tensorflow as tf
    from tensorflow.core.protobuf import named_tensor_pb2

    tensors = {}
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        named = named_tensor_pb2.NamedTensorProto.FromString(record)
        tensors[named.name] = tf.make_ndarray(named.tensor)
    return tensors


def write_named_tensors(path, tensors):
    """Writes {"<signature>/<name>": array} as a TFRecord file of NamedTensorProtos."""
    import tensorflow as tf
    from tensorflow.core.protobuf import named_tensor_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for name, value in tensors.items():
            proto = named_tensor_pb2.NamedTensorProto(name=name, tensor=tf.make_tensor_proto(value))
            writer.write(proto.SerializeToString())


def run_all(path, inputs):
    """Loads `path` once and makes one call per `<call>` of the inputs
    ({"<call>/<input>": array}, where `<call>` is a signature name, optionally followed by
    `#<anything>` to call it more than once); returns {"<call>/<output>": array}, or
    {"error": message} on the first failure."""
    try:
        session = SessionModel(path)
    except LoadError as error:
        return {"error": np.array(f"load: {error}".encode(), dtype=object)}
    calls = {}
    for key, value in inputs.items():
        call, name = key.rsplit("/", 1)
        calls.setdefault(call, {})[name] = value
    outputs = {}
    for call, feeds in calls.items():
        signature = call.split("#")[0]
        try:
            ran = session.run(signature, feeds)
        except (RunError, KeyError) as error:
            return {"error": np.array(f"{signature}: {error}".encode(), dtype=object)}
        outputs.update({f"{call}/{name}": value for name, value in ran.items()})
    session.close()
    return outputs


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: session_loader.py SAVED_MODEL INPUTS.tfrecord OUTPUTS.tfrecord")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    write_named_tensors(sys.argv[3], run_all(sys.argv[1], read_named_tensors(sys.argv[2])))
