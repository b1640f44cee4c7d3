"""Knowledge distillation on tiny backbones: teachers (run, SavedModel, gRPC dev server),
the cached teacher outputs, the loss, cut students, NER, the report and bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import helpers
from samples import text_classification_data
from tfimitate import runs, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import get_task

UNLABELED = ["a very good film", "the worst plot", "fun and great acting", "boring story",
             "i love this movie", "awful acting", "the best film", "i hate this plot"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny sentiment run, exported: (its Experiment, the export's version directory)."""
    directory = tmp_path_factory.mktemp("teacher")
    cfg = helpers.experiment(directory, backbone=helpers.tiny_bert_preset(directory),
                             export_dir=str(directory / "export"), max_steps=8,
                             **text_classification_data(directory)[0])
    workflow.train(cfg)
    return cfg, os.path.join(cfg.export_dir, "1")


def student(teacher_cfg, tmp_path, **overrides):
    """A student Experiment on the teacher's data, in `tmp_path`."""
    values = dict(train_data=teacher_cfg.train_data, eval_data=teacher_cfg.eval_data,
                  test_data=teacher_cfg.test_data, backbone=teacher_cfg.backbone,
                  teacher=teacher_cfg.model_dir, max_steps=4, seed=7)
    values.update(overrides)
    return helpers.experiment(tmp_path, **values)


def test_distil_from_a_run_with_unlabelled_text_reports_teacher_and_student(teacher, tmp_path):
    teacher_cfg, _ = teacher
    unlabeled = helpers.write_lines(tmp_path, "more.txt", UNLABELED + [""])
    cfg = student(teacher_cfg, tmp_path, unlabeled_data=unlabeled)
    workflow.train(cfg)
    with open(os.path.join(cfg.model_dir, "eval", "distill.json")) as f:
        report = json.load(f)
    assert report["transfer_set"] == {"examples": 48 + 8, "labelled": 48, "unlabelled": 8}
    assert report["teacher"]["kind"] == "run" and report["teacher"]["labels"] == ["0", "1"]
    assert report["teacher"]["parameters"] == report["student"]["parameters"] > 0
    for split in ("eval", "test"):
        assert 0.0 <= report["agreement"][split] <= 1.0
        assert set(report["teacher"][split]) >= {"accuracy", "macro_f1"}
    with open(os.path.join(teacher_cfg.model_dir, "eval", "test_metrics.json")) as f:
        assert report["teacher"]["test"]["accuracy"] == json.load(f)["accuracy"]
    # train, eval and test outputs cached, one chunk each, and reused when the run resumes
    cache = os.path.join(cfg.model_dir, "teacher_outputs")
    chunks = {os.path.join(d, f): os.path.getmtime(os.path.join(cache, d, f))
              for d in os.listdir(cache) for f in os.listdir(os.path.join(cache, d))}
    assert len(chunks) == 3
    workflow.train(cfg.replace(max_steps=6))
    assert {os.path.join(d, f): os.path.getmtime(os.path.join(cache, d, f))
            for d in os.listdir(cache) for f in os.listdir(os.path.join(cache, d))} == chunks


def test_saved_model_and_grpc_teachers_give_the_run_teachers_outputs(teacher, tmp_path):
    from tfimitate.serving.devserver import DevServer
    from tfimitate.techniques.distillation import teachers

    teacher_cfg, version_dir = teacher
    task = get_task("text_classification")
    split = task.load_data(teacher_cfg).train
    cfg = student(teacher_cfg, tmp_path, teacher_batch_size=5)
    expected = teachers.open_teacher(teacher_cfg.model_dir, task, cfg,
                                     runs.restore).probabilities(split)
    server = DevServer("sentiment", teacher_cfg.export_dir, port=0).start()
    try:
        for spec in (version_dir, teacher_cfg.export_dir, f"grpc://{server.target}/sentiment"):
            served = teachers.open_teacher(spec, task, cfg, runs.restore)
            served.check(split)
            assert served.labels == ("0", "1") and not served.logits
            np.testing.assert_allclose(served.probabilities(split), expected, atol=1e-4)
    finally:
        server.stop()


