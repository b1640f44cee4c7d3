"""Freezing, gradual unfreezing, layer-wise learning-rate decay and L2-SP: frozen weights
stay bit-for-bit, per-weight rates scale AdamW's whole update, the L2-SP anchor is the
pretrained backbone (also after a resume), and every technique trains under mirrored."""

import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
import processes
from samples import TASK_DATA
from tfimitate import runs, runtime, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import base, get_task
from tfimitate.techniques import l2sp, layer_decay
from tfimitate.techniques import parts as backbone_parts
from tfimitate.training import optim

TIMEOUT = 400


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("layer_rates")
    flags, _ = TASK_DATA["text_classification"](directory)
    cfg = helpers.experiment(directory, backbone=helpers.tiny_bert_preset(directory), **flags)
    return directory, cfg


def _model(cfg, techniques=()):
    runtime.set_seeds(cfg.seed)
    return runs.build_model(get_task(cfg.task), cfg, 2, list(techniques))


def _variable(path, value):
    return keras.Variable(np.array(value, "float32"), name=path)


def test_factored_adamw_scales_each_weights_whole_update():
    """Factor 1 is AdamW exactly, 0.5 is AdamW at half the rate (decay included), 0 is
    no change at all; a bias is still kept out of weight decay."""
    rng = np.random.default_rng(0)
    start = {name: rng.normal(size=(3, 2)) for name in ("a", "b", "c", "bias")}
    gradients = [{name: rng.normal(size=(3, 2)).astype("float32") for name in start}
                 for _ in range(5)]

    def train(optimizer, names):
        variables = [_variable(name, start[name]) for name in names]
        for step in gradients:
            optimizer.apply_gradients([(tf.constant(step[v.name]), v) for v in variables])
        return {v.name: v.numpy() for v in variables}

    factored = train(optim.FactoredAdamW({"b": lambda step: 0.5, "c": lambda step: 0.0,
                                          "bias": lambda step: 0.5},
                                         learning_rate=0.1, weight_decay=0.1, epsilon=1e-6),
                     ["a", "b", "c", "bias"])
    plain = train(keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.1, epsilon=1e-6),
                  ["a"])
    half = keras.optimizers.AdamW(learning_rate=0.05, weight_decay=0.1, epsilon=1e-6)
    half.exclude_from_weight_decay(var_names=["bias"])
    halved = train(half, ["b", "bias"])
    assert factored["a"].tobytes() == plain["a"].tobytes()
    np.testing.assert_allclose(factored["b"], halved["b"], rtol=1e-6)
    assert factored["c"].tobytes() == start["c"].astype("float32").tobytes()
    assert not np.allclose(factored["bias"], halved["bias"], rtol=1e-6)  # bias decays here
    excluded = optim.FactoredAdamW({"bias": lambda step: 0.5}, learning_rate=0.1,
                                   weight_decay=0.1, epsilon=1e-6)
    excluded.exclude_from_weight_decay(var_names=["bias"])
    np.testing.assert_allclose(train(excluded, ["bias"])["bias"], halved["bias"], rtol=1e-6)


def test_backbone_parts_and_layer_decay_factors(setup):
    _, cfg = setup
    model = _model(cfg)
    parts = backbone_parts.Parts(model)
    assert [layer.name for layer in parts.layers] == ["transformer_layer_0", "transformer_layer_1"]
    assert {v.path.split("/")[0] for v in parts.embeddings} == {
        "token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm"}
    assert {v.path.split("/")[0] for v in parts.head()} == {"logits"}
    factors = layer_decay.LayerDecay(0.5).learning_rate_factors(model, cfg)
    embeddings = {v.path for v in parts.embeddings}
    for v in model.weights:
        top = v.path.split("/")[0]
        want = {"transformer_layer_1": 0.5, "transformer_layer_0": 0.25}.get(
            top, 0.125 if v.path in embeddings else None)
        assert factors.get(v.path) == want, v.path
    selected = parts.select(["layers:1", "pooled_dense"], "--freeze")
    assert {v.path.split("/")[0] for v in selected} == {"transformer_layer_1", "pooled_dense"}


@pytest.mark.parametrize("names, message", [
    (("encoder",), "--freeze: the backbone has no part 'encoder'; name embeddings, "
                   "layers:I-J \\(0-1\\), backbone, or one of the backbone's layers: .*pooled_dense"),
    (("layers:1-3",), "--freeze: 'layers:1-3' is not a range of the backbone's 2 layers"),
])
def test_freezing_parts_that_do_not_exist_is_one_sentence_and_writes_nothing(
        setup, tmp_path, names, message):
    _, cfg = setup
    bad = cfg.replace(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
                      freeze=names)
    with pytest.raises(UserError, match=message):
        workflow.train(bad)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("task_name", [
    "text_classification", pytest.param("token_classification", marks=pytest.mark.slow)])
