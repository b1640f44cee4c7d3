"""A student cut from a teacher's backbone: K of its numbered layers, same width.

Works for keras-hub encoders configured by `num_layers` whose blocks are numbered layers
(techniques/parts.py: `transformer_layer_<i>` in BERT, DistilBERT, RoBERTa, XLM-RoBERTa,
ELECTRA ...). `every_other` keeps layers spread evenly up to the top one (6 -> 3: the
2nd, 4th and 6th), `bottom` the first K. Embeddings, the pooler and the task head are
copied as they are.

Example:
    student = cut_model(model, 3, "every_other", lambda small: build_head(cfg, small, 2))
    copy_weights(teacher_model, student, "every_other")
"""

from tfimitate.errors import UserError
from tfimitate.techniques import parts

FLAG = "--student_layers"


def kept_layers(total, keep, choice):
    """Indices of the `keep` layers out of `total` that a cut student keeps.

    Example:
        kept_layers(6, 3, "every_other")  # [1, 3, 5]
        kept_layers(6, 3, "bottom")       # [0, 1, 2]
    """
    if choice == "bottom":
        return list(range(keep))
    return [int((i + 1) * total / keep + 0.5) - 1 for i in range(keep)]


def cuttable(model):
    """The parts.Parts of the model's backbone, if it can be cut (UserError if not)."""
    found = parts.Parts(model, FLAG)
    if found.backbone.get_config().get("num_layers") != len(found.layers):
        raise UserError(f"{FLAG}: the backbone {type(found.backbone).__name__} is not built "
                        "from num_layers numbered layers, so it cannot be cut; use another "
                        "student --backbone.")
    return found


def num_layers(model):
    """How many numbered (transformer) layers the model's backbone has."""
    return len(cuttable(model).layers)


def cut_model(model, keep, choice, rebuild):
    """A copy of `model` with `keep` of its backbone's layers; `rebuild(backbone)` puts
    the task's head on the smaller backbone. Weights are copied from `model`."""
    found = cuttable(model)
    backbone, total = found.backbone, len(found.layers)
    if keep >= total:
        raise UserError(f"{FLAG}={keep}: the backbone has only {total} layers; choose fewer.")
    small = type(backbone).from_config(dict(backbone.get_config(), num_layers=keep))
    student = rebuild(small)
    copy_weights(model, student, choice)
    return student


def copy_weights(source, target, choice):
    """Sets `target` (a cut model) to `source`'s weights: its kept layers, embeddings,
    pooler and head."""
    source_parts, target_parts = cuttable(source), cuttable(target)
    kept = kept_layers(len(source_parts.layers), len(target_parts.layers), choice)
    numbered = {id(layer): i for i, layer in enumerate(target_parts.layers)}
    for layer in target_parts.backbone.layers:
        if not layer.weights:
            continue
        if id(layer) in numbered:
            origin = source_parts.layers[kept[numbered[id(layer)]]]
        else:
            origin = source_parts.backbone.get_layer(layer.name)
        layer.set_weights(origin.get_weights())
    for layer in target.layers:
        if layer is not target_parts.backbone and layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
