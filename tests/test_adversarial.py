"""Adversarial training on token embeddings (training/adversarial.py): FGM against a
hand-computed reference, PGD and FreeLB against FGM, the training loop's logs, XLA,
mixed float16, mirrored replicas and the errors a user can cause."""

import numpy as np
import pytest

import helpers
import processes
from tfimitate import runs, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import get_task
from tfimitate.techniques import adversarial
from tfimitate.training import hooks

EPSILON = 0.5
TEXTS = ["the film was good", "an awful boring plot"]  # no word piece twice in a text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A dropout-free tiny classifier, a padded batch of TEXTS and their labels."""
    import tensorflow as tf

    directory = tmp_path_factory.mktemp("adversarial")
    cfg = helpers.experiment(directory, backbone=helpers.tiny_bert_preset(directory, dropout=0.0),
                             dropout=0.0, labels=("0", "1"), adversarial="fgm",
                             adv_epsilon=EPSILON)
    task = get_task(cfg.task)
    tf.keras.utils.set_random_seed(0)
    model = runs.build_model(task, cfg, 2, [])
    preprocessor = task.make_preprocessor(cfg)
    inputs = preprocessor(x=tf.constant(TEXTS))
    longest = int(tf.reduce_max(tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), 1)))
    inputs = {k: v[:, :longest] for k, v in inputs.items()}
    return cfg, task, model, inputs, tf.constant([1, 0])


def _step_loss(cfg, task, model, **changes):
    from tfimitate.tasks.base import Run

    chosen = adversarial.from_config(cfg.replace(**changes))
    return chosen.wrap_loss(hooks.supervised_loss(task), Run(cfg, model, None, None))


def _reference_fgm(task, model, inputs, labels):
    """FGM the way it is written by hand for one example: perturb the rows of the embedding
    matrix that the (distinct) tokens of the example read, by eps * g / ||g||, where g is
    the gradient of the clean loss with respect to those rows; the loss is clean +
    adversarial. Returns per-example clean and adversarial losses and the summed gradients."""
    import tensorflow as tf

    table = adversarial.token_embedding(model, None).embeddings
    original = table.numpy()
    clean_losses, adversarial_losses, total = [], [], None
    for i in range(len(TEXTS)):
        length = int(tf.reduce_sum(tf.cast(inputs["padding_mask"][i], tf.int32)))
        one = {k: v[i:i + 1, :length] for k, v in inputs.items()}
        ids = one["token_ids"][0].numpy()
        assert len(set(ids)) == len(ids)
        loss_of = lambda: task.example_loss(labels[i:i + 1], model(one, training=True))[0]
        with tf.GradientTape() as tape:
            clean = loss_of()
        clean_grads = tape.gradient(clean, model.trainable_variables)
        rows = tf.convert_to_tensor(clean_grads[[v.path for v in model.trainable_variables]
                                                .index(table.path)]).numpy()[ids]
        perturbed = original.copy()
        perturbed[ids] += EPSILON * rows / np.linalg.norm(rows)
        table.assign(perturbed)
        with tf.GradientTape() as tape:
            adversarial_loss = loss_of()
        adversarial_grads = tape.gradient(adversarial_loss, model.trainable_variables)
        table.assign(original)
        grads = [tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
                 for a, b in zip(clean_grads, adversarial_grads)]
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
        clean_losses.append(float(clean))
        adversarial_losses.append(float(adversarial_loss))
    return clean_losses, adversarial_losses, total


def test_one_fgm_step_equals_the_hand_computed_reference(tiny):
    import tensorflow as tf

    cfg, task, model, inputs, labels = tiny
    step_loss = _step_loss(cfg, task, model)
    with tf.GradientTape() as tape:
        terms = step_loss(model, inputs, labels)
        total = tf.reduce_sum(terms["loss"])
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(total, model.trainable_variables)]
    clean, adversarial_losses, expected = _reference_fgm(task, model, inputs, labels)

    np.testing.assert_allclose(terms["clean_loss"].numpy(), clean, rtol=1e-5)
    np.testing.assert_allclose(terms["adversarial_loss"].numpy(), adversarial_losses, rtol=1e-5)
    assert all(a > c for a, c in zip(adversarial_losses, clean))  # the attack raises the loss
    np.testing.assert_allclose(terms["loss"].numpy(), np.add(clean, adversarial_losses), rtol=1e-5)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_pgd_of_one_step_of_epsilon_is_fgm_and_more_steps_raise_the_loss(tiny):
    cfg, task, model, inputs, labels = tiny
    fgm = _step_loss(cfg, task, model)(model, inputs, labels)
    pgd = _step_loss(cfg, task, model, adversarial="pgd", adv_steps=1,
                     adv_alpha=EPSILON)(model, inputs, labels)
    np.testing.assert_allclose(pgd["adversarial_loss"].numpy(), fgm["adversarial_loss"].numpy(),
                               rtol=1e-5)
    pgd3 = _step_loss(cfg, task, model, adversarial="pgd", adv_steps=3,
                      adv_alpha=EPSILON / 2)(model, inputs, labels)
    assert np.all(pgd3["adversarial_loss"].numpy() > pgd3["clean_loss"].numpy())
    np.testing.assert_allclose(pgd3["clean_loss"].numpy(), fgm["clean_loss"].numpy(), rtol=1e-6)


