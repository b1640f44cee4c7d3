"""Image classification by transfer: one label per image, from image files to TF Serving.

Data: a folder with one sub-folder per label, a .csv/.tsv/.jsonl listing of
`--image_column` (paths relative to the listing) and `--label_column`, TFRecord files of
tf.Example whose `--image_column` bytes feature holds the encoded image (listings and
TFRecord files also as a pattern or a comma-separated list; tfimitate/data/images.py), or
a TFDS split with an Image and a label feature (tfimitate/data/tfds_source.py).
Side features (`--numeric_columns`, `--categorical_columns`: tasks/side_features.py) are
columns of a listing, features of the tf.Examples or of the TFDS split; they are encoded and
joined to the pooled image features before the head (model inputs {"images",
"side_features"}), and served as raw values beside `image_bytes`.
Model: an image backbone (a keras-hub image preset or a Keras model file cut at
`--backbone_layer`, see backbones.py) behind a rescaling layer that maps 0..255 pixels to
what the backbone was trained on, then pooling, dropout and float32 logits. Metrics: those of text classification plus top-5 accuracy (more than 5
classes) and a grid of misclassified images. Serving: `serving_default` takes encoded
images (`image_bytes`, JPEG/PNG/GIF/BMP) and decodes, resizes and rescales them in the
graph.

Example:
    task = ImageClassification()
    data = task.load_data(cfg)
    image_format = task.make_preprocessor(cfg)     # e.g. 96x96, scale 1/127.5, offset -1
    model = task.build_head(cfg, backbones.load_backbone(cfg.backbone), len(data.labels))
"""

import dataclasses
import functools
import json

import numpy as np

from tfimitate import backbones, options, reports
from tfimitate.data import images
from tfimitate.errors import UserError
from tfimitate.tasks import common, side_features
from tfimitate.tasks.classification import ClassificationTask

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
# Serving examples are real files: at most this many bytes of them (large photos).
SERVING_EXAMPLE_BYTES = 4 << 20


