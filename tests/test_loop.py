"""The training step itself: weights outside the loss graph do not break it."""

import os
import types

import numpy as np

import tfimitate  # noqa: F401
import keras
import tensorflow as tf

from tfimitate.training import checkpoints, loop, optim


class PartlyUsedModel(keras.Model):
    """A model with a layer its output never uses (like a tagger's pooler)."""

    def __init__(self):
        super().__init__()
        self.used = keras.layers.Dense(2)
        self.unused = keras.layers.Dense(3)

    def build(self, shape):
        self.used.build(shape)
        self.unused.build(shape)

    def call(self, x):
        return self.used(x)


def test_step_skips_weights_without_gradient():
    model = PartlyUsedModel()
    model.build((None, 4))
    unused_before = model.unused.kernel.numpy().copy()
    used_before = model.used.kernel.numpy().copy()
    optimizer = optim.make_optimizer(1e-2, total_steps=10, warmup_ratio=0.0, weight_decay=0.0)
    strategy = tf.distribute.get_strategy()
    features = np.random.RandomState(0).rand(8, 4).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((features, np.arange(8) % 2)).batch(4).repeat()
    step_loss = lambda model, x, y: keras.losses.sparse_categorical_crossentropy(
        y, model(x, training=True), from_logits=True)
    train_steps = loop._make_train_function(model, step_loss, optimizer, strategy,
                                            types.SimpleNamespace(jit_compile=False))
    loss = float(train_steps(iter(dataset), tf.constant(2))["loss"])
    assert np.isfinite(loss)
    assert not np.allclose(model.used.kernel.numpy(), used_before)
    np.testing.assert_array_equal(model.unused.kernel.numpy(), unused_before)


def test_restore_newest_reads_checkpoints_of_a_relative_model_dir(tmp_path, monkeypatch):
    """The configs use relative --model_dir; a resume must find their checkpoints."""
    monkeypatch.chdir(tmp_path)
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    tf.train.CheckpointManager(checkpoint, "run/checkpoints", max_to_keep=2).save(checkpoint_number=5)
    checkpoint.v.assign(0.0)
    path, _ = checkpoints.restore_newest(checkpoint, "run/checkpoints")
    assert path == os.path.join("run", "checkpoints", "ckpt-5")
    assert checkpoint.v.numpy() == 1.0
