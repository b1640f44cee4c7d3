"""LoRA: only adapters and head train, adapter-only checkpoints resume, and the export
merges the adapters (no LoRA variables, no extra ops, the trained model's outputs)."""

import collections
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import helpers
from samples import TASK_DATA, TEXT_TASKS
from tfimitate import runs, runtime, workflow
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.serving import export as export_lib
from tfimitate.tasks import base, get_task
from tfimitate.techniques import lora
from tfimitate.training import checkpoints

LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets=("query", "value"))


@pytest.fixture(scope="module", params=TEXT_TASKS)
def lora_run(request, tmp_path_factory):
    """A LoRA run of each task, trained 4 steps with adapter-only checkpoints."""
    directory = tmp_path_factory.mktemp(f"lora_{request.param}")
    flags, _ = TASK_DATA[request.param](directory)
    cfg = helpers.experiment(directory, task=request.param,
                             backbone=helpers.tiny_bert_preset(directory), max_steps=4,
                             checkpoint_steps=2, keep_checkpoints=5, save_adapters_only=True,
                             **LORA, **flags)
    metrics = workflow.train(cfg)
    return Experiment.load(cfg.model_dir), metrics


def _pretrained(cfg):
    runtime.set_seeds(cfg.seed)
    return runs.build_model(get_task(cfg.task), cfg, len(cfg.labels), [])


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_only_adapters_and_head_train_and_the_backbone_stays_as_loaded(lora_run, tmp_path,
                                                                       caplog):
    """A run with whole-model checkpoints, so the restored backbone is the trained one."""
    cfg, _ = lora_run
    full = cfg.replace(model_dir=str(tmp_path / "full"), save_adapters_only=False, max_steps=2)
    with caplog.at_level("INFO", logger="absl"):
        workflow.train(full)
    _, run, step = runs.restore(full.model_dir)
    assert step == 2
    trainable = [v for v in run.model.trainable_weights]
    assert trainable and all(lora.is_lora_weight(v) or v.path.startswith("logits/")
                             for v in trainable)
    assert {v.path.rsplit("/", 2)[-2] for v in trainable if lora.is_lora_weight(v)} == {
        "query", "value"}
    pretrained = {v.path: v.numpy() for v in _pretrained(cfg).weights}
    frozen = [v for v in run.model.weights
              if v.path in pretrained and not v.path.startswith("logits/")]
    assert len(frozen) == len(pretrained) - 2
    for v in frozen:
        assert v.numpy().tobytes() == pretrained[v.path].tobytes(), v.path
    moved = [v for v in run.model.weights if v.path.endswith("lora_kernel_b")]
    assert moved and all(np.abs(v.numpy()).max() > 0 for v in moved)  # B starts at zero

    count = sum(int(np.prod(v.shape)) for v in trainable)
    total = sum(int(np.prod(v.shape)) for v in run.model.weights)
    assert f"Trainable parameters: {count:,} of {total:,}" in caplog.text


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_adapter_only_checkpoints_are_small_and_evaluate_like_training(lora_run):
    cfg, metrics = lora_run
    variables = dict(tf.train.list_variables(os.path.join(cfg.model_dir, "checkpoints", "ckpt-4")))
    weights = [name for name in variables if name.startswith("weights/")]
    assert weights and all("lora_kernel" in name or "logits" in name for name in weights)
    assert not any(name.startswith("model/") for name in variables)
    assert workflow.evaluate(cfg.model_dir) == metrics  # restore reloads the frozen backbone


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_adapter_only_checkpoint_resumes_to_the_uninterrupted_weights(lora_run, tmp_path):
    cfg, _ = lora_run
    copy = str(tmp_path / "copy")
    shutil.copytree(cfg.model_dir, copy)
    directory = os.path.join(copy, checkpoints.CHECKPOINT_SUBDIR)
    for name in os.listdir(directory):  # as if killed right after step 2's checkpoint
        if name.startswith("ckpt-4"):
            os.remove(os.path.join(directory, name))
    tf.compat.v1.train.update_checkpoint_state(directory, "ckpt-2", ["ckpt-2"])
    workflow.train(cfg.replace(model_dir=copy))
    _, resumed, _ = runs.restore(copy)
    _, uninterrupted, _ = runs.restore(cfg.model_dir)
    for a, b in zip(resumed.model.trainable_weights, uninterrupted.model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def _op_counts(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = [node.op for node in graph.node]
    ops += [node.op for function in graph.library.function for node in function.node_def]
    return collections.Counter(ops)


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_export_merges_adapters_into_the_kernels(lora_run, tmp_path):
    """The adapters are made large so that merging them wrongly would show."""
    cfg, _ = lora_run
    task, run, step = runs.restore(cfg.model_dir)
    rng = np.random.default_rng(0)
    for v in run.model.weights:
        if lora.is_lora_weight(v):
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    examples = runs.load_serving_examples(task, cfg)
    unmerged = task.parity(run, examples)
    merged_model = lora.LoRA(4, 8.0, ("query", "value"), True).prepare_export(run.model, cfg)
    assert not any(lora.is_lora_weight(v) for v in merged_model.weights)
    merged = task.parity(base.Run(cfg, merged_model, run.preprocessor, run.strategy), examples)
    without = _pretrained(cfg)
    without.get_layer("logits").set_weights(run.model.get_layer("logits").get_weights())
    plain = task.parity(base.Run(cfg, without, run.preprocessor, run.strategy), examples)
    for name, (_, outputs) in unmerged.items():
        for key, want in outputs.items():
            if want.dtype.kind == "f":
                np.testing.assert_allclose(merged[name][1][key], want, atol=1e-4)
                assert np.abs(plain[name][1][key] - want).max() > 1e-3  # the adapters matter

    # Through the workflow: the export's parity check holds the reloaded, merged
    # SavedModel to the trained (unmerged) model within 1e-4, after the op audit.
    run = base.Run(cfg.replace(export_dir=str(tmp_path / "lora")), run.model, run.preprocessor,
                   run.strategy)
    path = workflow.export_model(task, run, examples, step)
    saved = [name for name, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))]
    assert saved and not any("lora" in name for name in saved)
    reloaded = tf.saved_model.load(path)
    for name, (inputs, want) in unmerged.items():
        export_lib.check_parity(reloaded.signatures[name], inputs, want, name, tolerance=1e-4)

    # Same ops as the export of a model that never had LoRA (the ops come from the model,
    # so one task shows it).
    if cfg.task != "text_classification":
        return
    plain_run = base.Run(cfg.replace(export_dir=str(tmp_path / "plain"), lora_rank=0,
                                     lora_alpha=None, save_adapters_only=False),
                         without, run.preprocessor, run.strategy)
    plain_path = workflow.export_model(task, plain_run, examples, step)
    assert _op_counts(path) == _op_counts(plain_path)


