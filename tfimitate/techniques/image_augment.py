"""Image augmentation for training batches (a technique): Keras 3 preprocessing layers,
seeded, applied to the training data only (`--image_augment=flip,rotation:0.1,mixup:0.2`).

Each item is `name[:strength]`; the layers run in the order given on float 0..255 image
batches. MixUp and CutMix mix labels too, so the labels become class distributions
(the image task's loss takes both). The augmenting map runs sequentially from a seeded
state, so a run and its resumed copy (which skips the batches already trained on) draw the
same transformations.

Example:
    technique = from_config(cfg.replace(image_augment=("flip", "zoom:0.1")))
    train_ds = technique.adapt_dataset(train_ds, cfg)
"""

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.names(
        "image_augment", None,
        "image_classification: training-only, seeded augmentation with Keras preprocessing "
        "layers, as name[:strength] items: flip, rotation:0.1, zoom:0.1, translation:0.1, "
        "crop:0.1, contrast:0.2, brightness:0.2, mixup:0.2, cutmix:1.0."),
)

# name -> (default strength, what the strength means)
AUGMENTATIONS = {
    "flip": (None, "no strength: random horizontal flips"),
    "rotation": (0.1, "fraction of a full turn, both ways"),
    "zoom": (0.1, "fraction of the size, in and out"),
    "translation": (0.1, "fraction of the size, each direction"),
    "crop": (0.1, "fraction of each side cropped away, then resized back"),
    "contrast": (0.2, "contrast factor range"),
    "brightness": (0.2, "fraction of the value range"),
    "mixup": (0.2, "alpha of the Beta distribution"),
    "cutmix": (1.0, "alpha of the Beta distribution"),
}
LABEL_MIXING = ("mixup", "cutmix")


def parse(items):
    """[(name, strength)] from `--image_augment` items; UserError for unknown ones."""
    parsed = []
    for item in items or ():
        name, _, value = item.strip().partition(":")
        if name not in AUGMENTATIONS:
            raise UserError(f"--image_augment: unknown augmentation '{name}'; choose from "
                            f"{', '.join(AUGMENTATIONS)} (as name or name:strength).")
        default, meaning = AUGMENTATIONS[name]
        if value and default is None:
            raise UserError(f"--image_augment: {name} takes no strength; write just '{name}'.")
        try:
            strength = float(value) if value else default
        except ValueError:
            raise UserError(f"--image_augment: '{item}' needs a number after ':' ({meaning}).") from None
        if strength is not None and not 0 < strength <= (10 if name in LABEL_MIXING else 1):
            raise UserError(f"--image_augment: {item} is out of range ({meaning}; "
                            f"{'0 < alpha <= 10' if name in LABEL_MIXING else '0 < strength <= 1'}).")
        parsed.append((name, strength))
    return parsed


def make_layers(augmentations, height, width, seed):
    """The Keras preprocessing layers of `augmentations` for images of height x width."""
    import keras

    layers = []
    for i, (name, s) in enumerate(augmentations):
        layer_seed = seed + 1009 * (i + 1)
        if name == "flip":
            layers.append(keras.layers.RandomFlip("horizontal", seed=layer_seed))
        elif name == "rotation":
            layers.append(keras.layers.RandomRotation(s, fill_mode="reflect", seed=layer_seed))
        elif name == "zoom":
            layers.append(keras.layers.RandomZoom(s, fill_mode="reflect", seed=layer_seed))
        elif name == "translation":
            layers.append(keras.layers.RandomTranslation(s, s, fill_mode="reflect", seed=layer_seed))
        elif name == "crop":
            layers.append(keras.layers.RandomCrop(max(1, round(height * (1 - s))),
                                                  max(1, round(width * (1 - s))), seed=layer_seed))
            layers.append(keras.layers.Resizing(height, width))
        elif name == "contrast":
            layers.append(keras.layers.RandomContrast(s, value_range=(0, 255), seed=layer_seed))
        elif name == "brightness":
            layers.append(keras.layers.RandomBrightness(s, value_range=(0, 255), seed=layer_seed))
        elif name == "mixup":
            layers.append(keras.layers.MixUp(alpha=s, seed=layer_seed))
        elif name == "cutmix":
            layers.append(keras.layers.CutMix(factor=s, seed=layer_seed))
    return layers


class ImageAugment(Technique):
    """Augments (images [batch, height, width, 3], class ids) training batches."""

    name, flag, order = "image_augment", "--image_augment", 90
    inputs = {"images"}
    claims = {"changed_inputs"}

    def __init__(self, augmentations):
        self.augmentations = augmentations

    def adapt_dataset(self, dataset, cfg):
        import tensorflow as tf

        images, _ = dataset.element_spec
        if isinstance(images, dict):  # images with side features (tasks/side_features.py)
            images = images["images"]
        height, width = images.shape[1], images.shape[2]
        layers = make_layers(self.augmentations, height, width, cfg.seed)
        mixing = any(name in LABEL_MIXING for name, _ in self.augmentations)
        num_classes = len(cfg.labels)

        def augment(inputs, labels):
            data = {"images": inputs["images"] if isinstance(inputs, dict) else inputs}
            if mixing:
                data["labels"] = tf.one_hot(labels, num_classes)
            for layer in layers:
                data = layer(data, training=True)
            images = tf.ensure_shape(tf.clip_by_value(data["images"], 0.0, 255.0),
                                     [None, height, width, 3])
            if isinstance(inputs, dict):
                images = dict(inputs, images=images)
            return images, data["labels"] if mixing else labels

        # Sequential on purpose: the layers' seed state advances in batch order.
        return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


def from_config(cfg):
    """ImageAugment when --image_augment names augmentations, else None."""
    augmentations = parse(cfg.image_augment)
    return ImageAugment(augmentations) if augmentations else None
