"""The backbone in a task's model and its parts, found one way for every technique.

The backbone is the model's keras-hub Backbone (at any depth), else the largest Keras
model nested in it (a Keras model file cut at a layer). Its parts, as flags name them:

    embeddings   the backbone's weights before its first numbered layer
    layers:I-J   its numbered layers I..J, 0-based and inclusive (`layers:I` is one layer,
                 `layers` all); for a BERT these are transformer_layer_0 ...
    backbone     all the backbone's weights
    NAME         one of the backbone's own layers by its Keras name (pooled_dense)
Weights outside the backbone are the task's head.

Example:
    backbone = find_backbone(model)                 # keras-hub Backbone, or None
    parts = Parts(model)
    frozen = parts.select(["embeddings", "layers:0-3"], "--freeze")   # [Variable, ...]
    parts.depth(frozen[0])            # 0 for embeddings, i + 1 for layer i, L + 1 above
"""

import collections
import re

from tfimitate.errors import UserError

_NUMBERED = re.compile(r"^(.*\D)_?(\d+)$")
_RANGE = re.compile(r"^layers(?::(\d+)(?:-(\d+))?)?$")


def find_backbone(model, keras_hub=True):
    """The keras-hub Backbone inside `model`; without `keras_hub`, else the largest Keras
    model nested in it (by weight count). None if there is none."""
    import keras
    import keras_hub as hub

    for layer in [model] + sublayers(model):
        if isinstance(layer, hub.models.Backbone):
            return layer
    if keras_hub:
        return None
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return max(nested, default=None,
               key=lambda layer: sum(int(w.shape.num_elements() or 0) for w in layer.weights))


def require_backbone(model, flag, purpose, keras_hub=True):
    """find_backbone, or UserError naming `flag` and what it needed the backbone `purpose`."""
    backbone = find_backbone(model, keras_hub)
    if backbone is None:
        kind = "keras-hub backbone" if keras_hub else "nested backbone model"
        raise UserError(f"{flag}: the model has no {kind} {purpose}; drop {flag}.")
    return backbone


def sublayers(layer):
    """Every layer inside `layer` (at any depth), input to output."""
    return list(layer._flatten_layers(include_self=False))


def innermost_layers(backbone):
    """The backbone's innermost layers that own weights, input to output."""
    return [layer for layer in sublayers(backbone) if not sublayers(layer) and layer.weights]


def token_embedding(model):
    """The token embedding layer of the keras-hub backbone in `model`, or None (a backbone
    that reads no word pieces)."""
    backbone = find_backbone(model)
    return getattr(backbone, "token_embedding", None)


class Parts:
    """The keras-hub backbone of `model` split into embeddings, numbered layers and the rest."""

    def __init__(self, model, flag="--backbone"):
        self.model = model
        self.backbone = find_backbone(model)
        if self.backbone is None:
            raise UserError(f"{flag}: the model has no keras-hub backbone to address by parts; "
                            "use a keras-hub backbone.")
        self.weights = list(self.backbone.weights)
        self.layers = self._numbered_layers()
        if not self.layers:
            raise UserError(f"{flag}: the backbone {self.backbone.name} has no numbered layers "
                            "(like transformer_layer_0); it cannot be addressed by layer.")
        ids = [{id(v) for v in layer.weights} for layer in self.layers]
        self._layer_of = {v: i for i, layer_ids in enumerate(ids) for v in layer_ids}
        positions = [i for i, v in enumerate(self.weights) if id(v) in self._layer_of]
        first, last = positions[0], positions[-1]
        self.embeddings = self.weights[:first]
        self._above = {id(v) for v in self.weights[last + 1:]}
        self._backbone_ids = {id(v) for v in self.weights}

    def _numbered_layers(self):
        """The largest family of sibling layers named PREFIX_0, PREFIX_1 ... holding weights."""
        families = collections.defaultdict(dict)
        for layer in sublayers(self.backbone):
            match = _NUMBERED.match(layer.name)
            if match and layer.weights:
                families[match.group(1)][int(match.group(2))] = layer
        complete = [family for family in families.values()
                    if sorted(family) == list(range(len(family)))]
        best = max(complete, key=len, default={})
        return [best[i] for i in range(len(best))]

    def head(self):
        """The model's weights outside the backbone (the task's head)."""
        return [v for v in self.model.weights if id(v) not in self._backbone_ids]

    def names(self):
        """The names `select` accepts, for error messages."""
        layers = [layer.name for layer in self.backbone.layers if layer.weights]
        return (f"embeddings, layers:I-J (0-{len(self.layers) - 1}), backbone, or one of the "
                f"backbone's layers: {', '.join(layers)}")

    def select(self, names, flag):
        """The backbone weights named by `names` (see the module docstring), in model order."""
        chosen = set()
        for name in names:
            chosen |= {id(v) for v in self._part(name.strip(), flag)}
        return [v for v in self.weights if id(v) in chosen]

    def _part(self, name, flag):
        if name == "embeddings":
            return self.embeddings
        if name == "backbone":
            return self.weights
        match = _RANGE.match(name)
        if match:
            count = len(self.layers)
            start = int(match.group(1)) if match.group(1) else 0
            end = int(match.group(2)) if match.group(2) else (start if match.group(1) else count - 1)
            if not start <= end < count:
                raise UserError(f"{flag}: '{name}' is not a range of the backbone's {count} "
                                f"layers; give layers:I-J with 0 <= I <= J <= {count - 1}.")
            return [v for layer in self.layers[start:end + 1] for v in layer.weights]
        for layer in self.backbone.layers:
            if layer.name == name and layer.weights:
                return layer.weights
        raise UserError(f"{flag}: the backbone has no part '{name}'; name {self.names()}.")

    def depth(self, variable):
        """0 for embeddings (and what precedes layer 0), i + 1 for layer i, and
        len(layers) + 1 for what lies above the layers (pooler) and the head."""
        key = id(variable)
        if key in self._layer_of:
            return self._layer_of[key] + 1
        if key in self._backbone_ids and key not in self._above:
            return 0
        return len(self.layers) + 1