def test_lora_target_matching_no_layer_is_one_sentence_and_writes_nothing(lora_run, tmp_path):
    cfg, _ = lora_run
    bad = cfg.replace(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
                      lora_targets=("query", "qurey"))
    with pytest.raises(UserError, match="--lora_targets: no layer of the backbone is named "
                                        "'qurey'; choose among .*query.*value"):
        workflow.train(bad)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_adapters_are_not_restored_onto_other_backbone_weights(lora_run, tmp_path):
    """--save_adapters_only: the --backbone folder changed after training (a new download,
    a package upgrade); evaluate and export refuse, instead of serving other weights."""
    cfg, _ = lora_run
    copy = str(tmp_path / "copy")
    shutil.copytree(cfg.model_dir, copy)
    other = helpers.tiny_bert_preset(tmp_path)  # the same shapes, other random weights
    Experiment.load(copy).replace(backbone=other).save(copy)
    before = sorted(os.listdir(copy))
    for action in (lambda: workflow.evaluate(copy),
                   lambda: workflow.export(copy, str(tmp_path / "export"))):
        with pytest.raises(UserError, match="holds only the weights that trained "
                                            r"\(--save_adapters_only\), and the weights it goes onto "
                                            r"\(--backbone\) differ from those it was trained with"):
            action()
    assert sorted(os.listdir(copy)) == before
    assert not os.path.exists(tmp_path / "export") or not os.listdir(tmp_path / "export")


@pytest.mark.parametrize("lora_run", ["text_classification"], indirect=True)
def test_a_lora_rank_as_large_as_a_layer_is_refused(lora_run, tmp_path):
    cfg, _ = lora_run
    bad = cfg.replace(model_dir=str(tmp_path / "run"), lora_rank=32)  # width 32
    with pytest.raises(UserError, match=r"--lora_rank=32 is not below the size of layer '(query|value)' "
                                        r"\(32x2x16\), so its adapters would not be low-rank"):
        workflow.train(bad)
    assert not os.listdir(tmp_path)
