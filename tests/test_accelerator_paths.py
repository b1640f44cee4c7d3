"""Accelerator paths proved on CPU: mixed_float16 loss scaling skips an overflowing step,
and --jit_compile batches take a bounded number of shapes (XLA compiles once per shape)."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfimitate import runtime
from tfimitate.data import pipelines
from tfimitate.training import loop, optim


@pytest.fixture
def mixed_float16():
    runtime.set_precision("mixed_float16")
    yield
    runtime.set_precision("float32")


def test_mixed_float16_skips_an_overflowing_step_and_halves_the_loss_scale(mixed_float16):
    inputs = keras.Input([4])
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(hidden))
    assert model.layers[1].compute_dtype == "float16" and model.output.dtype == "float32"
    optimizer = optim.make_optimizer(1e-2, total_steps=10, warmup_ratio=0.0, weight_decay=0.0,
                                     loss_scale=True)
    step_loss = lambda model, x, y: keras.losses.sparse_categorical_crossentropy(
        y, model(x, training=True), from_logits=True)
    train_steps = loop._make_train_function(model, step_loss, optimizer,
                                            tf.distribute.get_strategy(),
                                            types.SimpleNamespace(jit_compile=False))
    x = np.random.RandomState(0).rand(4, 4).astype("float32")
    batches = lambda x: iter(tf.data.Dataset.from_tensors((x, np.array([0, 1, 0, 1]))).repeat())

    optimizer.build(model.trainable_variables)
    optimizer.dynamic_scale.assign(2.0 ** 40)  # float16 gradients overflow at this scale
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = float(train_steps(batches(x), tf.constant(1))["loss"])
    assert np.isfinite(loss)  # the loss is fine; only the scaled gradients overflowed
    for weight, old in zip(model.trainable_weights, before):
        np.testing.assert_array_equal(weight.numpy(), old)  # the step was skipped
    assert float(optimizer.dynamic_scale) == 2.0 ** 39 and int(optimizer.iterations) == 0

    optimizer.dynamic_scale.assign(2.0 ** 10)
    first = float(train_steps(batches(x), tf.constant(1))["loss"])
    later = float(train_steps(batches(x), tf.constant(20))["loss"])
    assert int(optimizer.iterations) == 21 and later < first
    assert all(w.dtype == "float32" for w in model.trainable_weights)


def test_skipped_float16_steps_still_count_their_batches_on_resume(mixed_float16, tmp_path,
                                                                   monkeypatch):
    """Every step of this run overflows (loss scale 2^40), so the optimizer never counts
    one; the loop, its checkpoint and a re-run count the batches, so a finished run is not
    trained again."""
    import functools

    import helpers

    monkeypatch.setattr(keras.optimizers, "LossScaleOptimizer", functools.partial(
        keras.optimizers.LossScaleOptimizer, initial_scale=2.0 ** 40))
    inputs = keras.Input([4])
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(
        keras.layers.Dense(8)(inputs)))
    step_loss = lambda model, x, y: keras.losses.sparse_categorical_crossentropy(
        y, model(x, training=True), from_logits=True)
    batches = tf.data.Dataset.from_tensors(
        (np.ones([4, 4], "float32"), np.array([0, 1, 0, 1]))).repeat()
    cfg = helpers.experiment(tmp_path, max_steps=4, checkpoint_steps=4)

    def train():
        optimizer = optim.make_optimizer(1e-2, total_steps=4, warmup_ratio=0.0,
                                         weight_decay=0.0, loss_scale=True)
        result = loop.train_loop(model, optimizer, step_loss, batches, None, cfg,
                                 tf.distribute.get_strategy(), steps_per_epoch=4, total_steps=4)
        return result, int(optimizer.iterations)

    first, updates = train()
    assert (first.step, updates) == (4, 0)
    assert tf.train.latest_checkpoint(f"{cfg.model_dir}/checkpoints").endswith("ckpt-4")
    again, _ = train()
    assert (again.resumed_from, again.step) == (4, 4)


def test_jit_compile_batches_take_a_few_padded_lengths_and_are_all_full():
    rng = np.random.RandomState(0)
    lengths = rng.randint(3, 129, size=200)
    features = tf.data.Dataset.from_tensor_slices(
        tf.ragged.constant([[1] * n for n in lengths], dtype=tf.int32)).map(
            lambda ids: {"token_ids": ids, "padding_mask": tf.ones_like(ids, tf.bool),
                         "labels": tf.size(ids)})
    shapes = lambda **kw: {tuple(x["token_ids"].shape) for x, _ in pipelines.batches(
        features, 8, 128, shuffle_seed=1, repeat=True, **kw).take(200)}

    bounded = shapes(few_shapes=True)
    assert bounded == {(8, length) for length in pipelines.bounded_lengths(128)}
    assert pipelines.bounded_lengths(128) == [16, 32, 64, 128]
    assert pipelines.bounded_lengths(100) == [16, 32, 64, 100]
    assert len(shapes()) > 3 * len(bounded)  # per-8 buckets and short batches at each pass end


@pytest.mark.slow
def test_mixed_float16_xla_and_steps_per_execution_train_and_export_with_parity(tmp_path):
    """The GPU configuration, on CPU: the loss falls and the export passes parity (within
    the float16 tolerance), with the step compiled by XLA and run twice per call."""
    import helpers
    from tfimitate import workflow

    rows = helpers.sentiment_rows(64)
    cfg = helpers.experiment(
        tmp_path, backbone=helpers.tiny_bert_preset(tmp_path, dropout=0.0),
        train_data=helpers.write_lines(tmp_path, "train.tsv",
                                       ["text\tlabel"] + [f"{t}\t{l}" for t, l in rows]),
        precision="mixed_float16", jit_compile=True, steps_per_execution=2, max_steps=24,
        checkpoint_steps=24, learning_rate=3e-3, export_dir=str(tmp_path / "export"))
    try:
        metrics = workflow.train(cfg)
    finally:
        runtime.set_precision("float32")
    losses = [value.numpy() for value in _scalars(cfg.model_dir, "loss")]
    assert metrics["step"] == 24 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert tf.saved_model.contains_saved_model(str(tmp_path / "export" / "1"))


def _scalars(model_dir, tag):
    import glob
    import os

    from tensorboard.backend.event_processing import event_accumulator

    values = []
    for path in sorted(glob.glob(os.path.join(model_dir, "logs", "train", "events.*"))):
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        values += [tf.make_ndarray(event.tensor_proto) for event in events.Tensors(tag)]
    return [tf.constant(v) for v in values]
