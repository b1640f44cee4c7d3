"""A student cut from a teacher's backbone: K of its transformer layers, same width.

Works for keras-hub encoders configured by `num_layers` whose blocks are the layers
`transformer_layer_<i>` (BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ELECTRA ...).
`every_other` keeps layers spread evenly up to the top one (6 -> 3: the 2nd, 4th and
6th), `bottom` the first K. Embeddings, the pooler and the task head are copied as
they are.

Example:
    student = cut_model(model, 3, "every_other", lambda small: build_head(cfg, small, 2))
    copy_weights(teacher_model, student, "every_other")
"""

from tfimitate.errors import UserError

BLOCK_PREFIX = "transformer_layer_"


def kept_layers(total, keep, choice):
    """Indices of the `keep` layers out of `total` that a cut student keeps.

    Example:
        kept_layers(6, 3, "every_other")  # [1, 3, 5]
        kept_layers(6, 3, "bottom")       # [0, 1, 2]
    """
    if choice == "bottom":
        return list(range(keep))
    return [int((i + 1) * total / keep + 0.5) - 1 for i in range(keep)]


def find_backbone(model):
    """The keras-hub Backbone inside a task model."""
    import keras_hub

    for layer in model.layers:
        if isinstance(layer, keras_hub.models.Backbone):
            return layer
    raise UserError("--student_layers: the model has no keras-hub backbone to cut.")


def num_layers(model):
    """How many transformer layers the model's backbone has."""
    backbone = find_backbone(model)
    total = backbone.get_config().get("num_layers")
    if not isinstance(total, int) or not backbone.layers or not any(
            layer.name.startswith(BLOCK_PREFIX) for layer in backbone.layers):
        raise UserError(f"--student_layers: the backbone {type(backbone).__name__} has no "
                        f"num_layers/{BLOCK_PREFIX}<i> layers to cut; use another student --backbone.")
    return total


def cut_model(model, keep, choice, rebuild):
    """A copy of `model` with `keep` of its backbone's layers; `rebuild(backbone)` puts
    the task's head on the smaller backbone. Weights are copied from `model`."""
    total = num_layers(model)
    if keep >= total:
        raise UserError(f"--student_layers={keep}: the backbone has only {total} layers; "
                        "choose fewer.")
    backbone = find_backbone(model)
    small = type(backbone).from_config(dict(backbone.get_config(), num_layers=keep))
    student = rebuild(small)
    copy_weights(model, student, choice)
    return student


def copy_weights(source, target, choice):
    """Sets `target` (a cut model) to `source`'s weights: its kept layers, embeddings,
    pooler and head."""
    kept = kept_layers(num_layers(source), num_layers(target), choice)
    source_backbone, target_backbone = find_backbone(source), find_backbone(target)
    for layer in target_backbone.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name.startswith(BLOCK_PREFIX):
            name = f"{BLOCK_PREFIX}{kept[int(name[len(BLOCK_PREFIX):])]}"
        layer.set_weights(source_backbone.get_layer(name).get_weights())
    for layer in target.layers:
        if layer is not target_backbone and layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
