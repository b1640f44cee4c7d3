"""Preemption: SIGKILL `tfimitate.train` anywhere, re-run the same command, get the same run
(here on streamed shards: the same batches, none twice, none skipped, across passes).

One uninterrupted run (in this process) is the reference. A child process is
killed at a random moment around a random checkpoint (so sometimes while that
checkpoint is being written), torn checkpoint files are planted, the same command
is re-run and killed while it writes the export, then run once more to finish.
Set TFIMITATE_KILL_SEED to replay a kill moment.
"""

import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import helpers
import processes
from tfimitate import workflow
from tfimitate.training import checkpoints, loop

MAX_STEPS = 30
TIMEOUT = 240
# Dropout seeds are checkpointed and the data order is replayed, so the resumed run
# repeats the uninterrupted one up to float32 round-off between processes.
LOSS_TOLERANCE = 1e-4


def _run_until(command, condition, delay):
    """Starts `command`; SIGKILLs it `delay` s after `condition()` holds. Returns stderr.

    A process that already finished by then counts as killed just after it finished.
    """
    process = subprocess.Popen(command, env=processes.child_env(), stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + TIMEOUT
    while not condition():
        assert process.poll() is None, "training ended before the kill:\n" + process.stderr.read()[-3000:]
        assert time.time() < deadline, "the kill condition never came"
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)  # a no-op if it already finished (a kill just too late)
    _, error = process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGKILL, 0), error[-3000:]
    return error


def _checkpoint_files(model_dir, step):
    directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
    return os.path.isdir(directory) and any(
        name.startswith(f"ckpt-{step}.") or name.startswith(f"ckpt-{step}_temp")
        for name in os.listdir(directory))


def _versions_are_complete(export_dir):
    visible = [name for name in os.listdir(export_dir) if not name.startswith(".")]
    for name in visible:
        assert name.isdigit(), f"{name} in {export_dir} is not a version directory"
        assert tf.saved_model.contains_saved_model(os.path.join(export_dir, name))
    return visible


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resume")
    rows = helpers.sentiment_rows(96)
    for shard in range(3):  # streamed: the resumed stream must continue where it stopped
        helpers.write_lines(directory, f"train-{shard}.tsv",
                            ["text\tlabel"] + [f"{t}\t{l}" for t, l in rows[shard::3]])
    train = str(directory / "train-*.tsv")
    cfg = helpers.experiment(directory, backbone=helpers.tiny_bert_preset(directory),
                             train_data=train, max_steps=MAX_STEPS, checkpoint_steps=5,
                             eval_steps=MAX_STEPS, export_dir=str(directory / "export"))
    reference = cfg.replace(model_dir=str(directory / "reference"), export_dir=None)
    reference_metrics = workflow.train(reference)
    command = processes.train_command(processes.write_flagfile(directory / "flags", cfg))

    seed = int(os.environ.get("TFIMITATE_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    kill_at, delay = rng.choice([10, 15, 20, 25]), rng.uniform(0.0, 0.05)
    print(f"TFIMITATE_KILL_SEED={seed}: SIGKILL {delay * 1000:.0f} ms after ckpt-{kill_at} appears")
    _run_until(command, lambda: _checkpoint_files(cfg.model_dir, kill_at), delay)
    latest = tf.train.latest_checkpoint(os.path.join(cfg.model_dir, checkpoints.CHECKPOINT_SUBDIR))
    saved_step = int(latest.rsplit("-", 1)[1])
    for name, content in (("ckpt-95.index", b"torn"), ("ckpt-95.data-00000-of-00001", b"\0" * 7)):
        with open(os.path.join(cfg.model_dir, checkpoints.CHECKPOINT_SUBDIR, name), "wb") as f:
            f.write(content)

    temporary = lambda: any(n.startswith(".tmp-") for n in os.listdir(cfg.export_dir)) \
        if os.path.isdir(cfg.export_dir) else False
    resumed_log = _run_until(command, temporary, rng.uniform(0.0, 0.2))
    versions_after_kill = _versions_are_complete(cfg.export_dir)

    final = subprocess.run(command, env=processes.child_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert final.returncode == 0, final.stderr[-3000:]
    with open(os.path.join(cfg.model_dir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    return dict(cfg=cfg, reference=reference, reference_metrics=reference_metrics,
                saved_step=saved_step, resumed_log=resumed_log, final_log=final.stderr,
                versions_after_kill=versions_after_kill, metrics=metrics)


def test_rerun_resumes_from_the_last_complete_checkpoint(runs):
    assert 5 <= runs["saved_step"] < MAX_STEPS
    assert f"at step {runs['saved_step']} of {MAX_STEPS}" in runs["resumed_log"]
    assert "Resumed from checkpoint" in runs["resumed_log"]
    assert f"ckpt-{runs['saved_step']} " in runs["resumed_log"]  # not the torn ckpt-95
    assert f"Training already reached step {MAX_STEPS}" in runs["final_log"]


def test_resumed_run_matches_an_uninterrupted_one(runs):
    assert runs["metrics"]["step"] == MAX_STEPS
    assert runs["metrics"]["accuracy"] == pytest.approx(runs["reference_metrics"]["accuracy"], abs=0.01)
    resumed = processes.loss_curve(runs["cfg"].model_dir)
    reference = processes.loss_curve(runs["reference"].model_dir)
    assert sorted(resumed) == sorted(reference) == list(range(1, MAX_STEPS + 1))
    np.testing.assert_allclose([resumed[s] for s in reference], list(reference.values()),
                               atol=LOSS_TOLERANCE)


def test_a_kill_during_export_leaves_no_partial_version(runs):
    export_dir = runs["cfg"].export_dir
    # Killed before the rename nothing is visible; after it, version 1 is complete.
    assert runs["versions_after_kill"] in ([], ["1"])
    expected = ["1"] if runs["versions_after_kill"] == [] else ["1", "2"]
    assert sorted(_versions_are_complete(export_dir)) == expected
    assert not [name for name in os.listdir(export_dir) if name.startswith(".tmp-")]


def test_non_finite_loss_stops_training_and_exports_nothing(tmp_path):
    rows = helpers.sentiment_rows(32)
    train = helpers.write_lines(tmp_path, "train.tsv", ["text\tlabel"] + [f"{t}\t{l}" for t, l in rows])
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=train, max_steps=20, checkpoint_steps=1,
                             learning_rate=1e30, warmup_ratio=0.0,
                             export_dir=str(tmp_path / "export"))
    with pytest.raises(loop.NonFiniteLossError, match=r"the training loss became (nan|inf) at step (\d+)") as error:
        workflow.train(cfg)
    failed_step = int(error.value.args[0].split("at step ")[1].split(",")[0])
    state = tf.train.get_checkpoint_state(os.path.join(cfg.model_dir, checkpoints.CHECKPOINT_SUBDIR))
    saved = [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []
    assert all(step < failed_step for step in saved)
    assert not os.path.exists(cfg.export_dir)
    assert not os.path.exists(os.path.join(cfg.model_dir, "eval"))