def test_a_grpc_teacher_is_pinned_to_the_version_it_was_probed_at(teacher, tmp_path):
    """The server moves to a new version while the teacher's outputs are cached: refused,
    never a cache mixing both versions' outputs."""
    import shutil

    from tfimitate.serving.devserver import DevServer
    from tfimitate.techniques.distillation import teachers

    teacher_cfg, version_dir = teacher
    served_dir = str(tmp_path / "served")
    shutil.copytree(version_dir, os.path.join(served_dir, "1"))
    task = get_task("text_classification")
    split = task.load_data(teacher_cfg).train
    server = DevServer("sentiment", served_dir, port=0, poll_seconds=3600).start()
    try:
        served = teachers.open_teacher(f"grpc://{server.target}/sentiment", task,
                                       student(teacher_cfg, tmp_path), runs.restore)
        served.check(split)
        assert served.version == 1
        server.versions.unload_all()  # as when a new version replaces it (loading one costs)
        with pytest.raises(UserError, match="were being cached from version 1 of sentiment, but "
                                            "the server no longer serves it; .* re-run"):
            served.probabilities(split)
    finally:
        server.stop()


class _FixedTeacher:
    """A served teacher (teachers._ServedTeacher) answering `values` for every batch."""

    def __new__(cls, values, cfg, output="probabilities"):
        from tfimitate.techniques.distillation import teachers

        class Fixed(teachers._ServedTeacher):
            fingerprint = "fixed"

            def _call(self, signature, batch):
                return {output: np.asarray(values[:len(batch["text"])], np.float32)}

        return Fixed("fixed", get_task("text_classification"), cfg)


@pytest.mark.parametrize("output,rows,problem", [
    ("probabilities", [[0.5, 0.5], [np.nan, 0.5], [1.0, 0.0]], "NaN or infinite values"),
    ("logits", [[1.0, 2.0], [3.0, 1.0], [np.inf, 0.0]], "NaN or infinite values"),
    ("probabilities", [[0.5, 0.5], [1.2, -0.2], [1.0, 0.0]],
     "probabilities that are negative or do not sum to 1"),
])
def test_teacher_outputs_that_are_not_numbers_or_probabilities_are_refused(output, rows, problem,
                                                                            tmp_path):
    cfg = helpers.experiment(tmp_path, teacher="fixed", labels=("0", "1"))
    split = get_task("text_classification").read_file(
        helpers.write_table(tmp_path, "d.csv", helpers.sentiment_rows(3)), cfg, "--x")
    bad = 1 if output == "probabilities" else 2
    with pytest.raises(UserError, match=f"--teacher=fixed .output '{output}'. gives {problem} for "
                                        f"1 example.s., the first being '{split.texts[bad]}'"):
        _FixedTeacher(rows, cfg, output).check(split)


def test_cached_teacher_outputs_holding_nan_are_computed_again(tmp_path):
    from tfimitate.techniques.distillation import teacher_cache

    split = get_task("text_classification").read_file(
        helpers.write_table(tmp_path, "d.csv", helpers.sentiment_rows(2)),
        helpers.experiment(tmp_path, labels=("0", "1")), "--x")
    good = lambda part: np.full([len(part), 2], 0.5, np.float32)
    teacher_cache.cached_outputs(str(tmp_path / "c"), "t", split, lambda part: good(part) * np.nan)
    np.testing.assert_array_equal(
        teacher_cache.cached_outputs(str(tmp_path / "c"), "t", split, good), good(split))


