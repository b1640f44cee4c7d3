"""One loop, every strategy: mirrored, multi-worker, mixed precision, TPU wiring, bad input.

Multi-device runs happen in child processes: logical devices and multi-worker
collectives must be configured before TensorFlow initialises, which this pytest
process already did.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import helpers
import processes
from tfimitate import runs, runtime, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import base, text_classification

TIMEOUT = 240
# Mirrored splits each batch over replicas and sums gradients in another order:
# the loss may differ from one device only by float32 round-off.
MIRRORED_LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("distribute")
    rows = helpers.sentiment_rows(48)
    train = helpers.write_lines(directory, "train.tsv",
                                ["text\tlabel"] + [f"{t}\t{l}" for t, l in rows])
    return directory, helpers.tiny_bert_preset(directory, dropout=0.0), train


def test_mirrored_over_two_devices_follows_the_one_device_loss_curve(data):
    directory, preset, train = data
    cfg = helpers.experiment(directory, backbone=preset, train_data=train, dropout=0.0,
                             max_steps=8, checkpoint_steps=8, labels=("0", "1"))
    processes.write_flagfile(directory / "mirrored", cfg)
    result = processes.train_on_two_cpus(directory / "mirrored", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas one_device 1" in result.stderr and "replicas mirrored 2" in result.stderr
    one = processes.loss_curve(cfg.model_dir + "-one_device")
    mirrored = processes.loss_curve(cfg.model_dir + "-mirrored")
    assert sorted(one) == sorted(mirrored) == list(range(1, 9))
    np.testing.assert_allclose([mirrored[s] for s in one], list(one.values()),
                               atol=MIRRORED_LOSS_TOLERANCE)


def test_multi_worker_trains_and_only_the_chief_writes(data):
    """Two workers on localhost stream four shards: each reads its own two, once per pass."""
    directory, preset, _ = data
    rows = helpers.sentiment_rows(64)
    for shard in range(4):
        helpers.write_lines(directory, f"train-{shard}-of-4.tsv",
                            ["text\tlabel"] + [f"{t}\t{l}" for t, l in rows[shard::4]])
    train = str(directory / "train-*-of-4.tsv")
    cfg = helpers.experiment(directory, backbone=preset, train_data=train, max_steps=6,
                             eval_steps=6, export_dir=str(directory / "export"),
                             model_dir=str(directory / "multi_worker"))
    flagfile = processes.write_flagfile(directory / "multi_worker_flags", cfg)
    cluster = {"worker": [f"localhost:{processes.free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        scratch = directory / f"tmp{index}"
        scratch.mkdir()
        env = processes.child_env(
            TMPDIR=str(scratch),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(processes.train_command(flagfile, "--strategy=multi_worker"),
                                        env=env, stderr=subprocess.PIPE, text=True))
    errors = [worker.communicate(timeout=TIMEOUT)[1] for worker in workers]
    for worker, error in zip(workers, errors):
        assert worker.returncode == 0, error[-3000:]
    assert "MultiWorkerMirroredStrategy" in errors[0]
    assert "streamed (4 files)" in errors[0]
    for index, error in enumerate(errors):
        assert f"--train_data: input pipeline {index + 1} of 2 reads 2 of 4 files: " \
               f"train-{index}-of-4.tsv, train-{index + 2}-of-4.tsv" in error, error[-3000:]
    assert os.listdir(directory / "export") == ["1"]
    checkpoints = os.listdir(os.path.join(cfg.model_dir, "checkpoints"))
    assert "ckpt-6.index" in checkpoints
    assert sorted(os.listdir(cfg.model_dir)) == [".lock", "checkpoints", "eval", "experiment.json",
                                                 "flags.cfg", "logs", "runtime.json",
                                                 "serving_examples.json"]
    with open(os.path.join(cfg.model_dir, "eval", "metrics.json")) as f:
        assert json.load(f)["step"] == 6
    assert os.listdir(directory / "tmp1") == []  # the worker's throw-away folder is gone


@pytest.fixture
def float32_afterwards():
    yield
    runtime.set_precision("float32")


def test_mixed_bfloat16_trains_and_keeps_float32_outputs(data, float32_afterwards):
    directory, preset, train = data
    cfg = helpers.experiment(directory, backbone=preset, train_data=train, max_steps=4,
                             precision="mixed_bfloat16", model_dir=str(directory / "bf16"),
                             export_dir=str(directory / "bf16_export"))
    metrics = workflow.train(cfg)
    assert metrics["step"] == 4 and np.isfinite(metrics["accuracy"])
    _, run, _ = runs.restore(cfg.model_dir)
    model = run.model
    assert model.get_layer("logits").compute_dtype == "float32"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    served = tf.saved_model.load(os.path.join(cfg.export_dir, "1"))
    outputs = served.signatures["serving_default"](text=tf.constant(["a good film"]))
    assert outputs["probabilities"].dtype == tf.float32


class FakeResolver:
    """Stands in for TPUClusterResolver; records the address it was given."""

    created = []

    def __init__(self, tpu):
        FakeResolver.created.append(tpu)


def test_tpu_strategy_resolves_the_given_tpu(monkeypatch):
    calls = []
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", calls.append)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", calls.append)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda resolver: ("tpu", resolver))
    FakeResolver.created.clear()
    kind, resolver = runtime.make_tpu_strategy("grpc://10.0.0.2:8470", resolver_class=FakeResolver)
    assert kind == "tpu" and isinstance(resolver, FakeResolver)
    assert FakeResolver.created == ["grpc://10.0.0.2:8470"] and calls == [resolver, resolver]
    runtime.make_tpu_strategy("local", resolver_class=FakeResolver)
    assert FakeResolver.created[-1] == ""  # the TPU VM's own TPU

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    assert runtime.make_strategy("auto", tpu="my-tpu")[0] == "tpu"
    assert FakeResolver.created[-1] == "my-tpu"


def test_unreachable_tpu_is_a_user_error():
    def unreachable(tpu):
        raise ValueError("no TPU here")

    with pytest.raises(UserError, match="--tpu=my-tpu: cannot reach the TPU"):
        runtime.make_tpu_strategy("my-tpu", resolver_class=unreachable)


def test_tpu_input_path_has_static_int32_batches_and_no_strings(data, monkeypatch):
    monkeypatch.setattr(runtime, "needs_static_shapes", lambda strategy: True)
    directory, preset, train = data
    cfg = helpers.experiment(directory, backbone=preset, train_data=train, batch_size=8)
    cfg = cfg.replace(labels=("0", "1"))
    split = text_classification.read_split(train, cfg, "--train_data")
    task = text_classification.TextClassification()
    run = base.Run(cfg, None, task.make_preprocessor(cfg), tf.distribute.get_strategy())
    ds = task.train_dataset(run, split)
    inputs, labels = ds.element_spec
    assert labels.shape == [8] and labels.dtype == tf.int32
    assert inputs["token_ids"].shape == [8, 32] and inputs["token_ids"].dtype == tf.int32
    assert inputs["segment_ids"].dtype == tf.int32
    for spec in inputs.values():
        assert spec.shape.is_fully_defined() and spec.dtype != tf.string
    for batch, _ in ds.take(len(split) // 8 + 2):  # across a pass boundary: no short batch
        assert batch["token_ids"].shape == [8, 32]


def test_bad_strategy_flags_are_one_sentence_errors(monkeypatch, data):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs the TF_CONFIG environment variable"):
        runtime.make_strategy("multi_worker")
    with pytest.raises(UserError, match="--strategy=tpu needs --tpu"):
        runtime.make_strategy("tpu")

    directory, preset, train = data
    result = subprocess.run(
        [sys.executable, "-m", "tfimitate.train", f"--train_data={train}", f"--backbone={preset}",
         f"--model_dir={directory / 'bad'}", "--strategy=multi_worker"],
        env=processes.child_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --strategy=multi_worker needs the TF_CONFIG environment variable "
        "(cluster and task); set it on every worker.")
    assert not os.path.exists(directory / "bad")
