"""Image classification by transfer: one label per image, from image files to TF Serving.

Data: a folder with one sub-folder per label, a .csv/.tsv/.jsonl listing of
`--image_column` (paths relative to the listing) and `--label_column`
(tfimitate/data/images.py), or a TFDS split with an Image and a label feature
(tfimitate/data/tfds_source.py). Model: an image backbone (a keras-hub image preset or a
Keras model file cut at `--backbone_layer`, see backbones.py) behind a rescaling layer
that maps 0..255 pixels to what the backbone was trained on, then pooling, dropout and
float32 logits. Metrics: those of text classification plus top-5 accuracy (more than 5
classes) and a grid of misclassified images. Serving: `serving_default` takes encoded
images (`image_bytes`, JPEG/PNG/GIF/BMP) and decodes, resizes and rescales them in the
graph.

Example:
    data = load_data(cfg)
    image_format = make_preprocessor(cfg)          # e.g. 96x96, scale 1/127.5, offset -1
    model = build_head(cfg, backbones.load_backbone(cfg.backbone), len(data.labels))
"""

import dataclasses
import functools
import os

import numpy as np

from tfimitate import backbones, reports
from tfimitate.data import images, splits, tfds_source
from tfimitate.errors import UserError
from tfimitate.tasks import base, common

NAME = "image_classification"
RESUME_FIELDS = ("image_column", "label_column", "backbone_layer", "image_size",
                 "image_normalization")
# What its training batches are made of (the techniques it takes: techniques.INPUTS).
INPUTS = ("images",)
# --image_normalization: pixels (0..255) * scale + offset.
NORMALIZATIONS = {
    "raw": ((1.0,) * 3, (0.0,) * 3),
    "unit": ((1 / 255,) * 3, (0.0,) * 3),
    "symmetric": ((1 / 127.5,) * 3, (-1.0,) * 3),
    "imagenet": (tuple(1 / (255 * s) for s in (0.229, 0.224, 0.225)),
                 tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))),
}
# Keras layers that rescale pixels inside a model file (then `auto` feeds 0..255).
RESCALING_LAYERS = ("Rescaling", "Normalization")
TOP_K = 5
MISCLASSIFIED_SHOWN = 25
PREDICT_BATCH = 64
# Serving examples are real files: at most this many bytes of them (large photos).
SERVING_EXAMPLE_BYTES = 4 << 20


def validate(cfg):
    """Flags this task cannot train with, refused before any work."""
    if cfg.labels is not None and len(cfg.labels) < 2:
        raise UserError(f"--labels needs at least two labels for {NAME}.")
    if cfg.image_size and cfg.image_size < 8:
        raise UserError(f"--image_size={cfg.image_size} is too small; give at least 8 pixels "
                        "(or 0 for the backbone's own size).")
    if cfg.backbone_layer and not backbones.is_keras_file(cfg.backbone):
        raise UserError(f"--backbone_layer={cfg.backbone_layer} cuts a Keras model file, but "
                        f"--backbone={cfg.backbone} is not a .keras/.h5 file; drop --backbone_layer.")


def read_file(path, cfg, flag, with_labels=True):
    """Images of a folder, listing or TFDS split: labelled (checked against cfg.labels), or
    any images (also one image file) to predict; undecodable files are
    skipped (or refused with --strict_images)."""
    split = images.read_split(path, flag, cfg.image_column, cfg.label_column, with_labels,
                              cfg.tfds_data_dir)
    if with_labels:
        split = check_labels(split, cfg.labels, flag, cfg.drop_unlisted_labels)
    return images.check_images(split, cfg.strict_images, flag)


def check_labels(split, labels, flag, drop_unlisted):
    """Refuses (or drops) images whose label is not one of `labels`."""
    known = set(labels)
    return common.keep_known_labels(
        split, labels, flag, drop_unlisted,
        lambda i: None if split.labels[i] in known else (split.lines[i] or split.paths[i],
                                                         split.labels[i]),
        advice="add it to --labels")


