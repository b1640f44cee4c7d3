"""A teacher's outputs on a split, computed once and kept on disk in atomic chunks.

The outputs of each CHUNK_EXAMPLES consecutive examples are one .npy file, written
to a temporary name and renamed, under a folder named by a fingerprint of the teacher
and of the split's content. A later run (a resume, or another student of the same
teacher and data) reads the chunks it finds and computes only the missing ones, so a
kill (SIGKILL included) while caching loses at most the chunk being computed.

Example:
    probs = cached_outputs("runs/student/teacher_outputs", teacher.fingerprint, split,
                           teacher.probabilities)
"""

import dataclasses
import hashlib
import io
import json
import os

import numpy as np
from absl import logging

from tfimitate import files

CHUNK_EXAMPLES = 512


def split_fingerprint(split):
    """A digest of the examples (and labels) of `split`, a dataclass; not of its source name."""
    content = {k: v for k, v in dataclasses.asdict(split).items() if k != "source"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def cached_outputs(directory, teacher_fingerprint, split, compute, chunk_examples=CHUNK_EXAMPLES):
    """`compute(split)` (float32 [label units, ...]) for all of `split`, chunk by chunk,
    reusing the chunks already under `directory` for this teacher and split."""
    key = hashlib.sha256(f"{teacher_fingerprint}/{split_fingerprint(split)}/{chunk_examples}"
                         .encode()).hexdigest()[:24]
    folder = os.path.join(directory, key)  # created with its first chunk
    parts, reused = [], 0
    for number, start in enumerate(range(0, len(split), chunk_examples)):
        path = os.path.join(folder, f"chunk-{number:06d}.npy")
        part = _load(path)
        if part is None:
            indices = range(start, min(start + chunk_examples, len(split)))
            part = np.asarray(compute(split.subset(indices, split.source)), np.float32)
            buffer = io.BytesIO()
            np.save(buffer, part)
            files.write_atomically(path, buffer.getvalue())
        else:
            reused += 1
        parts.append(part)
    logging.info("Teacher outputs on %s: %d chunks reused, %d computed (%s).", split.source,
                 reused, len(parts) - reused, folder)
    return np.concatenate(parts)


def _load(path):
    if not files.isfile(path):
        return None
    try:
        part = np.load(io.BytesIO(files.read_bytes(path)))
    except (OSError, ValueError) as error:  # not expected (writes are atomic); recompute
        logging.warning("Cached teacher outputs %s are unreadable (%s); computing them again.",
                        path, error)
        return None
    if not np.isfinite(part).all():  # cached before teachers' outputs were checked
        logging.warning("Cached teacher outputs %s hold NaN or infinite values; computing them "
                        "again.", path)
        return None
    return part
