"""The served batch length: the longest example, optionally rounded up, never past the limit."""


def test_served_length_is_the_longest_example_rounded_up_to_the_multiple(monkeypatch):
    import tensorflow as tf
    from tfimitate.serving import lengths

    served = lambda n, limit=128: int(tf.function(lambda x: lengths.served_length(x, limit))(
        tf.constant(n)))
    assert [served(n) for n in (0, 1, 19, 128)] == [1, 1, 19, 128]
    monkeypatch.setattr(lengths, "MULTIPLE", 8)
    assert [lengths.served_length(n, 128).numpy() for n in (0, 8, 9, 125)] == [8, 8, 16, 128]
    assert lengths.served_length(21, 22).numpy() == 22
