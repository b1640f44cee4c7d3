"""Load an exported SavedModel into this process, for inference (evaluate --saved_model,
distillation teachers).

TF Serving links TF Text's ops, and our text exports use them (e.g. RegexSplitWithOffsets,
from keras-hub's tokenizers): they are registered here before loading, so every SavedModel
the server can run loads here too. A SavedModel that does not load is one UserError.

Example:
    loaded = load("saved_models/sst2/1", "--saved_model")
    loaded.signatures["serving_default"](text=tf.constant(["a gripping film"]))
"""

from tfimitate.errors import UserError


def load(path, flag):
    """The `tf.saved_model.load`ed SavedModel at `path` (given as `flag`, named in errors)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers TF Text's ops)

    try:
        return tf.saved_model.load(path)
    except Exception as error:  # TensorFlow raises many types for broken SavedModels
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else \
            type(error).__name__
        raise UserError(f"{flag}: the SavedModel at {path} does not load ({reason}); export it "
                        "again or check the path.") from None