@pytest.mark.slow
def test_distil_from_the_dev_server_over_grpc_with_a_label_map(teacher, tmp_path):
    """The served teacher's labels (0, 1, learned from its `label` output) differ from the
    student's (bad, good): --teacher_label_map maps them."""
    from tfimitate.serving.devserver import DevServer

    teacher_cfg, _ = teacher
    train = helpers.write_table(tmp_path, "named.csv", [
        (text, "good" if label == "1" else "bad") for text, label in helpers.sentiment_rows(20)])
    server = DevServer("sentiment", teacher_cfg.export_dir, port=0).start()
    try:
        cfg = student(teacher_cfg, tmp_path, teacher=f"grpc://{server.target}/sentiment",
                      train_data=train, eval_data=None, test_data=None,
                      teacher_label_map=("0:bad", "1:good"), max_steps=2)
        workflow.train(cfg)
    finally:
        server.stop()
    with open(os.path.join(cfg.model_dir, "eval", "distill.json")) as f:
        report = json.load(f)
    assert report["teacher"]["kind"] == "grpc" and report["teacher"]["parameters"] is None
    assert report["teacher"]["labels"] == ["0", "1"] and "eval" in report["agreement"]


def test_cached_outputs_survive_a_kill_and_are_reused(tmp_path):
    """A child computing chunks slowly is SIGKILLed; the chunks it finished are reused."""
    script = textwrap.dedent(f"""
        import dataclasses, sys, time
        import numpy as np
        sys.path.insert(0, {os.getcwd()!r})
        from tfimitate.techniques.distillation import teacher_cache

        @dataclasses.dataclass
        class Split:
            source: str
            texts: list
            def __len__(self):
                return len(self.texts)
            def subset(self, indices, source):
                return Split(source, [self.texts[i] for i in indices])

        computed = []
        def compute(part):
            time.sleep(float(sys.argv[1]))
            computed.append(len(part))
            return np.array([[int(t.split()[1]), 1.0] for t in part.texts], np.float32)
        out = teacher_cache.cached_outputs(sys.argv[2], "teacher", Split("s", [f"text {{i}}" for i in range(10)]),
                                           compute, chunk_examples=2)
        print(out[:, 0].astype(int).tolist(), len(computed))
    """)
    cache = str(tmp_path / "cache")
    child = subprocess.Popen([sys.executable, "-c", script, "0.5", cache])
    deadline = time.time() + 300
    while time.time() < deadline and _chunks(cache) < 2:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = _chunks(cache)
    assert 2 <= kept < 5
    assert not [f for d in os.listdir(cache) for f in os.listdir(os.path.join(cache, d))
                if not f.endswith(".npy")]  # no torn temporary files count as chunks
    done = subprocess.run([sys.executable, "-c", script, "0", cache], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == f"{list(range(10))} {5 - kept}"  # only missing chunks computed
    assert _chunks(cache) == 5


def _chunks(cache):
    if not os.path.isdir(cache):
        return 0
    return sum(f.endswith(".npy") for d in os.listdir(cache) for f in os.listdir(os.path.join(cache, d)))


def test_distillation_loss_is_temperature_scaled_kl_over_present_units():
    import tensorflow as tf

    from tfimitate.techniques.distillation import distillation_loss

    teacher = np.array([[0.9, 0.1], [0.5, 0.5]], np.float32)
    logits = np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)
    t = 2.0
    soft = lambda p: np.exp(np.log(p) / t) / np.exp(np.log(p) / t).sum(-1, keepdims=True)
    student = np.exp(logits / t) / np.exp(logits / t).sum(-1, keepdims=True)
    expected = t * t * (soft(teacher) * np.log(soft(teacher) / student)).sum(-1)
    got = distillation_loss(tf.constant(teacher), tf.constant(logits), t).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # per word: padded words (all-zero teacher rows) are left out of the mean
    words = distillation_loss(tf.constant(teacher[None]), tf.constant(logits[None]), t).numpy()
    padded = distillation_loss(
        tf.constant(np.concatenate([teacher, np.zeros([1, 2])])[None], tf.float32),
        tf.constant(np.concatenate([logits, [[5.0, -5.0]]])[None], tf.float32), t).numpy()
    np.testing.assert_allclose(words, [expected.mean()], rtol=1e-5)
    np.testing.assert_allclose(padded, words, rtol=1e-5)