class ImageClassification(ClassificationTask):
    """Image classification: the images' side of the classification story (see the module)."""

    NAME = "image_classification"
    OPTIONS = (
        options.string(
            "image_column", "path",
            "image_classification listings (.csv/.tsv/.jsonl): column holding the image path, "
            "relative to the listing's folder (a name or a 0-based index); TFRecord files: the "
            "bytes feature holding the encoded image; tfds: inputs: the Image feature's key."),
        options.boolean(
            "strict_images", False,
            "image_classification: stop with an error on files that are not decodable images "
            "instead of skipping them (they are counted and named in the log either way)."),
        options.string(
            "backbone_layer", None,
            "With a Keras model file as --backbone (.keras/.h5): the layer whose output feeds the "
            "new head (default: the last feature/pooling layer before the model's classifier)."),
        options.integer(
            "image_size", 0,
            "image_classification: side of the square images the model sees (0: the backbone's "
            "own input size). Smaller is much faster on CPU.", lower=0),
        options.choice(
            "image_normalization", "auto", ["auto", "raw", "unit", "symmetric", "imagenet"],
            "image_classification: how 0..255 pixels are scaled for the backbone. auto: the "
            "keras-hub preset's image converter (a Keras model file must contain a Rescaling "
            "layer); raw: 0..255; unit: 0..1; symmetric: -1..1; imagenet: ImageNet mean/std."),
    )
    RESUME_FIELDS = ("image_column", "label_column", "backbone_layer", "image_size",
                     "image_normalization", "numeric_columns", "categorical_columns")
    INPUTS = ("images",)
    # Transfer learning's recipe, chosen on Fashion-MNIST (80 steps, 64x64; the defaults
    # benchmark checks it on other images): a new head learns at a head's rate, a pretrained
    # backbone is fine-tuned late, slowly, with its BatchNorm statistics kept, and only if that
    # helps. Test accuracy: head at 1e-3 66.7%, at 3e-3 71.8% (80 steps); 60 head steps then
    # 20 fine-tuning steps at 1e-4 with BatchNorm training 63.5% (the phase dropped the eval
    # score from 0.68 to 0.44), with BatchNorm frozen 68.0% (0.68 -> 0.71).
    # A choice of the user's own makes the entries about it step aside: their frozen phase,
    # or another way of choosing which weights train.
    _OWN_FROZEN_PHASE = ("freeze_backbone_steps", "freeze_backbone_fraction", "fine_tune_layers")
    _OWN_TRAINABLE_WEIGHTS = ("freeze", "unfreeze_every_steps", "lora_rank")
    _OWN_CHOICE = _OWN_FROZEN_PHASE + _OWN_TRAINABLE_WEIGHTS
    RECIPE = (
        options.Recipe("learning_rate", 3e-3,
                       "a new head on a frozen backbone learns at a head's rate",
                       unless=_OWN_TRAINABLE_WEIGHTS),
        options.Recipe("freeze_backbone_fraction", 0.75,
                       "the head trains alone for the first 3/4 of the steps, then the "
                       "backbone is fine-tuned", unless=_OWN_CHOICE),
        options.Recipe("fine_tune_learning_rate", 1e-4,
                       "a pretrained backbone is fine-tuned at a backbone's rate",
                       unless=_OWN_CHOICE),
        options.Recipe("fine_tune_batchnorm", False,
                       "BatchNorm statistics of a few small batches of new images would replace "
                       "ImageNet's", unless=_OWN_CHOICE),
        options.Recipe("keep_best_phase", True,
                       "fine-tuning the backbone is kept only if it raises the eval score",
                       unless=_OWN_CHOICE + ("early_stopping_patience",)),
    )
    ONE_LABEL_ADVICE = " (one sub-folder per label, or check --label_column)"

    def validate(self, cfg):
        """Flags this task cannot train with, refused before any work (--image_augment is
        checked by its technique)."""
        super().validate(cfg)
        if cfg.image_size and cfg.image_size < 8:
            raise UserError(f"--image_size={cfg.image_size} is too small; give at least 8 pixels "
                            "(or 0 for the backbone's own size).")
        if cfg.backbone_layer and not backbones.is_keras_file(cfg.backbone):
            raise UserError(f"--backbone_layer={cfg.backbone_layer} cuts a Keras model file, but "
                            f"--backbone={cfg.backbone} is not a .keras/.h5 file; drop --backbone_layer.")
        side_features.check_columns(cfg, {"--image_column": cfg.image_column,
                                          "--label_column": cfg.label_column})

    def read(self, path, cfg, flag, with_labels=True):
        """Images of a folder, listings, TFRecord files or a TFDS split: labelled, or any
        images (also image files) to predict; with their side columns (`read_images`)."""
        return read_images(path, cfg, flag, with_labels)

    def load_data(self, cfg):
        """Classification data; with side columns, their preprocessing learned on the
        training split (unless given) as --side_feature_stats."""
        return side_features.with_learned(cfg, super().load_data(cfg))

    def usable(self, split, cfg, flag):
        """The split without files that do not decode (or refused with --strict_images)."""
        return images.check_images(split, cfg.strict_images, flag)

    def line(self, split, i):
        """The listing line or TFRecord record of image `i`, or its path (images found in a
        folder)."""
        if not split.lines[i]:
            return split.paths[i]
        return f"record {split.lines[i]}" if split.contents is not None else split.lines[i]

    def check_labels(self, split, labels, flag, drop_unlisted):
        """ClassificationTask.check_labels file by file, so that a message names the
        example's own listing or TFRecord file, not the pattern."""
        parts = split.parts()
        checked = [super(ImageClassification, self).check_labels(part, labels, flag, drop_unlisted)
                   for part in parts]
        if all(len(a) == len(b) for a, b in zip(checked, parts)):
            return split
        return images.join(checked, split.source)

    def example(self, split, i):
        """{"image": its path, side column: value (None: missing)}."""
        return dict({"image": split.paths[i]}, **side_features.record_values(split.side, i))

    def example_defaults(self, run):
        """A side feature left out of a tf.Example is missing."""
        return side_features.example_defaults(run.cfg)

    def make_preprocessor(self, cfg):
        """The images.ImageFormat of the backbone (input size, resizing, pixel scaling)."""
        return _image_format(cfg.backbone, cfg.backbone_layer, cfg.image_size,
                             cfg.image_normalization)

    def build_head(self, cfg, backbone, num_outputs):
        """Images (float 0..255) -> rescaling -> `backbone` -> pooling -> dropout -> logits."""
        import keras

        fmt = self.make_preprocessor(cfg)
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
        stats = side_features.stats_of(cfg)
        inputs, features = side_features.join({"images": inputs} if stats else inputs,
                                               features, stats)
        logits = common.logits_head(features, cfg, num_outputs, "classifier")
        return keras.Model(inputs, logits, name="image_classifier")

    def train_dataset(self, run, split, extras=None):
        """Endless batches of (model inputs, label ids), reshuffled every pass; decoded
        images are cached at training resolution when they fit in memory. With `extras`
        (one row per image) the labels are {"labels": label ids, **extras}."""
        order = images.permutation(len(split), run.cfg.seed)
        ordered = split.subset(order.tolist(), split.source)
        extras = {name: np.asarray(values)[order] for name, values in (extras or {}).items()}
        labels = self.label_ids(ordered, run.labels)
        return training_batches(run, ordered, {"labels": {"labels": labels, **extras}
                                               if extras else labels})

    def prediction_batches(self, run, split):
        """Batches of (model inputs, example index); decoded images cached per split."""
        return prediction_batches(run, split)

    def probabilities(self, run, split):
        """Class probabilities of every image of `split`, in split order; refused when
        files changed since the run started."""
        result = super().probabilities(run, split)
        missing = np.flatnonzero(np.isnan(result[:, 0]))
        if len(missing):
            raise UserError(f"{split.where(missing[0])} could not be read any more ({len(missing)} "
                            "files changed since the run started); restore the files and re-run.")
        return result

    def score_probabilities(self, split, probabilities, labels):
        """The classification report plus top-5 accuracy (more than 5 classes) and a PNG
        grid of the most confidently misclassified images."""
        from sklearn import metrics as skm

        evaluation = super().score_probabilities(split, probabilities, labels)
        true, predicted = self.label_ids(split, labels), probabilities.argmax(axis=-1)
        metrics, report = dict(evaluation.metrics), evaluation.report
        if len(labels) > TOP_K:
            metrics["top5_accuracy"] = float(skm.top_k_accuracy_score(
                true, probabilities, k=TOP_K, labels=list(range(len(labels)))))
            report += f"\ntop-{TOP_K} accuracy: {metrics['top5_accuracy']:.4f}\n"
        wrong = np.flatnonzero(true != predicted)
        wrong = wrong[np.argsort(-probabilities[wrong].max(axis=-1), kind="stable")]
        wrong = wrong[:MISCLASSIFIED_SHOWN]
        figures = dict(evaluation.figures)
        if len(wrong):
            figures["misclassified"] = functools.partial(
                plot_misclassified, [split.read(i) for i in wrong],
                [labels[true[i]] for i in wrong], [labels[predicted[i]] for i in wrong],
                [float(probabilities[i].max()) for i in wrong])
        return dataclasses.replace(evaluation, metrics=metrics, report=report, figures=figures)

    def serving_signature(self, run):
        """Encoded images `image_bytes` (JPEG/PNG/GIF/BMP), decoded, resized and rescaled
        in the graph by core TF ops (the same function as in tf.data), and the raw side
        columns (float32 or strings) encoded in the graph by side_features.encode."""
        import tensorflow as tf

        image_format = run.preprocessor
        stats = side_features.stats_of(run.cfg)
        decode = lambda inputs: decode_batch(inputs["image_bytes"], image_format)
        return side_features.serving(
            {"image_bytes": tf.TensorSpec([None], tf.string, name="image_bytes")},
            (lambda inputs: {"images": decode(inputs)}) if stats else decode, stats)

    def serving_inputs(self, split, indices):
        """{"image_bytes": [the encoded files], side column: [raw values]}."""
        indices = list(indices)
        return dict({"image_bytes": [split.read(i) for i in indices]},
                    **{name: [values[i] for i in indices] for name, values in split.side.items()})

    def serving_examples(self, split):
        """Up to 32 real image files spread over `split` (folders are sorted by label) as raw
        bytes, at most 4 MB of them."""
        picked = np.unique(np.linspace(0, len(split) - 1, min(common.SERVING_EXAMPLES, len(split)))
                           .round().astype(int))
        kept, total = [], 0
        for i in picked:
            size = len(split.read(i))
            if kept and total + size > SERVING_EXAMPLE_BYTES:
                break
            kept.append(i)
            total += size
        return self.serving_inputs(split, kept)


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


