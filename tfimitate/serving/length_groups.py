"""A served text batch runs through the model in groups of similar length.

A served batch is padded to its longest text, so a batch of 32 SST-2 dev sentences (23.6
real tokens each) computes twice the tokens it holds. Sorted by length and cut into at
most GROUPS consecutive groups (of at least MIN_GROUP texts), each padded only to its own
longest text, the same batches compute 1.56x fewer tokens; the outputs come back in the
request's order. Only core TF ops (a While loop over a TensorArray), so stock TF Serving
loads it; `benchmarks/served_breakdown.py` measures what it gives.

Example:
    forward = grouped(lambda features: model(features, training=False),
                      is_sequence=lambda name: name != "side_features")
    logits = forward({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})
"""

import tensorflow as tf

GROUPS, MIN_GROUP = 4, 8


def grouped(call, is_sequence, groups=GROUPS, min_group=MIN_GROUP):
    """`call(features)` (float32 [batch, ...] outputs) run on length-sorted groups.

    `is_sequence(name)` tells which features are [batch, length] token features (cut to
    each group's longest text); the others (e.g. side features) are only regrouped. The
    lengths are read from `padding_mask`.
    """

    def forward(features):
        lengths = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        ordered = {name: tf.gather(value, order) for name, value in features.items()}
        lengths = tf.gather(lengths, order)
        count = tf.shape(lengths)[0]
        size = tf.maximum(min_group, (count + groups - 1) // groups)
        slices = tf.maximum((count + size - 1) // size, 1)  # an empty batch: one empty group

        def group(index, outputs):
            start = index * size
            end = tf.minimum(start + size, count)
            longest = tf.maximum(tf.reduce_max(lengths[start:end]), 1)
            inputs = {name: value[start:end, :longest] if is_sequence(name) else value[start:end]
                      for name, value in ordered.items()}
            return index + 1, outputs.write(index, call(inputs))

        outputs = tf.TensorArray(tf.float32, size=slices, infer_shape=False)
        _, outputs = tf.while_loop(lambda index, _: index < slices, group, (0, outputs))
        return tf.gather(outputs.concat(), tf.argsort(order))

    return forward