def test_unlabelled_examples_learn_from_the_teacher_only():
    import tensorflow as tf

    from tfimitate.tasks.text_classification import TextClassification

    losses = TextClassification().example_loss(tf.constant([1, -1]), tf.constant([[0.0, 3.0], [9.0, 0.0]]))
    assert losses.numpy()[1] == 0.0 and losses.numpy()[0] > 0.0


def test_label_map_moves_teacher_columns_to_the_student():
    from tfimitate.techniques import distillation

    matrix = distillation.label_matrix(("neg", "neu", "pos"), ("bad", "good"),
                                       ("neg:bad", "pos:good"), "t")
    moved = distillation.to_student(np.array([[0.2, 0.6, 0.2], [0, 0, 0]], np.float32), matrix)
    np.testing.assert_allclose(moved, [[0.5, 0.5], [0.0, 0.0]])
    assert distillation.label_matrix(("b", "a"), ("a", "b"), None, "t").tolist() == [[0, 1], [1, 0]]


@pytest.mark.slow
def test_cut_student_keeps_every_other_layer_of_the_teacher(teacher, tmp_path):
    from tfimitate.techniques import parts
    from tfimitate.techniques.distillation import cut_layers

    teacher_cfg, _ = teacher
    assert cut_layers.kept_layers(6, 3, "every_other") == [1, 3, 5]
    assert cut_layers.kept_layers(12, 4, "every_other") == [2, 5, 8, 11]
    assert cut_layers.kept_layers(6, 3, "bottom") == [0, 1, 2]
    cfg = student(teacher_cfg, tmp_path, student_layers=1, max_steps=1, learning_rate=0.0,
                  warmup_ratio=0.0)
    workflow.train(cfg)
    _, run, _ = runs.restore(cfg.model_dir)
    _, teacher_run, _ = runs.restore(teacher_cfg.model_dir)
    small, big = parts.find_backbone(run.model), parts.find_backbone(teacher_run.model)
    assert cut_layers.num_layers(run.model) == 1
    for got, want in ((small.get_layer("transformer_layer_0"), big.get_layer("transformer_layer_1")),
                      (small.get_layer("token_embedding"), big.get_layer("token_embedding")),
                      (run.model.get_layer("logits"), teacher_run.model.get_layer("logits"))):
        for a, b in zip(got.get_weights(), want.get_weights()):
            np.testing.assert_array_equal(a, b)
    with open(os.path.join(cfg.model_dir, "eval", "distill.json")) as f:
        report = json.load(f)
    assert report["student"]["parameters"] < report["teacher"]["parameters"]


@pytest.mark.parametrize("case", ["labels", "signature", "unreachable", "empty", "cut_saved_model"])
def test_bad_input_is_one_clear_error_and_writes_nothing(case, teacher, tmp_path, monkeypatch):
    from tfimitate.techniques.distillation import teachers

    monkeypatch.setattr(teachers, "GRPC_BACKOFF_SECONDS", 0.01)
    teacher_cfg, version_dir = teacher
    run_dir = tmp_path / "out"
    overrides = {
        "labels": dict(train_data=helpers.write_table(tmp_path, "named.csv", [
            (text, "good" if label == "1" else "bad") for text, label in helpers.sentiment_rows(20)]),
            eval_data=None, test_data=None),
        "signature": dict(teacher=version_dir, teacher_output="label"),
        "unreachable": dict(teacher="grpc://127.0.0.1:1/sentiment", teacher_timeout=1.0),
        "empty": dict(unlabeled_data=helpers.write_lines(tmp_path, "empty.txt", ["", "  "])),
        "cut_saved_model": dict(teacher=version_dir, student_layers=1),
    }[case]
    messages = {
        "labels": r"the teacher's labels \(0, 1\) differ from the student's \(bad, good\); map them "
                  "with --teacher_label_map",
        "signature": "output 'label' of signature 'serving_default' is .* not class probabilities",
        "unreachable": r"--teacher=127.0.0.1:1: no server answers there \(4 attempts\)",
        "empty": "--unlabeled_data=.*empty.txt: the file holds no text",
        "cut_saved_model": "--student_layers cuts the teacher's backbone, which needs a tfimitate run",
    }
    cfg = student(teacher_cfg, run_dir, **overrides)
    with pytest.raises(UserError, match=messages[case]) as raised:
        workflow.train(cfg)
    assert "\n" not in str(raised.value)
    assert not os.path.exists(run_dir)


