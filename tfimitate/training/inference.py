"""Run a model over a finite dataset under any strategy and collect outputs on the host.

Example:
    batches = collect_outputs(model, eval_ds, strategy)
    logits = np.concatenate([logits for logits, _ in batches])
"""

import weakref

import tensorflow as tf

# One traced prediction function per (model, strategy): evaluating every epoch must
# not pay tracing again.
_PREDICT_FUNCTIONS = weakref.WeakKeyDictionary()


def _predict_function(model, strategy):
    functions = _PREDICT_FUNCTIONS.setdefault(model, {})
    if id(strategy) not in functions:
        @tf.function(reduce_retracing=True)
        def predict(inputs, labels):
            logits = strategy.run(
                lambda x: tf.cast(model(x, training=False), tf.float32), args=(inputs,))
            return strategy.gather(logits, axis=0), strategy.gather(labels, axis=0)

        functions[id(strategy)] = predict
    return functions[id(strategy)]


def collect_outputs(model, dataset, strategy):
    """Returns a list of (logits, labels) NumPy pairs, one per batch of `dataset`.

    `dataset` yields (inputs, labels) batches (shapes may differ between
    batches); logits come back as float32 whatever the dtype policy.
    """
    predict = _predict_function(model, strategy)
    outputs = []
    for inputs, labels in strategy.experimental_distribute_dataset(dataset):
        logits, labels = predict(inputs, labels)
        outputs.append((logits.numpy(), labels.numpy()))
    return outputs
