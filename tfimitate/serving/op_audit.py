"""Check that a SavedModel only uses ops (and attributes) a TF Serving release links.

`tensorflow_model_server` X.Y links TensorFlow X.Y and one TF Text release
(`releases.RELEASES`). An op it lacks makes the version fail to load ("Op type not
registered"); an attribute its TensorFlow does not know is dropped, which is harmless
when the attribute only names things (`debug_name`) or holds the op's default value,
and changes the computation otherwise. `tf.py_function` calls back into Python,
which no server has. The op lists per release are `op_lists/<release>.json.gz`.

Example:
    release, loads_on = audit("saved_models/sst2/.tmp-3")  # oldest it loads on, and all
    audit_saved_model("saved_models/sst2/.tmp-3", serving_version="2.12")  # or ExportError
"""

import dataclasses
import functools
import gzip
import json
import os

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

from tfimitate.errors import UserError
from tfimitate.serving import releases

# Registered by core TensorFlow, but they call back into the Python that built them,
# which a model server does not have.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Attributes that only name or describe a node: an older TensorFlow drops them unharmed
# (VarHandleOp's debug_name, written from TF 2.15, seen loading on TF 2.12.1).
NAMING_ATTRS = frozenset({"debug_name"})


class ExportError(UserError):
    """The model cannot be exported as a servable SavedModel."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of the exported graph: its op, name, the function holding it, attributes."""
    op: str
    name: str
    function: str
    attrs: dict

    def where(self):
        return f"node '{self.name}'" + (f" of function {self.function}" if self.function else "")


@functools.lru_cache(maxsize=None)
def op_list(release):
    """{"tensorflow", "tensorflow_text", "ops": {op: {attr: [default text, allowed types]}}}."""
    with gzip.open(os.path.join(releases.OP_LIST_DIR, f"{release}.json.gz"), "rt") as f:
        return json.load(f)


def _read(export_path):
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto.meta_graphs[0]


def graph_nodes(meta_graph):
    """Every node of the graph and its function library (calls of library functions left out)."""
    functions = {f.signature.name for f in meta_graph.graph_def.library.function}
    nodes = [Node(n.op, n.name, "", dict(n.attr)) for n in meta_graph.graph_def.node]
    for function in meta_graph.graph_def.library.function:
        nodes.extend(Node(n.op, n.name, function.signature.name, dict(n.attr))
                     for n in function.node_def)
    return [node for node in nodes if node.op not in functions]


def saved_model_ops(export_path):
    """The set of op names used anywhere in a SavedModel's graph and function library."""
    return {node.op for node in graph_nodes(_read(export_path))}


def _producer_defaults(meta_graph):
    return {op.name: {a.name: a.default_value for a in op.attr if a.HasField("default_value")}
            for op in meta_graph.meta_info_def.stripped_op_list.op}


def problems(meta_graph, release):
    """Sentences naming what `release` cannot run as exported (empty: it loads)."""
    return _problems(graph_nodes(meta_graph), _producer_defaults(meta_graph), release)


def release_problems(meta_graph):
    """{release: its problems} for every release, oldest first, the graph walked once."""
    nodes, defaults = graph_nodes(meta_graph), _producer_defaults(meta_graph)
    return {release: _problems(nodes, defaults, release) for release in releases.RELEASES}


def _problems(nodes, defaults, release):
    listing = op_list(release)
    server = (f"TF Serving {release} (TensorFlow {listing['tensorflow']} + TF Text "
              f"{listing['tensorflow_text']})")
    found = []
    for node in nodes:
        known = listing["ops"].get(node.op)
        if node.op in PYTHON_OPS:
            found.append(f"op {node.op} ({node.where()}) calls back into Python, which no "
                         "model server has; replace the tf.py_function")
            continue
        if known is None:
            found.append(f"op {node.op} ({node.where()}) is not in {server}")
            continue
        for attr, value in node.attrs.items():
            if attr.startswith("_") or value.placeholder:
                continue
            if attr not in known:
                default = defaults.get(node.op, {}).get(attr)
                if attr in NAMING_ATTRS or (default is not None and default == value):
                    continue
                found.append(f"attribute {attr}={text_format.MessageToString(value, as_one_line=True)} "
                             f"of op {node.op} ({node.where()}) is unknown to {server}, which "
                             "would ignore it and compute something else")
                continue
            allowed = known[attr][1]
            if allowed and value.type and value.type not in allowed:
                found.append(f"op {node.op} ({node.where()}) takes {attr}="
                             f"{tf.dtypes.as_dtype(value.type).name}, which {server} does not "
                             "support")
    return found


def supported_releases(export_path):
    """The releases (oldest first) whose TensorFlow + TF Text have every op the export uses."""
    return [release for release, found in release_problems(_read(export_path)).items()
            if not found]


def audit(export_path, serving_version=None):
    """Checks the export against `serving_version` (None: the oldest release that can load
    it); returns (that release, every release that loads it, oldest first), or raises
    ExportError naming the first problem."""
    found = release_problems(_read(export_path))
    loads_on = [release for release, problems_of in found.items() if not problems_of]
    if serving_version is not None:
        target = releases.release(serving_version)
    else:
        target = loads_on[0] if loads_on else list(found)[-1]
    if not found[target]:
        return target, loads_on
    first, more = found[target][0], len(found[target]) - 1
    more = f" (and {more} more)" if more else ""
    advice = ("choose a newer --serving_version, or change the layer that emits it"
              if serving_version is not None else
              "no TF Serving release tfimitate knows can serve it; change the layer that emits it")
    raise ExportError(f"the exported graph cannot be served: {first}{more}; {advice}.")


def audit_saved_model(export_path, serving_version=None):
    """The release `audit` chooses (or ExportError)."""
    return audit(export_path, serving_version)[0]