def test_a_signature_without_class_scores_is_refused(tmp_path):
    """A SavedModel whose signature returns only strings cannot teach."""
    import tensorflow as tf

    from tfimitate.techniques.distillation import teachers

    class Labeller(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"label": tf.fill(tf.shape(text), "pos")}

    module = Labeller()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    cfg = helpers.experiment(tmp_path, teacher=str(tmp_path / "m"), labels=("0", "1"))
    task = get_task("text_classification")
    split = task.read_file(helpers.write_table(tmp_path, "d.csv", helpers.sentiment_rows(4)), cfg, "--x")
    with pytest.raises(UserError, match="returns no probabilities or logits .outputs: label.; name "
                                        "its class-score output with --teacher_output"):
        teachers.open_teacher(str(tmp_path / "m"), task, cfg, runs.restore).check(split)


@pytest.mark.slow
def test_ner_student_learns_each_words_tag_distribution_from_a_tag_words_saved_model(tmp_path):
    """Token-level distillation: a tiny NER run is exported; a student distils from the
    SavedModel's tag_words signature on the CoNLL data plus unlabelled raw sentences."""
    from samples import token_classification_data

    flags, raw_sentences = token_classification_data(tmp_path)
    preset = helpers.tiny_bert_preset(tmp_path)
    teacher_cfg = helpers.experiment(tmp_path / "teacher", task="token_classification",
                                     backbone=preset, export_dir=str(tmp_path / "export"),
                                     max_steps=6, **flags)
    workflow.train(teacher_cfg)
    cfg = helpers.experiment(tmp_path / "student", task="token_classification", backbone=preset,
                             teacher=str(tmp_path / "export"), unlabeled_data=raw_sentences,
                             max_steps=4, seed=3, **flags)
    workflow.train(cfg)
    with open(os.path.join(cfg.model_dir, "eval", "distill.json")) as f:
        report = json.load(f)
    assert report["teacher"]["kind"] == "saved_model"
    assert report["teacher"]["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert report["transfer_set"]["unlabelled"] == 2
    with open(os.path.join(teacher_cfg.model_dir, "eval", "test_metrics.json")) as f:
        assert report["teacher"]["test"]["f1"] == pytest.approx(json.load(f)["f1"])
    assert 0.0 <= report["agreement"]["test"] <= 1.0


def test_cli_unreachable_teacher_is_one_error_line_and_exit_2(tmp_path):
    from processes import child_env

    train = helpers.write_table(tmp_path, "train.csv", helpers.sentiment_rows(20))
    result = subprocess.run(
        [sys.executable, "-m", "tfimitate.train", "--teacher=grpc://127.0.0.1:1/sentiment",
         f"--train_data={train}", f"--model_dir={tmp_path / 'run'}", "--teacher_timeout=1",
         f"--backbone={helpers.tiny_bert_preset(tmp_path / 'backbone')}"],
        capture_output=True, text=True, env=child_env(), timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --teacher=127.0.0.1:1: no server answers there (4 attempts)")
    assert not os.path.exists(tmp_path / "run")