def read_images(path, cfg, flag, with_labels=True):
    """images.read_split of `path` with the run's side columns, parsed (side_features)."""
    split = images.read_split(path, flag, cfg.image_column, cfg.label_column, with_labels,
                              cfg.tfds_data_dir, side=sum(side_features.columns(cfg), ()))
    if not split.side:
        return split
    return dataclasses.replace(split, side=side_features.parse_columns(split.side, cfg, split.where))


def model_inputs(side_feature_stats):
    """images.batches' `inputs` of a run: the images alone, or with side features
    {"images": ..., "side_features": the batch's side columns encoded}."""
    if not side_feature_stats:
        return None
    stats = json.loads(side_feature_stats)

    def inputs(batch, pixels):
        features = {"images": pixels}
        side_features.add_encoded(dict(batch), features, stats)
        return features

    return inputs


def training_batches(run, ordered, labels):
    """Endless batches of (model inputs, labels) of the `ordered` images.Split (and its side
    columns), reshuffled every pass; decoded images are cached when they fit in memory."""
    from tfimitate import runtime

    examples = images.image_dataset(ordered, run.preprocessor, dict(
        labels, **side_features.example_columns(ordered.side)))
    return images.batches(examples, run.cfg.batch_size, shuffle_seed=run.cfg.seed, repeat=True,
                          drop_remainder=runtime.needs_static_shapes(run.strategy),
                          inputs=model_inputs(run.cfg.side_feature_stats))


def prediction_batches(run, split):
    """Batches of (model inputs, example index) of an images.Split."""
    return images.batches(_prediction_examples(split, run.preprocessor), run.cfg.batch_size,
                          label_key="index", inputs=model_inputs(run.cfg.side_feature_stats))


@functools.lru_cache(maxsize=8)
def _prediction_examples(split, image_format):
    """Decoded, cached examples of (image, example index, side columns), built once per split."""
    return images.image_dataset(split, image_format, dict(
        {"index": np.arange(len(split))}, **side_features.example_columns(split.side)))


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


def decode_batch(image_bytes, image_format):
    """tf.string [n] of encoded images -> float32 [n, height, width, 3] model inputs."""
    import tensorflow as tf

    return tf.map_fn(
        lambda contents: images.load_image(contents, image_format), image_bytes,
        fn_output_signature=tf.TensorSpec([image_format.height, image_format.width, 3], tf.float32))
