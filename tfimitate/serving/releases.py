"""TF Serving releases an export can target: the TensorFlow and TF Text each is built with.

`tensorflow_model_server` X.Y links TensorFlow X.Y and one TF Text release (pinned in
`tensorflow_serving/workspace.bzl` at its release tag): TF Text 2.12.1 for TF Serving
2.12.1 up to 2.19.1, 2.20.0 for 2.20.0. The op an exported graph may use are that
TensorFlow's plus that TF Text's; `op_lists/<release>.json.gz` hold them (made by
`python -m tfimitate.serving.compat --op_lists` from each version's own packages).
No TensorFlow import here: config validates `--serving_version` with it in a second.

Example:
    release("2.15.1")     # "2.15"
    RELEASES["2.15"]      # Release(tensorflow="2.15.1", tensorflow_text="2.12.1")
"""

import collections
import os

from tfimitate.errors import UserError

# op_lists/<release>.json.gz: every op (and its attributes) a release's TensorFlow + TF Text
# register (read by op_audit, written by compat --op_lists).
OP_LIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_lists")

Release = collections.namedtuple("Release", ["tensorflow", "tensorflow_text"])

# Release (major.minor; every patch links the same ops) -> the newest TensorFlow patch of
# that minor on PyPI, and the TF Text its server links.
RELEASES = {
    "2.12": Release("2.12.1", "2.12.1"),
    "2.13": Release("2.13.1", "2.12.1"),
    "2.14": Release("2.14.1", "2.12.1"),
    "2.15": Release("2.15.1", "2.12.1"),
    "2.16": Release("2.16.2", "2.12.1"),
    "2.17": Release("2.17.1", "2.12.1"),
    "2.18": Release("2.18.1", "2.12.1"),
    "2.19": Release("2.19.1", "2.12.1"),
    "2.20": Release("2.20.0", "2.20.0"),
    # Not read off its workspace.bzl here: assumed to pair like the PyPI packages we pin.
    "2.21": Release("2.21.0", "2.21.1"),
}


def release(version, flag="--serving_version"):
    """The RELEASES key of a TF Serving version written "2.15" or "2.15.1"."""
    key = ".".join(str(version).strip().split(".")[:2])
    if key not in RELEASES:
        raise UserError(f"{flag}={version} is not a TF Serving release tfimitate knows; use one "
                        f"of {', '.join(RELEASES)} (a patch number such as 2.15.1 is fine).")
    return key


def stand_in(key):
    """The release whose own TensorFlow and TF Text pair can be installed together to load
    exports the way `key` does: 2.13-2.19 link TF Text 2.12.1, which only TensorFlow 2.12
    loads, so 2.12 stands in for them."""
    text = RELEASES[key].tensorflow_text
    return next(name for name, pair in RELEASES.items()
                if pair.tensorflow_text == text and pair.tensorflow.rsplit(".", 1)[0]
                == pair.tensorflow_text.rsplit(".", 1)[0])
