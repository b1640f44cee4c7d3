"""Test helpers for images: small image files in every format, a tiny random keras-hub
image preset and a tiny Keras model file.

Example:
    root = write_image_folder(tmp_path / "train", {"light": 6, "dark": 6})
    preset = tiny_image_preset(tmp_path)          # EfficientNet, 1 block, 32x32 inputs
    model_file = tiny_keras_model_file(tmp_path)  # Conv -> pooling -> Dense, 24x24
"""

import os

import numpy as np

import tfimitate  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

# (suffix, PIL mode, PIL format): the layouts users' files come in.
FORMATS = [(".png", "RGB", "PNG"), (".jpg", "L", "JPEG"), (".png", "RGBA", "PNG"),
           (".png", "P", "PNG"), (".gif", "P", "GIF"), (".bmp", "RGB", "BMP"),
           (".jpeg", "RGB", "JPEG"), (".png", "L", "PNG")]


def image_array(label_index, i, size=(20, 28)):
    """A uint8 RGB image whose brightness and stripes depend on the label (learnable)."""
    rng = np.random.default_rng(1000 * label_index + i)
    height, width = size
    base = 60 + 130 * (label_index % 2)
    image = np.full((height, width, 3), base, np.float64)
    if label_index % 2:
        image[::4] = 255 - base
    else:
        image[:, ::4] = 255 - base
    image += rng.normal(0, 12, image.shape)
    image[..., label_index % 3] += 40
    return np.clip(image, 0, 255).astype(np.uint8)


def save_image(array, path, mode="RGB", image_format="PNG"):
    """Writes `array` (RGB uint8) to `path` converted to a PIL `mode` (L, RGBA, P ...)."""
    from PIL import Image

    image = Image.fromarray(array, "RGB")
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=image_format)
    return path


def write_image_folder(root, counts, sizes=((20, 28), (33, 17), (24, 24))):
    """`root/<label>/<i><suffix>` images of every format; `counts` maps label -> how many."""
    for label_index, (label, count) in enumerate(sorted(counts.items())):
        os.makedirs(os.path.join(str(root), label), exist_ok=True)
        for i in range(count):
            suffix, mode, image_format = FORMATS[i % len(FORMATS)]
            array = image_array(label_index, i, sizes[i % len(sizes)])
            save_image(array, os.path.join(str(root), label, f"{i:03d}{suffix}"), mode, image_format)
    return str(root)


def tiny_image_preset(directory, size=32):
    """A random 1-block EfficientNet with a 32x32 image converter, saved as a keras-hub preset."""
    import keras_hub

    path = os.path.join(str(directory), f"tiny_efficientnet_{size}")
    if os.path.isdir(path):
        return path
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0], stackwise_depth_coefficients=[1.0],
        stackwise_kernel_sizes=[3], stackwise_num_repeats=[1], stackwise_input_filters=[8],
        stackwise_output_filters=[8], stackwise_expansion_ratios=[1],
        stackwise_squeeze_and_excite_ratios=[0], stackwise_strides=[2],
        stackwise_block_types=["v1"], stackwise_force_input_filters=[0],
        include_stem_padding=True, use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True, stem_conv_padding="valid", batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-5, activation="relu6", depth_divisor=8, min_depth=None,
        dropout=0, input_shape=(None, None, 3), projection_activation=None)
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=(size, size), scale=1 / 127.5, offset=-1.0)
    backbone.save_to_preset(path)
    converter.save_to_preset(path)
    return path


def tiny_keras_model_file(directory, name="tiny.keras", size=24, rescaling=True):
    """A small image classifier saved by Keras: [Rescaling] Conv BN ReLU, pooling, Dropout, Dense."""
    import keras

    path = os.path.join(str(directory), name)
    if os.path.isfile(path):
        return path
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs) if rescaling else inputs
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs, name="tiny_classifier").save(path)
    return path


def png_bytes(label_index, i, size=(20, 28)):
    """The PNG encoding of `image_array(label_index, i, size)`."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image_array(label_index, i, size), "RGB").save(out, format="PNG")
    return out.getvalue()


def write_tfrecord(path, examples):
    """Writes tf.Example records (GZIP for a .gz path); each example maps a feature name to
    bytes, str, int or float, or a list of them. Returns `path`."""
    import tensorflow as tf

    def feature(value):
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, (bytes, str)) for v in values):
            return tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in values]))
        if all(isinstance(v, int) for v in values):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    options = tf.io.TFRecordOptions(compression_type="GZIP" if str(path).endswith(".gz") else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for example in examples:
            features = tf.train.Features(feature={k: feature(v) for k, v in example.items()})
            writer.write(tf.train.Example(features=features).SerializeToString())
    return str(path)
