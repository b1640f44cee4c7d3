"""Served text batches run in length-sorted groups: same outputs, in the request's order,
and each group is cut to its own longest text."""

import numpy as np
import pytest


@pytest.mark.parametrize("count", [0, 1, 7, 9, 33])
def test_grouped_outputs_equal_the_whole_batch_in_request_order(count):
    import tensorflow as tf
    from tfimitate.serving import length_groups

    rng = np.random.default_rng(count)
    lengths = rng.integers(1, 12, size=count)
    mask = np.arange(12)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(1, 50, size=(count, 12)), 0)
    side = rng.normal(size=(count, 2)).astype(np.float32)

    def call(features):  # a per-row function of the real tokens only, and the side column
        kept = tf.cast(features["token_ids"], tf.float32) * tf.cast(features["padding_mask"], tf.float32)
        return tf.stack([tf.reduce_sum(kept, 1), features["side"][:, 0]], axis=1)

    features = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask),
                "side": tf.constant(side)}
    forward = length_groups.grouped(call, lambda name: name != "side")
    got = tf.function(forward)(features).numpy()
    np.testing.assert_allclose(got, call(features).numpy())
    assert got.shape == (count, 2)


def test_each_group_is_cut_to_its_own_longest_text():
    import tensorflow as tf
    from tfimitate.serving import length_groups

    lengths = np.array([3, 10, 2, 4] * 4)  # 16 texts: two groups of 8 (MIN_GROUP)
    mask = np.arange(10)[None, :] < lengths[:, None]
    seen = []

    def call(features):  # eager: the While loop runs its body once per group
        seen.append(tuple(features["token_ids"].shape))
        return tf.zeros([features["token_ids"].shape[0], 1])

    features = {"token_ids": tf.constant(mask.astype(np.int32)), "padding_mask": tf.constant(mask)}
    result = length_groups.grouped(call, lambda name: True)(features)
    assert result.shape == (16, 1)
    assert seen == [(8, 3), (8, 10)]