def test_freelb_averages_its_steps_and_a_tiny_ball_is_the_clean_loss(tiny):
    cfg, task, model, inputs, labels = tiny
    clean = hooks.supervised_loss(task)(model, inputs, labels).numpy()
    free = _step_loss(cfg, task, model, adversarial="freelb", adv_steps=2, adv_alpha=1e-6,
                      adv_epsilon=1e-6)(model, inputs, labels)
    np.testing.assert_allclose(free["loss"].numpy(), clean, rtol=1e-4)
    strong = _step_loss(cfg, task, model, adversarial="freelb", adv_steps=3,
                        adv_alpha=EPSILON)(model, inputs, labels)
    assert np.all(strong["adversarial_loss"].numpy() > clean)


def test_the_embedding_hook_is_the_identity_outside_a_step(tiny):
    cfg, task, model, inputs, labels = tiny
    before = model(inputs).numpy()
    _step_loss(cfg, task, model)(model, inputs, labels)
    np.testing.assert_array_equal(model(inputs).numpy(), before)


@pytest.mark.slow
def test_training_logs_clean_and_adversarial_loss(tmp_path):
    flags = dict(train_data=helpers.write_table(tmp_path, "train.csv", helpers.sentiment_rows(32)),
                 eval_data=helpers.write_table(tmp_path, "eval.csv", helpers.sentiment_rows(8, 1)))
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path), max_steps=3,
                             adversarial="fgm", **flags)
    workflow.train(cfg)
    logged = {tag: processes.loss_curve(cfg.model_dir, tag)
              for tag in ("loss", "clean_loss", "adversarial_loss")}
    assert all(sorted(curve) == [1, 2, 3] for curve in logged.values())
    for step in (1, 2, 3):
        assert logged["adversarial_loss"][step] > logged["clean_loss"][step] > 0
        assert logged["loss"][step] == pytest.approx(
            logged["clean_loss"][step] + logged["adversarial_loss"][step], rel=1e-5)


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_the_step_compiles_with_xla_and_gives_the_same_losses_and_gradients(tiny, method):
    """XLA (--jit_compile) runs the same attack; FreeLB's random start only compiles."""
    import tensorflow as tf

    cfg, task, model, inputs, labels = tiny
    step_loss = _step_loss(cfg, task, model, adversarial=method, adv_steps=2)

    def step(inputs, labels):
        with tf.GradientTape() as tape:
            terms = step_loss(model, inputs, labels)
            total = tf.reduce_sum(terms["loss"])
        return terms, tape.gradient(total, model.trainable_variables)

    eager_terms, eager_grads = step(inputs, labels)
    xla_terms, xla_grads = tf.function(step, jit_compile=True)(inputs, labels)
    if method == "freelb":  # its random start: XLA's stateless generator differs from the CPU's
        assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in xla_grads)
        return
    for name in eager_terms:
        np.testing.assert_allclose(xla_terms[name].numpy(), eager_terms[name].numpy(), rtol=1e-4)
    for xla, eager in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(xla).numpy(),
                                   tf.convert_to_tensor(eager).numpy(), atol=1e-5)


def test_mixed_float16_scales_the_adversarial_gradient_and_matches_float32(tiny):
    """Under mixed_float16 the attack's gradient goes through the optimizer's loss scale;
    its losses are float32's within float16 round-off."""
    import keras

    from tfimitate import runtime
    from tfimitate.tasks.base import Run
    from tfimitate.training import optim

    cfg, task, model, inputs, labels = tiny
    want = _step_loss(cfg, task, model)(model, inputs, labels)
    runtime.set_precision("mixed_float16")
    try:
        half = runs.build_model(task, cfg, 2, [])
        half.set_weights(model.get_weights())
        optimizer = optim.make_optimizer(1e-3, 10, 0.0, 0.0, loss_scale=True)
        optimizer.build(half.trainable_variables)
        assert float(optimizer.scale_loss(1.0)) > 1.0
        step_loss = adversarial.from_config(cfg).wrap_loss(
            hooks.supervised_loss(task), Run(cfg, half, None, None, optimizer))
        got = step_loss(half, inputs, labels)
    finally:
        runtime.set_precision("float32")
    assert keras.mixed_precision.global_policy().name == "float32"
    for name in ("clean_loss", "adversarial_loss"):
        np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), rtol=2e-2)


@pytest.mark.slow
def test_fgm_under_mirrored_replicas_follows_one_device(tmp_path):
    """Each replica attacks its own examples, normalized per example: two replicas give
    the loss curves of one device."""
    rows = helpers.sentiment_rows(32)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path, dropout=0.0),
                             dropout=0.0, max_steps=3, checkpoint_steps=3, labels=("0", "1"),
                             warmup_ratio=0.0, weight_decay=0.0, adversarial="fgm",
                             train_data=helpers.write_table(tmp_path, "t.csv", rows))
    processes.write_flagfile(tmp_path / "flags", cfg)
    result = processes.train_on_two_cpus(tmp_path / "flags", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for tag in ("clean_loss", "adversarial_loss"):
        one = processes.loss_curve(cfg.model_dir + "-one_device", tag)
        two = processes.loss_curve(cfg.model_dir + "-mirrored", tag)
        assert sorted(one) == sorted(two) == [1, 2, 3]
        np.testing.assert_allclose([two[s] for s in one], list(one.values()), atol=1e-4)


def test_a_backbone_without_token_embeddings_is_refused():
    import keras
    import keras_hub

    image = keras_hub.models.VGGBackbone(stackwise_num_repeats=[1], stackwise_num_filters=[4],
                                         image_shape=(16, 16, 3))
    model = keras.Model(image.input, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(image.output)))
    cfg = helpers.experiment("/nonexistent", adversarial="fgm", backbone="vgg_tiny")
    with pytest.raises(UserError, match="--adversarial=fgm perturbs token embeddings, but "
                                        "--backbone=vgg_tiny has none"):
        adversarial.from_config(cfg).adapt_model(model, cfg)
