"""The sequence length a served batch is padded to: its longest example, rounded up.

Each new [batch, length] shape makes oneDNN create new kernels (primitives) for every
matmul of the model, which cost as much as running it. Rounding the length up to a few
bucket sizes bounds how many shapes a server ever sees, at the price of some padding.
`benchmarks/served_shapes.py` measured the buckets; all TF ops, for the export graph.

Example:
    bucket_length(tf.constant(19), sequence_length=128)   # 32
    bucket_length(tf.constant(100), sequence_length=128)  # 128
"""

import tensorflow as tf

BUCKETS = (16, 32, 64)


def bucket_length(longest, sequence_length, buckets=BUCKETS):
    """The smallest of `buckets` (then `sequence_length`) that holds `longest` tokens."""
    sizes = [size for size in buckets if size < sequence_length] + [sequence_length]
    sizes = tf.constant(sizes, tf.int32)
    return tf.reduce_min(tf.boolean_mask(sizes, sizes >= tf.cast(longest, tf.int32)))
