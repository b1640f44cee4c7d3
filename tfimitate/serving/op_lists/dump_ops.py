"""Print the op list of the TensorFlow (and TF Text) in this interpreter as JSON.

Run by `python -m tfimitate.serving.compat --op_lists` inside each TF Serving release's
TensorFlow; imports only TensorFlow, so it runs on any release from 2.12 on:

    python dump_ops.py core > core.json        # every op core TensorFlow registers
    python dump_ops.py tf_text > text.json     # the ops TF Text's kernel libraries register

Each op maps its attributes to [default value as AttrValue text or null, allowed
dtypes (enum numbers) or null].
"""

import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow.core.framework import op_def_pb2  # noqa: E402
from tensorflow.python.client import pywrap_tf_session  # noqa: E402


def describe(op_list):
    ops = {}
    for op in op_list.op:
        ops[op.name] = {
            attr.name: [text_format.MessageToString(attr.default_value, as_one_line=True)
                        if attr.HasField("default_value") else None,
                        list(attr.allowed_values.list.type) or None if attr.type in ("type", "list(type)")
                        and attr.HasField("allowed_values") else None]
            for attr in op.attr}
    return ops


def core_ops():
    buffer = pywrap_tf_session.TF_GetAllOpList()
    try:
        return op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
    finally:
        pywrap_tf_session.TF_DeleteBuffer(buffer)


def tf_text_ops():
    import tensorflow_text

    ops = op_def_pb2.OpList()
    folder = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    for path in sorted(glob.glob(os.path.join(folder, "*.so"))):
        handle = pywrap_tf_session.TF_LoadLibrary(path)
        try:
            ops.op.extend(op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetOpList(handle)).op)
        finally:
            pywrap_tf_session.TF_DeleteLibraryHandle(handle)
    return ops


if __name__ == "__main__":
    which = sys.argv[1]
    if which == "core":
        result = {"tensorflow": tf.__version__, "ops": describe(core_ops())}
    else:
        import tensorflow_text
        result = {"tensorflow_text": tensorflow_text.__version__, "ops": describe(tf_text_ops())}
    json.dump(result, sys.stdout, sort_keys=True)
