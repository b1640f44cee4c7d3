"""Convert MNIST-style IDX files (e.g. Fashion-MNIST) into image folders tfimitate reads.

Writes `<output_dir>/<split>/<class name>/<index>.png` for the `train` and `t10k` (as
`test`) file pairs found in `--idx_dir` (`<split>-images-idx3-ubyte[.gz]` and
`<split>-labels-idx1-ubyte[.gz]`). The folder appears whole or not at all.

    python -m tfimitate.data.idx_to_folder --idx_dir=../shared/data/fashion_mnist \\
        --output_dir=data/fashion_mnist --class_names=fashion_mnist

Example (in Python):
    images, labels = read_idx_pair("../shared/data/fashion_mnist", "t10k")
    images.shape  # (10000, 28, 28)
"""

import gzip
import os
import shutil
import struct

import numpy as np
from absl import flags

from tfimitate.errors import UserError, run_cli

SPLITS = {"train": "train", "t10k": "test"}
# Class names of the datasets that ship as IDX files, by their id order.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle_boot"),
    "mnist": tuple(str(i) for i in range(10)),
}
_UBYTE = 0x08


def read_idx(path):
    """An IDX file of unsigned bytes as a NumPy uint8 array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise UserError(f"--idx_dir: cannot read {path} ({error}); check that the file is intact.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise UserError(f"--idx_dir: {path} is not an IDX file of unsigned bytes; give the "
                        "original (optionally .gz) MNIST-style files.")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserError(f"--idx_dir: {path} holds {body.size} bytes, not the {shape} it declares; "
                        "the file is truncated.")
    return body.reshape(shape)


def _find(idx_dir, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(idx_dir, candidate)
        if os.path.isfile(path):
            return path
    raise UserError(f"--idx_dir={idx_dir}: no {name}[.gz]; give the folder of the IDX files.")


def read_idx_pair(idx_dir, split):
    """(images [n, height, width] uint8, labels [n] uint8) of one split ("train", "t10k")."""
    images = read_idx(_find(idx_dir, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(idx_dir, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"--idx_dir={idx_dir}: {split} images {images.shape} and labels "
                        f"{labels.shape} do not pair up.")
    return images, labels


def convert(idx_dir, output_dir, class_names=None):
    """Writes every split of `idx_dir` as PNG folders under `output_dir`; returns counts."""
    import tensorflow as tf

    if os.path.exists(output_dir):
        raise UserError(f"--output_dir={output_dir} already exists; remove it or choose another.")
    pairs = {name: read_idx_pair(idx_dir, split) for split, name in SPLITS.items()}
    ids = sorted({int(i) for _, labels in pairs.values() for i in np.unique(labels)})
    names = class_names or tuple(str(i) for i in range(max(ids) + 1))
    if max(ids) >= len(names):
        raise UserError(f"--class_names names {len(names)} classes but the labels go up to "
                        f"{max(ids)}; give one name per class id.")
    temporary = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    counts = {}
    try:
        for name, (images, labels) in pairs.items():
            for i in ids:
                os.makedirs(os.path.join(temporary, name, names[i]))
            encoded = (tf.data.Dataset.from_tensor_slices(images[..., None])
                       .map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE))
            for index, (png, label) in enumerate(zip(encoded.as_numpy_iterator(), labels)):
                with open(os.path.join(temporary, name, names[label], f"{index:05d}.png"), "wb") as f:
                    f.write(png)
            counts[name] = len(images)
        os.rename(temporary, output_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return counts


def main(argv, holders):
    if len(argv) > 1:
        raise UserError(f"unexpected argument '{argv[1]}'; every setting is a --flag (see --help).")
    names = holders["class_names"].value
    if names and len(names) == 1 and names[0] in CLASS_NAMES:
        names = CLASS_NAMES[names[0]]
    counts = convert(holders["idx_dir"].value, holders["output_dir"].value, names)
    print(", ".join(f"{count} {name} images" for name, count in counts.items())
          + f" written to {holders['output_dir'].value}", flush=True)


if __name__ == "__main__":
    _HOLDERS = dict(
        idx_dir=flags.DEFINE_string("idx_dir", None, "Folder of the IDX files (.gz or not)."),
        output_dir=flags.DEFINE_string("output_dir", None, "Folder to create."),
        class_names=flags.DEFINE_list(
            "class_names", None,
            f"Folder names of the class ids in order, or one of {', '.join(CLASS_NAMES)} "
            "(default: the ids)."),
    )
    flags.mark_flags_as_required(["idx_dir", "output_dir"])
    run_cli(lambda argv: main(argv, _HOLDERS))
