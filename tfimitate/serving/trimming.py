"""Round-robin segment trimming in core TensorFlow ops, for exports older servers load.

keras-hub's `MultiSegmentPacker` (every BERT / XLM-R preprocessor) trims segments with
`tensorflow_text.RoundRobinTrimmer`, whose op `TFText>RoundRobinTrim` exists only from
TF Text 2.13. TF Serving 2.12.1 to 2.19.1 are built with TF Text 2.12.1 and refuse such
graphs. `CoreOpRoundRobinTrimmer` computes the same allocation with core ops: the
largest number of whole rounds `t` with sum(min(length, t)) <= budget, then one more
item for the first segments, left to right, that still have items, while budget lasts.
(TF Text's older pure-Python allocation is not this: it differs on pairs.)

Example:
    with core_op_trimming():      # while tracing the serving signatures
        concrete = serve.get_concrete_function()
"""

import contextlib

import tensorflow as tf


def round_robin_lengths(lengths, budget):
    """Items kept per segment: int32 [batch, segments] lengths, scalar budget per row.

    Example:
        round_robin_lengths(tf.constant([[3, 4, 2]]), 5)   # [[2, 2, 1]]
    """
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    budget = tf.cast(budget, tf.int32)
    rounds = tf.range(1, tf.maximum(tf.reduce_max(lengths), 0) + 1)  # candidate whole rounds
    cost = tf.reduce_sum(tf.minimum(lengths[:, :, None], rounds[None, None, :]), axis=1)
    whole = tf.reduce_sum(tf.cast(cost <= budget, tf.int32), axis=1, keepdims=True)
    kept = tf.minimum(lengths, whole)
    left = budget - tf.reduce_sum(kept, axis=1, keepdims=True)
    has_more = lengths > whole
    rank = tf.cumsum(tf.cast(has_more, tf.int32), axis=1)
    return kept + tf.cast(has_more & (rank <= left), tf.int32)


class CoreOpRoundRobinTrimmer:
    """`tensorflow_text.RoundRobinTrimmer(max_seq_length).trim(segments)` in core ops,
    for a list of rank-2 RaggedTensors (what keras-hub's packer passes)."""

    def __init__(self, max_seq_length, axis=-1):
        if axis not in (-1, 1):
            raise ValueError("CoreOpRoundRobinTrimmer trims the last axis of rank-2 segments.")
        self.max_seq_length = max_seq_length

    def trim(self, segments):
        segments = [tf.RaggedTensor.from_tensor(s) if isinstance(s, tf.Tensor) else s
                    for s in segments]
        lengths = tf.stack([tf.cast(s.row_lengths(), tf.int32) for s in segments], axis=1)
        kept = round_robin_lengths(lengths, self.max_seq_length)
        trimmed = []
        for index, segment in enumerate(segments):
            positions = tf.ragged.range(segment.row_lengths())
            keep = positions < tf.cast(kept[:, index:index + 1], positions.dtype)
            trimmed.append(tf.ragged.boolean_mask(segment, keep))
        return trimmed


@contextlib.contextmanager
def core_op_trimming():
    """Within the block, keras-hub packers trace `CoreOpRoundRobinTrimmer` instead of the
    TF Text op (the in-memory model, traced outside, keeps the op: parity compares both)."""
    import tensorflow_text

    original = tensorflow_text.RoundRobinTrimmer
    tensorflow_text.RoundRobinTrimmer = CoreOpRoundRobinTrimmer
    try:
        yield
    finally:
        tensorflow_text.RoundRobinTrimmer = original
