"""Self-training (--self_train): pseudo-label selection and the flags it refuses (the
technique contract trains it in two rounds, resumes and exports it)."""

import numpy as np
import pytest

import helpers
from tfimitate.errors import UserError
from tfimitate.techniques import distillation, self_training


def test_self_training_keeps_confident_labels_within_the_labelled_prior_per_class():
    probs = np.array([[.99, .01], [.97, .03], [.95, .05], [.6, .4], [.1, .9], [.8, .2]])
    # 5 texts are confident (>= 0.8); class 0 may keep 0.6 x 5 = 3 of its 4, the most
    # confident first; class 1 0.4 x 5 = 2, and has one.
    assert self_training.select(probs, 0.8, np.array([.6, .4])).tolist() == [0, 0, 0, -1, 1, -1]
    assert self_training.select(probs, 1.0, np.array([.5, .5])).tolist() == [-1] * 6


@pytest.mark.parametrize("flags, message", [
    (dict(unlabeled_data="u.txt"), "--self_train needs --teacher"),
    (dict(teacher="runs/t"), "--self_train needs --unlabeled_data"),
    (dict(teacher="runs/t", unlabeled_data="u.txt", pseudo_label_threshold=0.0),
     "--pseudo_label_threshold=0: give a probability in (0, 1]."),
    (dict(teacher="runs/t", unlabeled_data="u.txt", pseudo_label_threshold=1.5),
     "--pseudo_label_threshold=1.5: give a probability in (0, 1]."),
])
def test_self_training_refuses_missing_teacher_text_and_a_bad_threshold(tmp_path, flags, message):
    cfg = helpers.experiment(tmp_path, self_train=True, **flags)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        self_training.from_config(cfg)
    # The teacher labels texts for self-training; distillation steps aside.
    assert distillation.from_config(cfg.replace(teacher="runs/t", unlabeled_data="u.txt")) is None


def test_self_training_refuses_unlabelled_text_that_is_all_labelled_text(tmp_path):
    from tfimitate.tasks import get_task
    from tfimitate.tasks.text_classification import Split

    split = Split("train.csv", ["A good film", "an awful plot"], None, ["1", "0"], [2, 3])
    path = helpers.write_lines(tmp_path, "target.txt", ["a good film!", "An awful plot"])
    with pytest.raises(UserError, match="--unlabeled_data=.*target.txt: every text is already in "
                                        "the training, eval or test data"):
        get_task("text_classification").add_unlabeled(
            split, path, helpers.experiment(tmp_path), "--unlabeled_data")
