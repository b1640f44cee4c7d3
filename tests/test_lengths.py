"""Served batch lengths round up to a few bucket sizes (fewer shapes for oneDNN to build)."""


def test_lengths_round_up_to_a_bucket_and_never_past_the_sequence_length():
    import tensorflow as tf
    from tfimitate.serving.lengths import bucket_length

    bucket = tf.function(lambda n: bucket_length(n, 128),
                         input_signature=[tf.TensorSpec([], tf.int32)])
    got = [int(bucket(tf.constant(n)))
           for n in (0, 1, 16, 17, 32, 33, 64, 65, 128)]
    assert got == [16, 16, 16, 32, 32, 64, 64, 128, 128]
    assert [int(bucket_length(n, 24)) for n in (5, 17, 24)] == [16, 24, 24]
    assert [int(bucket_length(n, 10)) for n in (3, 10)] == [10, 10]
