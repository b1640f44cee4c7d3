"""Faults around a run: copies and moves, non-finite weights, damaged checkpoints,
concurrent trainers, outputs that would overwrite inputs, interrupted training."""

import json
import os
import shutil

import numpy as np
import pytest

import helpers
from tfimitate import files, runs, workflow
from tfimitate.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults")
    cfg = helpers.experiment(
        directory, backbone=helpers.tiny_bert_preset(directory), max_steps=4, checkpoint_steps=2,
        train_data=helpers.write_table(directory, "train.csv", helpers.sentiment_rows(40)),
        eval_data=helpers.write_table(directory, "eval.csv", helpers.sentiment_rows(12, seed=1)))
    workflow.train(cfg)
    return cfg


def _metrics(model_dir):
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
        return json.load(f)


def test_a_copy_of_a_run_is_evaluated_itself_and_a_moved_run_still_works(run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run.model_dir, copy)
    workflow.train(run.replace(max_steps=6))  # the original trains on
    assert workflow.evaluate(copy)["step"] == 4
    assert _metrics(copy)["step"] == 4 and _metrics(run.model_dir)["step"] == 6
    moved = str(tmp_path / "elsewhere" / "moved")
    shutil.move(copy, moved)
    assert workflow.evaluate(moved)["step"] == 4


def _add_checkpoint(model_dir, step, corrupt):
    """Saves the run's weights as checkpoint `step`, changed by `corrupt(model)`."""
    import tensorflow as tf

    from tfimitate.training import checkpoints

    _, restored, _ = runs.restore(model_dir)
    corrupt(restored.model)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=restored.model),
                                         os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR), 5)
    manager.save(checkpoint_number=step)


def test_non_finite_weights_are_refused_by_evaluate_and_export(run, tmp_path):
    model_dir = str(tmp_path / "nan")
    shutil.copytree(run.model_dir, model_dir)
    kernel = lambda model: model.get_layer("logits").kernel
    _add_checkpoint(model_dir, 50, lambda model: kernel(model).assign(
        np.full(kernel(model).shape, np.nan, np.float32)))
    for action in (lambda: workflow.evaluate(model_dir),
                   lambda: workflow.export(model_dir, str(tmp_path / "export"))):
        with pytest.raises(UserError, match="checkpoint of step 50 holds non-finite weights"):
            action()
    assert not os.path.exists(tmp_path / "export") or not os.listdir(tmp_path / "export")


def test_finite_weights_with_overflowing_outputs_are_refused_everywhere(run, tmp_path):
    """Weights of 1e38 are finite but their logits are not (as after --learning_rate=1e38):
    evaluate (its clean pass, then --perturb), predict and export refuse them and write
    nothing."""
    model_dir = str(tmp_path / "overflow")
    shutil.copytree(run.model_dir, model_dir)

    def overflow(model):  # pooled outputs of 1 (tanh saturated) times 1e38, 32 times: inf
        for variable in model.weights:
            if variable.path.endswith("pooled_dense/bias") or variable.path == "logits/kernel":
                big = 100.0 if variable.path.endswith("bias") else 1e38
                variable.assign(np.full(variable.shape, big, np.float32))

    _add_checkpoint(model_dir, 50, overflow)
    before = sorted(os.listdir(model_dir)), sorted(os.listdir(os.path.join(model_dir, "eval")))
    inputs = helpers.write_lines(tmp_path, "in.txt", ["a good film", "a bad film"])
    for action in (lambda: workflow.evaluate(model_dir, perturb="typos:0.1"),  # clean first
                   lambda: workflow.predict(model_dir, inputs, str(tmp_path / "out.jsonl")),
                   lambda: workflow.export(model_dir, str(tmp_path / "export"))):
        with pytest.raises(UserError, match="the model.* gives NaN or infinite values for .* "
                                            "example.*its weights overflow") as raised:
            action()
        assert "\n" not in str(raised.value)
    assert (sorted(os.listdir(model_dir)), sorted(os.listdir(os.path.join(model_dir, "eval")))) \
        == before
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "overflow"] or not os.listdir(
        tmp_path / "export")


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(run, tmp_path, caplog):
    model_dir = str(tmp_path / "damaged")
    shutil.copytree(run.model_dir, model_dir)
    _add_checkpoint(model_dir, 60, lambda model: None)
    data = os.path.join(model_dir, "checkpoints", "ckpt-60.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(16)
    with caplog.at_level("WARNING", logger="absl"):
        metrics = workflow.evaluate(model_dir)
    assert metrics["step"] < 60
    assert any("ckpt-60 cannot be read" in r.getMessage() for r in caplog.records)


def test_a_second_trainer_on_the_same_model_dir_is_refused(run):
    with files.RunLock(run.model_dir):
        with pytest.raises(UserError, match="is in use by a training that is still running"):
            workflow.train(run.replace(max_steps=8))
    assert _metrics(run.model_dir)["step"] < 8


def test_predict_refuses_to_overwrite_its_input(run, tmp_path):
    path = helpers.write_table(tmp_path, "in.csv", [("good fun", "1")])
    before = open(path).read()
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "good fun"}\n')
    with pytest.raises(UserError, match="is the --input file"):
        workflow.predict(run.model_dir, str(jsonl), str(jsonl))
    assert jsonl.read_text() == '{"text": "good fun"}\n' and open(path).read() == before


