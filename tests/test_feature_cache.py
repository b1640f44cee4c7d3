"""--cache_frozen_features on tiny backbones: the cut at the frozen features, the head
trained on cached features equals the head trained through the frozen backbone (also
across a resume in phase 1), a run resumed after phase 1 fine-tunes, per-token features
and flags it cannot serve are refused."""

import os

import numpy as np
import pytest
import tensorflow as tf

import helpers
import image_helpers
from tfimitate import backbones, runs, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import base
from tfimitate.tasks.image_classification import ImageClassification
from tfimitate import techniques
from tfimitate.techniques import feature_cache, transfer
from tfimitate.training import checkpoints, hooks, loop

task = ImageClassification()


def image_experiment(tmp_path, **overrides):
    root = image_helpers.write_image_folder(tmp_path / "train", {"a": 7, "b": 7, "c": 7})
    values = dict(task=task.NAME, backbone=image_helpers.tiny_image_preset(tmp_path),
                  train_data=root, holdout_fraction=0.25, batch_size=4, dropout=0.3,
                  learning_rate=1e-2)
    values.update(overrides)
    return helpers.experiment(tmp_path, **values)


def test_the_cut_gives_inference_mode_features_and_the_same_outputs(tmp_path, monkeypatch):
    cfg = image_experiment(tmp_path, freeze_backbone_steps=2)
    model = task.build_head(cfg, backbones.load_backbone(cfg.backbone), 3)
    backbone = transfer.backbone_of(model)
    features, head = feature_cache.frozen_part(model, backbone)
    assert features.output.shape[-1] == backbone.output.shape[-1]
    images = tf.random.uniform((5, 32, 32, 3), 0, 255)
    pooled = tf.reduce_mean(backbone(model.get_layer("rescaling")(images), training=False), [1, 2])
    assert np.allclose(features(images, training=False), pooled, atol=1e-5)
    assert np.allclose(head(pooled, training=False), model(images, training=False), atol=1e-5)
    assert {id(v) for v in head.trainable_variables} <= {id(v) for v in model.trainable_variables}
    assert not any(w is v for v in head.weights for w in backbone.weights)
    # A table over MAX_BYTES is not built: phase 1 then runs the whole model.
    data = task.load_data(cfg)
    run = base.Run(cfg.replace(labels=data.labels), model, task.make_preprocessor(cfg),
                   tf.distribute.get_strategy())
    cache = feature_cache.FeatureCache()
    cache.adapt_examples(hooks.Examples(data.train), task, data, cfg)
    table_bytes = len(data.train) * features.output.shape[-1] * 4
    monkeypatch.setattr(feature_cache, "MAX_BYTES", table_bytes - 1)
    cache.initialize(run)
    assert cache.table is None


def forget_step_3(model_dir):
    """As if the run had been killed right after step 2's checkpoint."""
    directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
    for name in os.listdir(directory):
        if name.startswith("ckpt-3"):
            os.remove(os.path.join(directory, name))
    tf.compat.v1.train.update_checkpoint_state(directory, "ckpt-2", ["ckpt-2"])


def test_cached_phase_one_trains_the_same_head_then_resumes_into_fine_tuning(tmp_path,
                                                                             monkeypatch):
    traced = []  # the model each traced step runs: the head alone while the table serves
    supervised = hooks.supervised_loss

    def recording(task_):
        inner = supervised(task_)
        return lambda model, inputs, labels: traced.append(model.name) or inner(
            model, inputs, labels)

    monkeypatch.setattr(hooks, "supervised_loss", recording)
    # 16 training images, batch 4: phase 1's 3 steps see 12 of them (a partial table).
    plain = image_experiment(tmp_path, freeze_backbone_steps=3, max_steps=3, checkpoint_steps=2,
                             model_dir=str(tmp_path / "plain"))
    cached = plain.replace(model_dir=str(tmp_path / "cached"), cache_frozen_features=True)
    workflow.train(plain)
    assert set(traced) == {"image_classifier"}
    traced.clear()
    workflow.train(cached)
    forget_step_3(cached.model_dir)
    workflow.train(cached)  # resumes at step 2: the table is computed again
    assert set(traced) == {"head_on_features"}
    _, plain_run, _ = runs.restore(plain.model_dir)
    _, cached_run, _ = runs.restore(cached.model_dir)
    for a, b in zip(plain_run.model.get_layer("logits").weights,
                    cached_run.model.get_layer("logits").weights):
        assert not np.allclose(b.numpy(), 0) and np.allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert feature_cache.phase_one_done(cached.model_dir, cached.freeze_backbone_steps)
    before = [w.numpy().copy() for w in transfer.backbone_of(cached_run.model).weights]
    traced.clear()
    workflow.train(cached.replace(max_steps=5))  # resumes at step 3: phase 2, no table
    assert set(traced) == {"image_classifier"}
    _, run, step = runs.restore(cached.model_dir)
    after = transfer.backbone_of(run.model).weights
    assert step == 5 and not all(np.array_equal(b, a.numpy()) for b, a in zip(before, after))


def test_per_token_features_are_refused(tmp_path):
    from tfimitate.tasks.token_classification import TokenClassification

    cfg = helpers.experiment(tmp_path, task=TokenClassification.NAME,
                             backbone=helpers.tiny_bert_preset(tmp_path))
    model = TokenClassification().build_head(cfg, backbones.load_backbone(cfg.backbone), 3)
    with pytest.raises(UserError, match="one feature vector per example, but the model's frozen "
                                        "backbone ends in \\(None, None, 32\\)"):
        feature_cache.frozen_part(model, transfer.backbone_of(model))


@pytest.mark.slow
def test_a_text_classifier_head_trains_the_same_on_cached_features(tmp_path):
    """Equal heads need a backbone without dropout: the uncached frozen phase still drops
    out inside the backbone (Keras's training=True), cached features never do."""
    base = helpers.experiment(
        tmp_path, task="text_classification", dropout=0.0, freeze_backbone_steps=4, max_steps=4,
        backbone=helpers.tiny_bert_preset(tmp_path, dropout=0.0),
        train_data=helpers.write_table(tmp_path, "train.csv", helpers.sentiment_rows(24)),
        eval_data=helpers.write_table(tmp_path, "eval.csv", helpers.sentiment_rows(8, seed=1)))
    cached = base.replace(model_dir=str(tmp_path / "cached"), cache_frozen_features=True)
    workflow.train(base)
    workflow.train(cached)
    heads = [runs.restore(cfg.model_dir)[1].model.get_layer("logits").get_weights()
             for cfg in (base, cached)]
    for a, b in zip(*heads):
        np.testing.assert_allclose(a, b, atol=1e-5)
