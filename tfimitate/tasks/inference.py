"""Run a model over a finite dataset under any strategy and collect outputs on the host.

The tasks' `probabilities` (evaluation, prediction, teachers) run through it; techniques
above tasks (the frozen-feature cache) may too.

Example:
    batches = collect_outputs(model, eval_ds, strategy)
    logits = np.concatenate([logits for logits, _ in batches])
"""

import weakref

import tensorflow as tf

from tfimitate import outputs as outputs_check

# One traced prediction function per (model, strategy, input spec): evaluating every
# epoch must not pay tracing again.
_PREDICT_FUNCTIONS = weakref.WeakKeyDictionary()


def _predict_function(model, strategy, element_spec):
    """A tf.function traced once for `element_spec`, whose batch and length dims are
    None, so batches of every length bucket share one graph."""
    functions = _PREDICT_FUNCTIONS.setdefault(model, {})
    key = (id(strategy), repr(element_spec))
    if key not in functions:
        @tf.function(input_signature=list(element_spec))
        def predict(inputs, labels):
            logits = strategy.run(
                lambda x: tf.cast(model(x, training=False), tf.float32), args=(inputs,))
            return strategy.gather(logits, axis=0), strategy.gather(labels, axis=0)

        functions[key] = predict
    return functions[key]


def collect_outputs(model, dataset, strategy):
    """Returns a list of (logits, labels) NumPy pairs, one per batch of `dataset`.

    `dataset` yields (inputs, labels) batches (shapes may differ between
    batches); logits come back as float32 whatever the dtype policy. NaN or infinite
    outputs (an overflowing model) are refused (tfimitate.outputs.BadOutputs).
    """
    distributed = strategy.experimental_distribute_dataset(dataset)
    predict = _predict_function(model, strategy, distributed.element_spec)
    outputs, seen = [], 0
    for inputs, labels in distributed:
        logits, labels = predict(inputs, labels)
        logits = logits.numpy()
        outputs_check.check(logits, "the model", outputs_check.OVERFLOW_ADVICE,
                            names=range(seen + 1, seen + len(logits) + 1))
        seen += len(logits)
        outputs.append((logits, labels.numpy()))
    return outputs