def load_data(cfg):
    """Reads and checks train/eval/test images; holds out eval images if none are given."""
    train = images.read_split(cfg.train_data, "--train_data", cfg.image_column, cfg.label_column,
                              tfds_data_dir=cfg.tfds_data_dir)
    labels = cfg.labels or tfds_source.class_names(cfg) or tuple(sorted(set(train.labels)))
    for label in labels:
        if not label or "\n" in label:
            raise UserError(f"--labels: label {label!r} is empty or has a line break; rename it.")
    train = check_labels(train, labels, "--train_data", cfg.drop_unlisted_labels)
    if len(labels) < 2:
        raise UserError(
            f"--train_data={cfg.train_data}: only one label ({labels[0]}) in the data; a "
            "classifier needs at least two (one sub-folder per label, or check --label_column).")
    train = images.check_images(train, cfg.strict_images, "--train_data")
    train, evaluation, test = splits.eval_and_test(
        train, cfg.replace(labels=labels), lambda path, flag: read_file(
            path, cfg.replace(labels=labels), flag))
    return splits.Data(train, evaluation, test, tuple(labels))


def make_preprocessor(cfg):
    """The images.ImageFormat of the backbone (input size, resizing, pixel scaling)."""
    return _image_format(cfg.backbone, cfg.backbone_layer, cfg.image_size, cfg.image_normalization)


@functools.lru_cache(maxsize=4)
def _image_format(backbone, backbone_layer, image_size, normalization):
    if backbones.is_keras_file(backbone):
        model = backbones.load_backbone(backbone, layer=backbone_layer)
        height, width = model.input.shape[1:3]
        if normalization == "auto":
            if not any(type(layer).__name__ in RESCALING_LAYERS for layer in _all_layers(model)):
                raise UserError(
                    f"--backbone={backbone}: a Keras model file does not record how it scales "
                    "pixels and this one has no Rescaling layer; set --image_normalization to "
                    "what it was trained on: symmetric (-1..1, keras.applications MobileNet/"
                    "EfficientNet preprocess_input), unit (0..1), imagenet (mean/std) or raw (0..255).")
            normalization = "raw"
        scale, offset = NORMALIZATIONS[normalization]
        fmt = images.ImageFormat(height or 0, width or 0, scale, offset)
    else:
        converter = backbones.load_image_converter(backbone)
        height, width = converter.image_size or (0, 0)
        if normalization == "auto":
            scale = _per_channel(converter.scale, 1.0)
            offset = _per_channel(converter.offset, 0.0)
        else:
            scale, offset = NORMALIZATIONS[normalization]
        fmt = images.ImageFormat(height, width, scale, offset, converter.interpolation,
                                 converter.crop_to_aspect_ratio, converter.antialias)
    if image_size:
        fmt = dataclasses.replace(fmt, height=image_size, width=image_size)
    if not fmt.height or not fmt.width:
        raise UserError(f"--backbone={backbone} takes images of any size; set --image_size.")
    return fmt


def _per_channel(value, default):
    if value is None:
        return (default,) * 3
    values = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (3,))
    return tuple(float(v) for v in values)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def build_head(cfg, backbone, num_outputs):
    """Images (float 0..255) -> rescaling -> `backbone` -> pooling -> dropout -> logits."""
    import keras

    fmt = make_preprocessor(cfg)
    if isinstance(backbone, keras.Model) and not isinstance(backbone.input, (list, dict)):
        backbone = backbones.with_input_size(backbone, fmt.height, fmt.width)
    inputs = keras.Input((fmt.height, fmt.width, 3), name="images")
    pixels = keras.layers.Rescaling(list(fmt.scale), list(fmt.offset), name="rescaling")(inputs)
    features = backbone(pixels)
    if isinstance(features, dict):  # keras-hub backbones with several outputs
        features = features.get("pooled_output", next(iter(features.values())))
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    elif len(features.shape) == 3:  # vision transformers: the class token
        features = features[:, 0]
    elif len(features.shape) != 2:
        raise UserError(f"--backbone={cfg.backbone}: its output has shape {features.shape}; "
                        "cut it at a feature map or pooled layer (--backbone_layer).")
    logits = common.logits_head(features, cfg, num_outputs, "classifier")
    return keras.Model(inputs, logits, name="image_classifier")


def example_loss(labels, outputs):
    """Per-example cross-entropy of class ids, or of class distributions (MixUp/CutMix)."""
    import keras

    if labels.dtype.is_floating:
        return keras.losses.categorical_crossentropy(labels, outputs, from_logits=True)
    return keras.losses.sparse_categorical_crossentropy(labels, outputs, from_logits=True)


