"""Bad image inputs end in one sentence naming the file or flag, before anything is written;
the frozen phase of the transfer recipe resumes into fine-tuning."""

import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
import image_helpers
from tfimitate import runs, workflow
from tfimitate.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    directory = tmp_path_factory.mktemp("image_errors")
    return dict(preset=image_helpers.tiny_image_preset(directory),
                train=image_helpers.write_image_folder(directory / "train", {"a": 4, "b": 4}),
                model_file=image_helpers.tiny_keras_model_file(directory))


def bad_inputs(tmp_path, shared):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    one = image_helpers.write_image_folder(tmp_path / "one", {"only": 3})
    corrupt = image_helpers.write_image_folder(tmp_path / "corrupt", {"a": 2, "b": 2})
    (tmp_path / "corrupt" / "b" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    listing = tmp_path / "listing.csv"
    listing.write_text("path,label\ntrain/a/000.png,a\nmissing.png,b\n")
    records = image_helpers.write_tfrecord(tmp_path / "shard-1.tfrecord", [
        {"image": image_helpers.png_bytes(0, 0), "label": "a"}, {"jpeg": b"", "label": "b"}])
    not_keras = tmp_path / "weights.h5"
    not_keras.write_bytes(b"\x00" * 64)
    return [
        (dict(train_data=str(tmp_path / "empty")), r"--train_data=.*empty: no images found"),
        (dict(train_data=one), r"--train_data=.*one: only one label \(only\)"),
        (dict(train_data=corrupt, strict_images=True),
         r"--train_data=.*corrupt: 1 of 5 files are not decodable .*truncated.jpg"),
        (dict(train_data=str(listing)), r"listing.csv:3: image file missing.png does not exist"),
        (dict(train_data=str(tmp_path / "shard-*.tfrecord"), image_column="image"),
         r"shard-1\.tfrecord: record 2 has no feature 'image' \(features: jpeg, label\)"),
        (dict(backbone=shared["model_file"], backbone_layer="block9"),
         r"--backbone_layer=block9: .*tiny.keras has no such layer; its layers are pixels, scale"),
        (dict(backbone=str(not_keras)), r"--backbone=.*weights.h5: not a loadable Keras model file"),
        (dict(image_augment=("flip", "blur")), r"--image_augment: unknown augmentation 'blur'"),
    ]


def test_bad_images_and_backbones_are_one_sentence_and_write_nothing(tmp_path, shared):
    os.symlink(shared["train"], tmp_path / "train")
    for overrides, message in bad_inputs(tmp_path, shared):
        values = dict(task="image_classification", backbone=shared["preset"],
                      train_data=shared["train"], model_dir=str(tmp_path / "run"),
                      export_dir=str(tmp_path / "export"))
        values.update(overrides)
        with pytest.raises(UserError, match=message):
            workflow.train(helpers.experiment(tmp_path, **values))
        assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()


def test_cli_unknown_backbone_layer_is_one_error_line_and_exit_2(tmp_path, shared):
    result = subprocess.run(
        [sys.executable, "-m", "tfimitate.train", "--task=image_classification",
         f"--backbone={shared['model_file']}", "--backbone_layer=nope",
         f"--train_data={shared['train']}", f"--model_dir={tmp_path}/run"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--backbone_layer=nope" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_frozen_phase_leaves_the_backbone_as_loaded_and_resumes_into_fine_tuning(tmp_path, shared):
    from tfimitate import backbones
    from tfimitate.techniques import transfer

    cfg = helpers.experiment(tmp_path, task="image_classification", backbone=shared["preset"],
                             train_data=shared["train"], holdout_fraction=0.25, batch_size=4,
                             freeze_backbone_steps=2, max_steps=2, checkpoint_steps=1)
    workflow.train(cfg)
    pretrained = backbones.load_backbone(shared["preset"])
    _, run, _ = runs.restore(cfg.model_dir)
    trained = transfer.backbone_of(run.model)
    # Phase 1: no weight and no BatchNorm moving statistic moved; the head did.
    assert all(np.array_equal(a, b) for a, b in zip(pretrained.get_weights(), trained.get_weights()))
    workflow.train(cfg.replace(max_steps=4))  # resumes at step 2: phase 2 fine-tunes
    _, run, step = runs.restore(cfg.model_dir)
    assert step == 4
    assert not all(np.array_equal(a, b) for a, b in zip(
        pretrained.get_weights(), transfer.backbone_of(run.model).get_weights()))
