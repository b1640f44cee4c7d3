"""Image regression: one number per image (an age, a price, a quality score) by transfer.

Data, model and serving front end are image classification's (tasks/image_classification.py):
a .csv/.tsv/.jsonl listing of `--image_column` paths with a numeric `--label_column`,
TFRecord files with a numeric label feature, a TFDS split, or a folder whose sub-folders are
named by numbers, with optional side features (`--numeric_columns`, `--categorical_columns`:
tasks/side_features.py) joined to the pooled image features; the image backbone behind its
rescaling, pooling, dropout and one float32 output. Targets, loss, metrics and the serving module are the regression story
(tasks/regression.py): `serving_default` takes encoded images (`image_bytes`) and returns
`score` (and the raw side columns beside `image_bytes`); `regress` takes them as tf.Example
features.

Example:
    python -m tfimitate.train --task=image_regression --train_data=photos/train.csv \
        --image_column=path --label_column=age --normalize_targets --model_dir=runs/ages
"""

import dataclasses
from typing import List, Optional

import numpy as np

from tfimitate.data import images
from tfimitate.tasks import image_classification, side_features
from tfimitate.tasks.image_classification import ImageClassification
from tfimitate.tasks.regression import RegressionTask, parse_target

# Image classification's own options (columns, size, normalization, backbone cut) read here.
_IMAGES = ImageClassification()


@dataclasses.dataclass(eq=False)
class Split:
    """Images (a data/images.py Split, in a fixed order) and their targets (None: no label)."""

    images: images.Split
    targets: List[Optional[float]]

    source = property(lambda self: self.images.source)
    lines = property(lambda self: self.images.lines)
    side = property(lambda self: self.images.side)

    def __len__(self):
        return len(self.images)

    def subset(self, indices, source):
        indices = list(indices)
        return Split(self.images.subset(indices, source), [self.targets[i] for i in indices])


class ImageRegression(RegressionTask):
    """Image regression (see the module)."""

    NAME = "image_regression"
    RESUME_FIELDS = ("image_column", "backbone_layer", "image_size", "image_normalization",
                     "numeric_columns", "categorical_columns") + RegressionTask.RESUME_FIELDS
    INPUTS = ("images",)

    def validate(self, cfg):
        """The regression checks, then image classification's (size, backbone cut)."""
        super().validate(cfg)
        _IMAGES.validate(cfg)

    def load_data(self, cfg):
        """The regression splits; with side columns, their preprocessing learned on the
        training split (unless given) as --side_feature_stats."""
        return side_features.with_learned(cfg, super().load_data(cfg))

    def read(self, path, cfg, flag, with_labels=True):
        """Decodable images of a listing, TFRecord files, a TFDS split or a folder, each with
        its number (a label that is not one is refused with its file:line)."""
        split = images.check_images(image_classification.read_images(path, cfg, flag, with_labels),
                                    cfg.strict_images, flag)
        where = lambda i: f"{split.file(i)}:{_IMAGES.line(split, i)}" if split.lines[i] \
            else split.paths[i]
        targets = [parse_target(split.labels[i], where(i), f"--label_column={cfg.label_column}")
                   if with_labels else None for i in range(len(split))]
        return Split(split, targets)

    def example(self, split, i):
        """{"image": its path, side column: value (None: missing)}."""
        return _IMAGES.example(split.images, i)

    def example_defaults(self, run):
        """A side feature left out of a tf.Example is missing."""
        return _IMAGES.example_defaults(run)

    def make_preprocessor(self, cfg):
        """The images.ImageFormat of the backbone (as image classification's)."""
        return _IMAGES.make_preprocessor(cfg)

    def build_head(self, cfg, backbone, num_outputs):
        """Image classification's model (rescaling, backbone, pooling, dropout) with one output."""
        return _IMAGES.build_head(cfg, backbone, num_outputs)

    def train_dataset(self, run, split, extras=None):
        """Endless batches of (model inputs, standardised targets), or of (inputs,
        {"labels": targets, **extras}), reshuffled every pass."""
        order = images.permutation(len(split), run.cfg.seed)
        ordered = split.subset(order.tolist(), split.source)
        extras = {name: np.asarray(values)[order] for name, values in (extras or {}).items()}
        targets = self.training_targets(ordered, run.cfg)
        return image_classification.training_batches(
            run, ordered.images, {"labels": {"labels": targets, **extras} if extras else targets})

    def prediction_batches(self, run, split):
        """Batches of (model inputs, example index); decoded images cached per split."""
        return image_classification.prediction_batches(run, split.images)

    def serving_signature(self, run):
        """Encoded images `image_bytes`, decoded, resized and rescaled in the graph (and the
        side columns, encoded in the graph)."""
        return _IMAGES.serving_signature(run)

    def serving_inputs(self, split, indices):
        """{"image_bytes": [the encoded files], side column: [raw values]}."""
        return _IMAGES.serving_inputs(split.images, indices)

    def serving_examples(self, split):
        """Up to 32 real image files spread over `split`, at most 4 MB of them."""
        return _IMAGES.serving_examples(split.images)