def label_ids(split, labels):
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[label] for label in split.labels], np.int32)


def train_dataset(run, split, extras=None):
    """Endless batches of (float32 images, label ids), reshuffled every pass; decoded
    images are cached at training resolution when they fit in memory. With `extras`
    (one row per image) the labels are {"labels": label ids, **extras}."""
    from tfimitate import runtime

    order = images.permutation(len(split), run.cfg.seed)
    ordered = split.subset(order.tolist(), split.source)
    extras = {name: np.asarray(values)[order] for name, values in (extras or {}).items()}
    labels = label_ids(ordered, run.labels)
    examples = images.image_dataset(ordered, run.preprocessor,
                                    {"labels": {"labels": labels, **extras} if extras else labels})
    return images.batches(examples, run.cfg.batch_size, shuffle_seed=run.cfg.seed, repeat=True,
                          drop_remainder=runtime.needs_static_shapes(run.strategy))


@functools.lru_cache(maxsize=8)
def _prediction_examples(split, image_format):
    """Decoded, cached examples of (image, example index), built once per split."""
    return images.image_dataset(split, image_format, {"index": np.arange(len(split))})


def probabilities(run, split):
    """Class probabilities of every image of `split`, in split order."""
    import tensorflow as tf

    from tfimitate.training import inference

    dataset = images.batches(_prediction_examples(split, run.preprocessor), run.cfg.batch_size,
                             label_key="index")
    result = np.full([len(split), len(run.labels)], np.nan, np.float32)
    for logits, index in inference.collect_outputs(run.model, dataset, run.strategy):
        result[index] = tf.nn.softmax(logits).numpy()
    missing = np.flatnonzero(np.isnan(result[:, 0]))
    if len(missing):
        raise UserError(f"{split.where(missing[0])} could not be read any more ({len(missing)} "
                        "files changed since the run started); restore the files and re-run.")
    return result


def evaluate(run, split):
    """Accuracy (the score), macro F1, per-class scores, confusion matrix, top-5 accuracy
    (more than 5 classes) and a PNG grid of the most confidently misclassified images."""
    from sklearn import metrics as skm

    from tfimitate.tasks.text_classification import classification_evaluation

    probs = probabilities(run, split)
    true, predicted = label_ids(split, run.labels), probs.argmax(axis=-1)
    evaluation = classification_evaluation(true, predicted, run.labels,
                                           os.path.basename(os.path.normpath(split.source)))
    metrics, report = dict(evaluation.metrics), evaluation.report
    if len(run.labels) > TOP_K:
        metrics["top5_accuracy"] = float(skm.top_k_accuracy_score(
            true, probs, k=TOP_K, labels=list(range(len(run.labels)))))
        report += f"\ntop-{TOP_K} accuracy: {metrics['top5_accuracy']:.4f}\n"
    wrong = np.flatnonzero(true != predicted)
    wrong = wrong[np.argsort(-probs[wrong].max(axis=-1), kind="stable")][:MISCLASSIFIED_SHOWN]
    figures = dict(evaluation.figures)
    if len(wrong):
        figures["misclassified"] = functools.partial(
            plot_misclassified, [split.read(i) for i in wrong],
            [run.labels[true[i]] for i in wrong], [run.labels[predicted[i]] for i in wrong],
            [float(probs[i].max()) for i in wrong])
    return base.Evaluation(evaluation.score, metrics, report, figures,
                           _records(split, predicted, run.labels))


def _records(split, predicted, labels):
    return [{"image": path, "label": label, "predicted": labels[int(p)]}
            for path, label, p in zip(split.paths, split.labels, predicted)]


def evaluate_saved_model(saved_model, split, labels):
    """Accuracy and the rest of the classification metrics of an exported image classifier,
    from the labels its `serving_default` signature gives the split's image files."""
    import tensorflow as tf

    from tfimitate.tasks.text_classification import classification_evaluation

    serve = saved_model.signatures["serving_default"]
    index = {label: i for i, label in enumerate(labels)}
    predicted = []
    for start in range(0, len(split), PREDICT_BATCH):
        contents = [split.read(i) for i in range(start, min(start + PREDICT_BATCH, len(split)))]
        for label in serve(image_bytes=tf.constant(contents))["label"].numpy():
            if label.decode() not in index:
                raise UserError(f"--saved_model predicts the label '{label.decode()}', which is "
                                f"not one of the run's labels ({', '.join(labels)}); give the "
                                "--model_dir of a run with the same labels.")
            predicted.append(index[label.decode()])
    evaluation = classification_evaluation(label_ids(split, labels), np.array(predicted), labels,
                                           os.path.basename(os.path.normpath(split.source)))
    return dataclasses.replace(evaluation, predictions=_records(split, predicted, labels))