@pytest.mark.parametrize("field", ["model_dir", "export_dir"])
def test_an_output_folder_that_is_a_file_fails_before_training(run, tmp_path, field):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cfg = run.replace(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"))
    cfg = cfg.replace(**{field: str(blocker / "sub")})
    with pytest.raises(UserError, match=f"--{field}=.*is a file, not a folder"):
        workflow.train(cfg)
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_ctrl_c_during_training_says_how_to_resume(run, tmp_path, monkeypatch):
    from tfimitate.tasks.text_classification import TextClassification

    def interrupt(task, run, split):
        raise KeyboardInterrupt

    monkeypatch.setattr(TextClassification, "evaluate", interrupt)
    cfg = run.replace(model_dir=str(tmp_path / "run"), eval_steps=2)
    with pytest.raises(UserError, match=r"interrupted at step 2; re-run the same command to "
                                        r"resume from the last checkpoint \(step 2\)"):
        workflow.train(cfg)


def test_every_training_example_is_seen_once_per_pass():
    """Length buckets are flushed at the end of each pass, so a rare long example is not
    left waiting in a half-full bucket while frequent short ones come round again."""
    import tensorflow as tf

    from tfimitate.data import pipelines

    lengths = [3] * 45 + [30] * 3  # mostly short, a few long
    features = tf.data.Dataset.from_tensor_slices({
        "padding_mask": tf.ragged.constant([[True] * n for n in lengths]).to_tensor(False),
        "labels": tf.range(len(lengths))})
    features = pipelines.encoded(features, lambda batch: batch)
    seen = []
    for _, labels in pipelines.batches(features, 8, 32, shuffle_seed=1, repeat=True):
        seen += labels.numpy().tolist()
        if len(seen) >= len(lengths):
            break
    assert sorted(seen) == list(range(len(lengths)))


def test_predict_reads_the_input_columns_it_is_given(run, tmp_path):
    path = helpers.write_lines(tmp_path, "reviews.csv", ["id,review", "1,good fun", "2,awful"])
    with pytest.raises(UserError, match="column 'text'"):
        workflow.predict(run.model_dir, path, str(tmp_path / "out.jsonl"))
    workflow.predict(run.model_dir, path, str(tmp_path / "out.jsonl"), {"text_column": "review"})
    records = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert [r["text"] for r in records] == ["good fun", "awful"]


def test_predict_on_words_without_tags_and_an_all_o_training_set(tmp_path):
    """NER: a one-column CoNLL input needs no tags; training data without entities is refused."""
    words = helpers.write_lines(tmp_path, "words.txt", ["john", "said", "", "paris"])
    from tfimitate.data import conll

    assert [s.words for s in conll.read_sentences(words, "--input", with_tags=False)] == [
        ["john", "said"], ["paris"]]
    only_o = helpers.write_lines(tmp_path, "o.txt", ["john O", "said O", "", "paris O"])
    cfg = helpers.experiment(tmp_path, task="token_classification", train_data=only_o)
    with pytest.raises(UserError, match="every tag is O"):
        workflow.train(cfg)
    assert not os.path.exists(cfg.model_dir)


def test_a_full_disk_while_checkpointing_leaves_no_temp_folder_and_is_one_line(tmp_path):
    import tensorflow as tf

    from tfimitate.training import checkpoints

    class FullDisk:
        directory = str(tmp_path)

        def save(self, checkpoint_number):  # as TF's writer fails half-way through a shard
            os.makedirs(tmp_path / f"ckpt-{checkpoint_number}_temp")
            (tmp_path / f"ckpt-{checkpoint_number}_temp" / "part-00000-of-00001.data").write_text("x")
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    with pytest.raises(UserError, match=f"checkpoint 5 could not be written to {tmp_path} "
                                        r"\(No space left on device\); free space there"):
        checkpoints.save(FullDisk(), 5)
    assert not os.listdir(tmp_path)


def test_a_full_disk_anywhere_is_one_error_line_and_exit_2(capsys):
    import errno

    from tfimitate.errors import run_cli

    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/sst2/.lock")

    with pytest.raises(SystemExit) as exited:
        run_cli(main, argv=["tfimitate.train"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: the disk is full (writing /runs/sst2/.lock); free some space and re-run: files "
        "are written whole or not at all, and training resumes from its last complete checkpoint."]
