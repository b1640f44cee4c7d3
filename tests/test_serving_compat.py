"""Exports of every kind load and answer on older TF Serving releases (-m slow).

Each export is loaded through TensorFlow's C++ SavedModel loader under the release's own
TensorFlow + TF Text, installed once into a virtualenv (TFIMITATE_SERVING_ENVS or
~/.cache/tfimitate/serving-envs; the first run downloads about 1 GB per release), and its
warmup requests must give this process's outputs within 1e-4. TF Serving 2.12 (TensorFlow
2.12.1 + TF Text 2.12.1) stands in for 2.12-2.19, which all link TF Text 2.12.1.

    python -m pytest -m slow tests/test_serving_compat.py
"""

import os

import pytest

import helpers
from samples import TASK_DATA
from tfimitate import workflow
from tfimitate.serving import compat, op_audit

pytestmark = pytest.mark.slow
RELEASES = ("2.12", "2.20")
ENVIRONMENTS = os.environ.get("TFIMITATE_SERVING_ENVS", compat.DEFAULT_ENVIRONMENTS)


def _flags(kind, directory):
    if kind in TASK_DATA:
        flags, _ = TASK_DATA[kind](directory)
        return dict(task=kind, **flags)
    flags, _ = TASK_DATA["text_classification"](directory)
    if kind == "text_pair":
        rows = ["text,pair,label"] + [f"{t},{t.split()[0]} story,{l}"
                                      for t, l in helpers.sentiment_rows(48)]
        flags = dict(train_data=helpers.write_lines(directory, "pairs.csv", rows),
                     text_pair_column="pair")
    if kind == "sentencepiece":
        flags["backbone"] = helpers.tiny_preset(directory, "sentencepiece")
    if kind == "lora":
        flags.update(lora_rank=4, lora_alpha=8.0)
    return flags


KINDS = ("text_classification", "text_pair", "sentencepiece", "token_classification",
         "image_classification", "multi_task", "lora", "distilled")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """kind -> its exported version directory (each trained 4 steps on a tiny backbone)."""
    runs = {}
    for kind in KINDS:
        directory = tmp_path_factory.mktemp(kind)
        flags = _flags("text_classification" if kind == "distilled" else kind, directory)
        flags.setdefault("backbone", helpers.tiny_bert_preset(directory))
        if kind == "distilled":  # a 1-layer student cut from the text classifier
            teacher = runs["text_classification"]
            flags.update(teacher=teacher.model_dir, backbone=teacher.backbone, student_layers=1)
        cfg = helpers.experiment(directory, export_dir=str(directory / "export"), max_steps=4,
                                 checkpoint_steps=2, **flags)
        workflow.train(cfg)
        runs[kind] = cfg
    return {kind: os.path.join(cfg.export_dir, "1") for kind, cfg in runs.items()}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("kind", KINDS)
def test_export_loads_and_answers_on_an_older_tf_serving(exports, kind, release):
    path = exports[kind]
    assert release in op_audit.supported_releases(path)
    row, = compat.check_versions([path], release, ENVIRONMENTS)
    print(f"{kind} on TF Serving {release}: {row['detail']} (max abs diff {row['max_abs_diff']})")
    assert row["ok"], row["detail"]