def perturbed(split, change):
    """Images have no words to perturb."""
    del split, change
    raise UserError(f"--perturb changes the words of texts; --task={NAME} reads images, so "
                    "evaluate it without --perturb.")


def plot_misclassified(contents, true, predicted, confidence, path):
    """Saves a grid of images (encoded bytes) with their true and predicted labels as a PNG."""
    plt = reports.pyplot()

    columns = min(5, len(contents))
    rows = -(-len(contents) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, want, got, p in zip(axes.flat, contents, true, predicted, confidence):
        axis.imshow(images.decode(image).numpy())
        axis.set_title(f"true: {want}\npredicted: {got} ({p:.0%})", fontsize=8)
    figure.suptitle("Most confidently misclassified images")
    reports.save_png(figure, path)


def predict(run, split):
    """One record per image: its label and the probability of each class."""
    labels = run.labels
    return [{"image": file, "label": labels[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {label: float(v) for label, v in zip(labels, p)}}
            for file, p in zip(split.paths, probabilities(run, split))]


def serving_module(run, labels_file):
    """The tf.Module to save: `serving_default` classifies encoded images."""
    return _server_class()(run.model, run.preprocessor, labels_file)


@functools.lru_cache(maxsize=1)
def _server_class():
    import tensorflow as tf

    from tfimitate.serving.module import ServingModule

    class ImageClassifierServer(ServingModule):
        """What TF Serving runs: encoded images in, labels and probabilities out.

        Decoding (JPEG/PNG/GIF/BMP), resizing and rescaling are core TF ops in the graph;
        the label vocabulary is an asset file read into a lookup table.
        """

        def __init__(self, model, image_format, labels_file):
            super().__init__(model=model)
            self.image_format = image_format
            self.labels_asset = tf.saved_model.Asset(labels_file)
            self.label_table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                    tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
            self.serve = tf.function(
                self._classify,
                input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])

        def serving_signatures(self):
            """Signature name -> tf.function, as saved in the SavedModel."""
            return {"serving_default": self.serve}

        def _classify(self, image_bytes):
            pixels = decode_batch(image_bytes, self.image_format)
            probs = tf.nn.softmax(tf.cast(self.model(pixels, training=False), tf.float32), axis=-1)
            class_id = tf.argmax(probs, axis=-1, output_type=tf.int64)
            return {"label": self.label_table.lookup(class_id), "class_id": class_id,
                    "probabilities": probs}

    return ImageClassifierServer


def decode_batch(image_bytes, image_format):
    """tf.string [n] of encoded images -> float32 [n, height, width, 3] model inputs."""
    import tensorflow as tf

    return tf.map_fn(
        lambda contents: images.load_image(contents, image_format), image_bytes,
        fn_output_signature=tf.TensorSpec([image_format.height, image_format.width, 3], tf.float32))


def serving_examples(split):
    """Up to 32 real image files spread over `split` (folders are sorted by label) as raw
    bytes, at most 4 MB of them."""
    picked = np.unique(np.linspace(0, len(split) - 1, min(common.SERVING_EXAMPLES, len(split)))
                       .round().astype(int))
    examples, total = [], 0
    for i in picked:
        contents = split.read(i)
        if examples and total + len(contents) > SERVING_EXAMPLE_BYTES:
            break
        examples.append(contents)
        total += len(contents)
    return {"image_bytes": examples}


def parity(run, examples):
    """`serving_default`'s inputs and the in-memory model's probabilities for them
    (decoded by the same function as in tf.data)."""
    import tensorflow as tf

    inputs = {"image_bytes": tf.constant(examples["image_bytes"])}
    logits = run.model(decode_batch(inputs["image_bytes"], run.preprocessor), training=False)
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1).numpy()
    return {"serving_default": (inputs, {"probabilities": probs})}
