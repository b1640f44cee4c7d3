"""The length a served batch is padded to: its longest example, rounded up to MULTIPLE.

Each new [batch, length] shape makes oneDNN build new matmul kernels, so rounding the
length up (fewer shapes) saves that work but pays for the padding. Measured with
`benchmarks/served_shapes.py` (MiniLM-L6, SST-2 dev texts, batches of 32 and mixed
requests of 1-32, AMD EPYC Zen 3 with AVX2): the first pass over new shapes cost 8-15%
more CPU than later ones, multiples of 8 or 16 cost as much in padding as they saved,
and buckets of 16/32/64/128 or a fixed 128 cost 1.4x / 3.2x the CPU. So MULTIPLE is 1:
every batch keeps its own longest length. Re-measured on an idle machine of the same class
(2026-11-23, benchmarks/results/served_shapes.md): multiples of 16 were 16% slower than
the longest length, one inter-op thread gained nothing. Re-measure before changing it on
another CPU.

Example:
    served_length(tf.constant(19), sequence_length=128)   # 19 (with MULTIPLE = 8: 24)
"""

import tensorflow as tf

MULTIPLE = 1


def served_length(longest, sequence_length):
    """`longest` (at least 1) rounded up to a multiple of MULTIPLE, at most `sequence_length`."""
    longest = tf.maximum(tf.cast(longest, tf.int32), 1)
    return tf.minimum((longest + MULTIPLE - 1) // MULTIPLE * MULTIPLE, sequence_length)