def test_frozen_and_waiting_weights_stay_bit_for_bit(task_name, tmp_path):
    """--freeze=embeddings and gradual unfreezing every 2 steps of a 2-layer backbone:
    after 3 steps the head and top layer (and a classifier's pooler) trained; layer 0
    waits for step 4 and the embeddings never train."""
    flags, _ = TASK_DATA[task_name](tmp_path)
    cfg = helpers.experiment(tmp_path, task=task_name, backbone=helpers.tiny_bert_preset(tmp_path),
                             max_steps=3, freeze=("embeddings",), unfreeze_every_steps=2,
                             layer_lr_decay=0.8, l2sp=0.01, **dict(flags, test_data=None))
    workflow.train(cfg)
    task, run, _ = runs.restore(cfg.model_dir)
    runtime.set_seeds(cfg.seed)
    start = {v.path: v.numpy() for v in runs.build_model(task, cfg, len(run.labels), []).weights}
    trained = {"transformer_layer_1", "logits"} | (
        {"pooled_dense"} if task_name == "text_classification" else set())
    for v in run.model.weights:
        top = v.path.split("/")[0]
        same = v.numpy().tobytes() == start[v.path].tobytes()
        assert same == (top not in trained), v.path
    assert not any(v.trainable for v in run.model.weights if "embedding" in v.path)


def test_l2sp_adds_half_lambda_times_the_squared_distance(setup):
    _, cfg = setup
    model = _model(cfg)
    technique = l2sp.L2SP(0.5)
    run = base.Run(cfg, model, None, tf.distribute.get_strategy())
    penalised = technique.wrap_loss(lambda model, inputs, labels: tf.zeros([3]), run)
    assert float(tf.reduce_max(penalised(model, None, None))) == 0.0
    kernel = backbone_parts.find_backbone(model).get_layer("pooled_dense").kernel
    kernel.assign_add(tf.fill(kernel.shape, 0.1))
    model.get_layer("logits").kernel.assign_add(tf.ones_like(model.get_layer("logits").kernel))
    want = 0.5 * 0.5 * 0.01 * np.prod(kernel.shape)  # the head has no anchor
    np.testing.assert_allclose(penalised(model, None, None).numpy(), [want] * 3, rtol=1e-4)


@pytest.mark.slow
def test_l2sp_anchor_is_the_pretrained_backbone_after_a_resume(setup, tmp_path, monkeypatch):
    _, cfg = setup
    run_cfg = cfg.replace(model_dir=str(tmp_path / "run"), max_steps=2, l2sp=0.1)
    workflow.train(run_cfg)
    made = []
    original = l2sp.from_config
    monkeypatch.setattr(l2sp, "from_config", lambda cfg: made.append(original(cfg)) or made[-1])
    workflow.train(run_cfg.replace(max_steps=3))  # resumes from step 2
    anchors = next(t for t in made if hasattr(t, "anchors")).anchors
    pretrained = {v.path: v.numpy() for v in _model(cfg).weights}
    _, trained, _ = runs.restore(run_cfg.model_dir)
    assert anchors and set(anchors) <= set(pretrained)
    for path, anchor in anchors.items():
        assert anchor.numpy().tobytes() == pretrained[path].tobytes(), path
    moved = [v for v in trained.model.weights if v.path in anchors
             and v.numpy().tobytes() != anchors[v.path].numpy().tobytes()]
    assert moved


def test_bad_freeze_from_the_command_line_is_one_error_line(setup, tmp_path):
    directory, cfg = setup
    flagfile = processes.write_flagfile(directory / "cli_flags", cfg)
    result = subprocess.run(
        processes.train_command(flagfile, f"--model_dir={tmp_path / 'run'}", "--freeze=layers:7"),
        env=processes.child_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: --freeze: 'layers:7' is not a range of the backbone's 2 layers; "
                     "give layers:I-J with 0 <= I <= J <= 1."]
    assert not os.path.exists(tmp_path / "run")


# One process per combination: a second MirroredStrategy in the same process reuses
# collective instance keys of the first and fails with a shape mismatch (TF 2.21).
# Trains cfg (sys.argv[1]) with the changes in sys.argv[2] through workflow.train, once
# per strategy, into <model_dir>-one_device and <model_dir>-mirrored.
TRAIN_PER_STRATEGY = """
import json
from tfimitate import workflow
changes = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[2]).items()}
for strategy in ("one_device", "mirrored"):
    workflow.train(cfg.replace(model_dir=f"{cfg.model_dir}-{strategy}", strategy=strategy,
                               **changes))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name, changes", [
    ("careful", dict(freeze=["embeddings"], unfreeze_every_steps=2, layer_lr_decay=0.8, l2sp=0.1)),
    ("lora", dict(lora_rank=2, layer_lr_decay=0.8, save_adapters_only=True)),
])
def test_techniques_train_alike_under_mirrored_and_one_device(setup, name, changes):
    import json

    directory, cfg = setup
    cfg = cfg.replace(model_dir=str(directory / f"mirrored_{name}"), dropout=0.0, max_steps=4,
                      checkpoint_steps=4, labels=("0", "1"), test_data=None,
                      backbone=helpers.tiny_bert_preset(directory, dropout=0.0))
    flags = processes.write_flagfile(directory / f"mirrored_{name}_flags", cfg)
    result = processes.train_on_two_cpus(os.path.dirname(flags), json.dumps(changes),
                                         body=TRAIN_PER_STRATEGY, timeout=2 * TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    one = processes.loss_curve(f"{cfg.model_dir}-one_device")
    mirrored = processes.loss_curve(f"{cfg.model_dir}-mirrored")
    assert sorted(one) == sorted(mirrored) == [1, 2, 3, 4]
    np.testing.assert_allclose([mirrored[s] for s in one], list(one.values()), atol=1e-4)
