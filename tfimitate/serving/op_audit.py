"""Check that a SavedModel only uses ops the stock TensorFlow Serving binary links.

`tensorflow_model_server` links core TensorFlow and TF Text. Anything else
(a custom op library, `tf.py_function`) makes the model fail to load there, so
an export that needs it is refused here.

Example:
    audit_saved_model("saved_models/sst2/.tmp-3")   # raises ExportError if not servable
"""

import glob
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfimitate.errors import UserError

# Registered by core TensorFlow, but they call back into the Python that built them,
# which a model server does not have.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class ExportError(UserError):
    """The model cannot be exported as a servable SavedModel."""


def tf_text_ops():
    """Names of the ops registered by tensorflow-text's kernel libraries."""
    import tensorflow_text
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    names = set()
    library_dir = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    for path in glob.glob(os.path.join(library_dir, "*.so")):
        handle = pywrap_tf_session.TF_LoadLibrary(path)
        try:
            op_list = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetOpList(handle))
        finally:
            pywrap_tf_session.TF_DeleteLibraryHandle(handle)
        names.update(op.name for op in op_list.op)
    return names


def servable_ops():
    """Every op name TF Serving can run: core TensorFlow plus TF Text, minus Python callbacks."""
    core = {name for name in dir(tf.raw_ops) if not name.startswith("_")}
    return (core | tf_text_ops()) - PYTHON_OPS


def saved_model_ops(export_path):
    """The set of op names used anywhere in a SavedModel's graph and function library."""
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def audit_saved_model(export_path, serving_version=None):
    """Raises ExportError naming every op the stock model server would not find."""
    used = saved_model_ops(export_path)
    missing = sorted(used - servable_ops())
    if missing:
        raise ExportError(
            f"the exported graph uses ops that stock TensorFlow Serving does not link "
            f"({', '.join(missing)}); replace them (no tf.py_function, no custom op "
            "libraries) before exporting.")
    return used
