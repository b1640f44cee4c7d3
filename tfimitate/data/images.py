"""Image files for classification: a class-per-folder tree or a path,label listing, decoded
and resized in tf.data.

Three layouts are read:
  * a folder `root/<label>/*.{jpg,jpeg,png,gif,bmp}` (labels are the sub-folder names);
  * a .csv/.tsv/.jsonl listing with an image path column and a label column (paths are
    relative to the listing's folder);
  * TFRecord files of tf.Example (.tfrecord/.tfrecords/.tfrec, optionally .gz): the image
    column names a bytes feature holding the encoded image, the label column a bytes or
    int64 feature; the encoded images are held in memory.
Listings and TFRecord files may be named by a pattern or a comma-separated list
(data/streams.py `expand`): the files are read in order and joined, each example keeping
its file, so that messages name the file and line (or record), not the pattern.
Every image becomes RGB (grayscale, RGBA and palette images too), is cropped to the
target aspect ratio (if the backbone's converter does so) and resized to the backbone's
input size by keras.layers.Resizing, then rounded to whole 0..255 values: the same function runs in tf.data and inside the
exported serving graph, so training and serving see the same pixels. Files that do not
decode are found once, before training, and skipped (or refused with --strict_images).

Example:
    split = read_split("data/fashion_mnist/train", "--train_data")
    split = read_split("data/train-*.tfrecord.gz", "--train_data", "image", "label")
    split = check_images(split, image_format, strict=False)
    dataset = image_dataset(split, image_format, {"labels": label_ids})
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
from absl import logging

from tfimitate import files
from tfimitate.data import readers, streams, tfds_source
from tfimitate.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Decoded images are cached at training resolution when they take at most this much memory.
CACHE_BYTES = 3 << 30
# How many names of undecodable files the log (or the error) shows.
SHOWN_BAD_FILES = 5
DECODE_BATCH = 256
SHUFFLE_BUFFER = 10_000
RECORD_BATCH = 1024  # TFRecord records read at a time


@dataclasses.dataclass(eq=False)
class Split:
    """Image files of one data source, in a fixed order (compared and hashed by identity).

    `lines` are the listing's line numbers, or TFRecord record numbers (0 for files found
    in a folder, TFDS examples). With `contents` (encoded images held in memory, e.g. a
    TFDS split or TFRecord files) `paths` only name them (`FILE#NUMBER`). `files` names
    each example's listing or TFRecord file when the split joins several (else `source`).
    `side`: the side columns asked for (column -> one cell per example: as read, None when
    absent), which the task parses (tasks/side_features.py).
    """

    source: str
    paths: List[str]
    labels: List[str]
    lines: List[int]
    contents: Optional[List[bytes]] = None
    files: Optional[List[str]] = None
    side: Dict[str, list] = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.paths)

    def subset(self, indices, source):
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return Split(source, pick(self.paths), pick(self.labels), pick(self.lines),
                     pick(self.contents), pick(self.files),
                     {name: pick(values) for name, values in self.side.items()})

    def file(self, i):
        """The listing or TFRecord file of example `i` (the split's source if one file)."""
        return self.files[i] if self.files is not None else self.source

    def parts(self):
        """The split cut into runs of examples of one file, each a Split named by its file.

        Example:
            [part.source for part in split.parts()]  # ["train-0.csv", "train-1.csv"]
        """
        runs, start = [], 0
        for i in range(1, len(self) + 1):
            if i == len(self) or self.file(i) != self.file(start):
                runs.append(self.subset(range(start, i), self.file(start)))
                start = i
        return runs

    def read(self, i):
        """The encoded bytes of image `i`."""
        return self.contents[i] if self.contents is not None else files.read_bytes(self.paths[i])

    def sources(self):
        """(per image: its path or its bytes, a TF function of one of them -> encoded bytes),
        for tf.data."""
        import tensorflow as tf

        if self.contents is not None:
            return self.contents, tf.identity
        return self.paths, tf.io.read_file

    def where(self, i):
        """The file (and listing line or record) of example `i`, for messages."""
        if not self.lines[i]:
            return self.paths[i]
        if self.contents is not None:
            return f"{self.file(i)}: record {self.lines[i]}"
        return f"{self.file(i)}:{self.lines[i]} ({self.paths[i]})"


def join(parts, source):
    """One Split of `parts` in order, named `source`, each example keeping its file.

    Example:
        join([read_listing("a.csv", "--train_data"), read_listing("b.csv", "--train_data")],
             "a.csv,b.csv").file(0)  # "a.csv"
    """
    gather = lambda name: [v for part in parts for v in getattr(part, name)]
    contents = None
    if parts[0].contents is not None:
        contents = gather("contents")
    return Split(source, gather("paths"), gather("labels"), gather("lines"), contents,
                 [part.file(i) for part in parts for i in range(len(part))],
                 {name: [v for part in parts for v in part.side[name]] for name in parts[0].side})


@dataclasses.dataclass(frozen=True)
class ImageFormat:
    """How images become model inputs: the backbone's input size and resizing rule.

    `scale` and `offset` (per channel) map 0..255 pixels to what the backbone was
    trained on: `pixels * scale + offset`.
    """

    height: int
    width: int
    scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = True
    antialias: bool = False

    @property
    def cache_bytes_per_image(self):
        return self.height * self.width * 3


def is_image_file(name):
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def read_split(spec, flag, image_column="path", label_column="label", with_labels=True,
               tfds_data_dir=None, side=()):
    """Reads a folder, a listing, TFRecord files or a TFDS split (`tfds:NAME[/CONFIG][:SPLIT]`
    in `tfds_data_dir`, tfds_source.py) into a Split (labels are "" when `with_labels` is
    False). Listings and TFRecord files may be given as a pattern or a comma-separated list.
    `side` names columns (features) read beside the image into `Split.side`; a folder or
    image files have none and are refused with them.

    Unlabelled inputs (predict) may also be image files (one, a pattern or a list) or a
    folder of images in any layout.
    """
    if tfds_source.is_tfds(spec):
        return Split(**tfds_source.read_images(spec, image_column, label_column, flag,
                                               tfds_data_dir, with_labels, side))
    if streams.is_file_list(spec):
        return _read_files(spec, streams.expand(spec, flag), flag, image_column, label_column,
                           with_labels, side)
    path = spec if files.is_remote(spec) else os.path.expanduser(spec)
    if files.isdir(path):
        _refuse_side(side, spec, flag, "a folder of images")
        return read_folder(path, flag, with_labels)
    if not with_labels and is_image_file(path) and files.isfile(path):
        _refuse_side(side, spec, flag, "an image file")
        return Split(spec, [path], [""], [0])
    if is_image_file(path) and files.isfile(path):
        raise UserError(f"{flag}={spec} is one image; give a folder with one sub-folder per "
                        "label, a .csv/.tsv/.jsonl listing of path,label or TFRecord files.")
    if streams.kind_of(path) == ".tfrecord":
        return read_records(readers.resolve_path(spec, flag), flag, image_column, label_column,
                            with_labels, side)
    return read_listing(spec, flag, image_column, label_column, with_labels, side)


def _refuse_side(side, spec, flag, what):
    if side:
        raise UserError(f"{flag}={spec} is {what}, which has no side columns "
                        f"({', '.join(side)}); give a .csv/.tsv/.jsonl listing (or TFRecord "
                        "files) with those columns beside the image path.")


def _read_files(spec, paths, flag, image_column, label_column, with_labels, side=()):
    """The files of a pattern or list: listings or TFRecord files (or, unlabelled, image
    files), read one by one and joined in order."""
    kinds = {"images" if is_image_file(p) else "TFRecord files"
             if streams.kind_of(p) == ".tfrecord" else "listings" for p in paths}
    if len(kinds) > 1:
        raise UserError(f"{flag}={spec} mixes {' and '.join(sorted(kinds))}; give files of one "
                        "kind.")
    kind = kinds.pop()
    if kind == "images":
        if with_labels:
            raise UserError(f"{flag}={spec} names image files, which carry no label; give a "
                            "folder with one sub-folder per label, listings or TFRecord files.")
        _refuse_side(side, spec, flag, "image files")
        return Split(spec, list(paths), [""] * len(paths), [0] * len(paths))
    read = read_records if kind == "TFRecord files" else read_listing
    return join([read(path, flag, image_column, label_column, with_labels, side)
                 for path in paths], spec)


def read_folder(root, flag, with_labels=True):
    """`root/<label>/<image>` (labelled), or every image under `root` (unlabelled)."""
    if with_labels:
        paths, labels, other = [], [], 0
        for label in sorted(files.listdir(root)):
            folder = os.path.join(root, label)
            if label.startswith(".") or not files.isdir(folder):
                continue
            found, others = _images_below(folder)
            paths += found
            labels += [label] * len(found)
            other += others
        loose = sum(1 for name in files.listdir(root) if is_image_file(name))
        if loose:
            logging.warning("%s: ignored %d images directly in the folder; labelled images go "
                            "in one sub-folder per label.", root, loose)
    else:
        paths, other = _images_below(root)
        labels = [""] * len(paths)
    if other:
        logging.info("%s: ignored %d files that are not %s.", root, other, "/".join(IMAGE_SUFFIXES))
    if not paths:
        layout = "one sub-folder per label holding" if with_labels else "any"
        raise UserError(f"{flag}={root}: no images found; the folder needs {layout} "
                        f"{', '.join(IMAGE_SUFFIXES)} files.")
    return Split(root, paths, labels, [0] * len(paths))


def _images_below(folder):
    """The image files under `folder` (sorted, folder by folder) and how many others there are."""
    paths, other = [], 0
    for directory, subdirs, names in files.walk(folder):
        subdirs.sort()
        for name in sorted(names):
            if is_image_file(name):
                paths.append(os.path.join(directory, name))
            else:
                other += 1
    return paths, other


def read_listing(spec, flag, image_column="path", label_column="label", with_labels=True,
                 side=()):
    """A .csv/.tsv/.jsonl of image paths (relative to the listing) and labels (and the
    `side` columns' cells)."""
    columns = [image_column] + list(side) + ([label_column] if with_labels else [])
    rows = readers.read_rows(spec, columns, flag)
    base = files.dirname(readers.resolve_path(spec, flag))
    paths, labels, lines, missing = [], [], [], []
    cells = {name: [] for name in side}
    for row in rows:
        name = str(row.values[0] if row.values[0] is not None else "").strip()
        if not name:
            raise UserError(f"{spec}:{row.line}: empty image path; fix the row.")
        path = os.path.join(base, name if files.is_remote(base) else os.path.expanduser(name))
        if not files.isfile(path):
            missing.append((row.line, name))
            continue
        paths.append(path)
        labels.append(str(row.values[-1]).strip() if with_labels else "")
        lines.append(row.line)
        for name, value in zip(side, row.values[1:]):
            cells[name].append(value)
    if missing:
        line, name = missing[0]
        raise UserError(
            f"{spec}:{line}: image file {name} does not exist ({len(missing)} listed files are "
            f"missing); image paths are relative to the listing's folder {base or '.'}.")
    if not paths:
        raise UserError(f"{flag}={spec}: the listing names no images; check the file.")
    return Split(spec, paths, labels, lines, side=cells)


def read_records(path, flag, image_column="image", label_column="label", with_labels=True,
                 side=()):
    """A TFRecord file of tf.Example (optionally .gz) as a Split holding the encoded images.

    Args:
        path: the file.
        flag: the data flag, for messages.
        image_column: the bytes feature holding each encoded image (JPEG/PNG/GIF/BMP).
        label_column: the bytes (text) or int64 feature holding each label.
        with_labels: read the labels ("" when False).
        side: features read beside the image (`side_value`; absent: None).
    Every record must hold one value of each feature; the first that does not is refused,
    naming the file and the record's number (1-based).
    """
    import tensorflow as tf

    if path.endswith(".gz"):
        streams.check_gzip([path], flag)  # TensorFlow may stop at a cut gzip stream silently
    records = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
    contents, labels, number = [], [], 0
    cells = {name: [] for name in side}
    try:
        for batch in records.batch(RECORD_BATCH).as_numpy_iterator():
            for record in batch:
                number += 1
                features = _features(record, path, number)
                contents.append(_feature_value(features, image_column, path, number, "image",
                                               "--image_column"))
                if with_labels:
                    labels.append(_feature_value(features, label_column, path, number, "label",
                                                 "--label_column"))
                for name in side:
                    cells[name].append(side_value(features, name, path, number))
    except tf.errors.OpError as error:
        readable = 0  # the records before the failing one (read again, one at a time)
        try:
            for _ in records:
                readable += 1
        except tf.errors.OpError:
            pass
        raise UserError(f"{flag}: {path}: record {readable + 1} cannot be read "
                        f"({_tf_message(error)}); the file is damaged, truncated or not "
                        "TFRecord: copy it again.") from None
    if not contents:
        raise UserError(f"{flag}: {path} holds no record; give TFRecord files of tf.Example.")
    return Split(path, [f"{path}#{i}" for i in range(1, number + 1)],
                 labels if with_labels else [""] * number, list(range(1, number + 1)), contents,
                 side=cells)


def _tf_message(error):
    """The gist of a TensorFlow error, without its function and op decorations."""
    message = error.message.strip().splitlines()[0]
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:.*$", "", message).strip()


def _features(record, path, number):
    import tensorflow as tf

    try:
        return tf.train.Example.FromString(record).features.feature
    except Exception:  # a protobuf DecodeError
        raise UserError(f"{path}: record {number} is not a tf.Example; give TFRecord files of "
                        "tf.Example protos.") from None


def _feature_value(features, column, path, number, what, flag):
    """The one value of feature `column`: bytes for the image, text for a label."""
    if column not in features:
        raise UserError(f"{path}: record {number} has no feature '{column}' (features: "
                        f"{', '.join(sorted(features)) or 'none'}); name the {what} feature "
                        f"with {flag}.")
    feature = features[column]
    kind = feature.WhichOneof("kind")
    allowed = ("bytes_list",) if what == "image" else ("bytes_list", "int64_list")
    values = getattr(feature, kind).value if kind else []
    if kind not in allowed or len(values) != 1:
        want = "encoded image bytes" if what == "image" else "text or an integer"
        held = f"{len(values)} {kind.split('_')[0]} values" if kind else "no value"
        raise UserError(f"{path}: record {number}: feature '{column}' holds {held}, but the "
                        f"{what} must be one value ({want}); fix {flag} or the records.")
    value = values[0]
    if what == "image":
        return value
    if kind == "int64_list":
        return str(value)
    label = value.decode("utf-8", "replace").strip()
    if not label:
        raise UserError(f"{path}: record {number}: the label (feature '{column}') is empty; "
                        "fill it in or drop the record.")
    return label


def side_value(features, name, path, number):
    """The one value of side feature `name` of a tf.Example's `features`: a float (float or
    int64 feature) or a text (bytes), None when absent or empty (a missing value).

    Example:
        side_value(example.features.feature, "price", "train.tfrecord", 3)  # 12.5
    """
    if name not in features:
        return None
    feature = features[name]
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    if len(values) > 1:
        raise UserError(f"{path}: record {number}: feature '{name}' holds {len(values)} values, "
                        "but a side column holds one value (or none: missing); fix the records.")
    if not values:
        return None
    if kind == "bytes_list":
        return values[0].decode("utf-8", "replace")
    return float(values[0])


def decode(contents):
    """Image bytes (JPEG, PNG, GIF: first frame, BMP) -> uint8 [height, width, 3]."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize(image, image_format):
    """uint8/float [h, w, 3] -> float32 [height, width, 3] with whole values in 0..255.

    keras.layers.Resizing as the backbone's converter sets it up (centre crop to the
    target aspect ratio, then interpolation), rounded so that cached uint8 images and the
    serving graph agree exactly.
    """
    import keras
    import tensorflow as tf

    resizing = keras.layers.Resizing(
        image_format.height, image_format.width, interpolation=image_format.interpolation,
        crop_to_aspect_ratio=image_format.crop_to_aspect_ratio, antialias=image_format.antialias,
        dtype="float32")
    return tf.round(tf.clip_by_value(resizing(tf.cast(image, tf.float32)), 0.0, 255.0))


def load_image(contents, image_format):
    """Image bytes -> float32 [height, width, 3] model input (0..255 values)."""
    return resize(decode(contents), image_format)


def check_images(split, strict, flag):
    """Decodes every file once; returns `split` without the files that do not decode.

    Undecodable files are counted and the first few named in the log, or, with
    `strict`, refused in one error.
    """
    import tensorflow as tf

    sources, read = split.sources()

    def probe(index, source):
        image = decode(read(source))
        return index, tf.shape(image)[0] * tf.shape(image)[1] > 0

    dataset = (tf.data.Dataset.from_tensor_slices((np.arange(len(split)), sources))
               .map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .batch(DECODE_BATCH))
    good = np.zeros(len(split), bool)
    for indices, non_empty in dataset.as_numpy_iterator():
        good[indices[non_empty]] = True
    bad = np.flatnonzero(~good)
    if not len(bad):
        return split
    names = ", ".join(split.where(i) for i in bad[:SHOWN_BAD_FILES])
    if strict or len(bad) == len(split):
        raise UserError(
            f"{flag}={split.source}: {len(bad)} of {len(split)} files are not decodable "
            f"JPEG/PNG/GIF/BMP images ({names}{', ...' if len(bad) > SHOWN_BAD_FILES else ''}); "
            "remove or replace them" + (", or drop --strict_images to skip them." if strict else "."))
    logging.warning("%s: skipped %d of %d files that are not decodable images: %s%s",
                    split.source, len(bad), len(split), names,
                    ", ..." if len(bad) > SHOWN_BAD_FILES else "")
    return split.subset(np.flatnonzero(good).tolist(), split.source)


def image_dataset(split, image_format, extra=None, cache=None):
    """Per-example dicts {"images": uint8 [height, width, 3], **extra}, in split order.

    Files are read, decoded and resized in parallel; the result is cached in memory when
    it fits in CACHE_BYTES (or as `cache` says), so later passes skip decoding.
    """
    import tensorflow as tf

    sources, read = split.sources()
    data = {"source": list(sources)}
    data.update(extra or {})

    def load(element):
        element = dict(element)
        image = load_image(read(element.pop("source")), image_format)
        element["images"] = tf.cast(image, tf.uint8)
        return element

    dataset = (tf.data.Dataset.from_tensor_slices(data)
               .map(load, num_parallel_calls=tf.data.AUTOTUNE)
               .ignore_errors())  # a file changed since check_images: skip, never crash mid-epoch
    if cache is None:
        cache = len(split) * image_format.cache_bytes_per_image <= CACHE_BYTES
    return dataset.cache() if cache else dataset


def batches(examples, batch_size, label_key="labels", shuffle_seed=None, repeat=False,
            drop_remainder=False, inputs=None):
    """(float32 images, examples[label_key]) batches of `image_dataset` examples, or
    (inputs(batch, float32 images), examples[label_key]) with `inputs` (e.g. the images
    and the encoded side columns of the batch, a dict).

    Shuffling draws from a buffer of at most SHUFFLE_BUFFER images (memory): order the
    split randomly first (`permutation`) so that the buffer mixes every class.
    """
    import tensorflow as tf

    if shuffle_seed is not None:
        examples = examples.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        examples = examples.repeat()
    model_inputs = inputs or (lambda batch, images: images)
    return (examples.batch(batch_size, drop_remainder=drop_remainder)
            .map(lambda batch: (model_inputs(batch, tf.cast(batch["images"], tf.float32)),
                                batch[label_key]),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def permutation(size, seed):
    """A seeded random order of `size` examples (the same for every run with this seed)."""
    return np.random.default_rng(seed).permutation(size)
