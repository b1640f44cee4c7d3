"""The base of every serving module: Keras models held so that TF Serving can restore them.

A `tf.Module` that keeps a Keras 3 model as an attribute saves it through the Keras
variables, and Keras 3 saves each of those as a *second* copy of the `tf.Variable` the
signature functions read (keras/src/backend/tensorflow/core.py,
`_export_to_saved_model_graph`). `tf.saved_model.load` hides this, but TF Serving's
C++ loader restores the copies and leaves the variables the signatures read
uninitialised: every request fails with "Could not find variable ..."
(tensorflow/tensorflow#72963, keras-team/keras#20095, tensorflow/serving#2250).
`ServingModule` keeps the Keras models out of the saved object graph and tracks
their underlying `tf.Variable`s instead, so each weight is saved once, as the
variable the graph reads.

Example:
    class Server(ServingModule):
        def __init__(self, model):
            super().__init__(model=model)    # self.model works as usual
            self.serve = tf.function(lambda x: {"y": self.model(x)},
                                     input_signature=[tf.TensorSpec([None, 4], tf.float32)])
"""

import tensorflow as tf


class ServingModule(tf.Module):
    """A tf.Module whose Keras models (given by keyword) are attributes the SavedModel does
    not track; their variables are tracked as `served_variables`."""

    def __init__(self, **keras_models):
        super().__init__()
        variables = {}
        for name, model in keras_models.items():
            object.__setattr__(self, name, model)  # bypasses tracking on purpose (see above)
            for weight in model.weights:
                value = weight.value
                if not isinstance(value, tf.Variable):
                    raise TypeError(f"{name}'s weight {weight.path} is not backed by a tf.Variable.")
                variables[id(value)] = value
        self.served_variables = list(variables.values())


def example_signature(serve, specs, defaults, outputs):
    """A tf.function of serialized tf.Examples (`inputs`) that parses the features `specs`
    (serve's inputs; one left out takes `defaults`' value), calls `serve` (its graph, traced
    once) on them and returns `outputs(serve's outputs)`: TF Serving's Classify/Regress side.

    Example:
        self.regress = example_signature(self.serve, specs, {},
                                         lambda scores: {"outputs": scores["score"]})
    """
    names = list(specs)
    features = {name: tf.io.FixedLenFeature(spec.shape[1:], spec.dtype,
                                            default_value=defaults.get(name))
                for name, spec in specs.items()}
    return tf.function(
        lambda inputs: outputs(serve(*map(tf.io.parse_example(inputs, features).get, names))),
        input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
