"""Text classification end to end on a tiny random backbone: train, resume, evaluate,
predict, export (signature, assets, parity, versions), and the errors users cause."""

import json
import os

import numpy as np
import pytest

import helpers
from tfimitate import runs, workflow
from tfimitate.config import Experiment
from tfimitate.errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained for 6 steps with eval/test data and an export."""
    root = tmp_path_factory.mktemp("tc")
    cfg = helpers.experiment(
        root, backbone=helpers.tiny_bert_preset(root),
        train_data=helpers.write_table(root, "train.csv", helpers.sentiment_rows(64)),
        eval_data=helpers.write_table(root, "eval.csv", helpers.sentiment_rows(40, seed=1)),
        test_data=helpers.write_table(root, "test.csv", helpers.sentiment_rows(20, seed=2)),
        export_dir=str(root / "export"), precision="auto")
    from tfimitate.tasks.text_classification import TextClassification

    evaluated = []
    original = TextClassification.evaluate

    def counting_evaluate(task, run, split):
        evaluated.append(os.path.basename(split.source))
        return original(task, run, split)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TextClassification, "evaluate", counting_evaluate)
        metrics = workflow.train(cfg)
    # The final eval in the loop is reused for the report, not run twice.
    assert evaluated == ["eval.csv", "test.csv"]
    return cfg, metrics


def test_training_writes_config_metrics_and_plot(trained):
    cfg, metrics = trained
    saved = Experiment.load(cfg.model_dir)
    assert saved.labels == ("0", "1") and saved.max_steps == 6
    from tfimitate import runtime

    resolved = json.load(open(os.path.join(cfg.model_dir, "runtime.json")))  # auto stays "auto"
    assert saved.precision == "auto" and resolved["precision"] == runtime.resolve_precision(
        "auto", runtime.cpu_flags())[0]
    flagfile = open(os.path.join(cfg.model_dir, "flags.cfg")).read()
    assert "--train_data=" in flagfile and "--labels=0,1" in flagfile
    written = json.load(open(os.path.join(cfg.model_dir, "eval", "metrics.json")))
    assert written["step"] == 6
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert key in written
    assert sum(map(sum, written["confusion_matrix"])) == 40
    assert set(written["per_class"]) == {"0", "1"}
    assert os.path.getsize(os.path.join(cfg.model_dir, "eval", "metrics_confusion_matrix.png")) > 1000
    assert os.path.isfile(os.path.join(cfg.model_dir, "eval", "test_metrics.json"))
    assert os.listdir(os.path.join(cfg.model_dir, "logs", "train"))


def test_export_signature_assets_and_outputs(trained):
    import tensorflow as tf

    cfg, _ = trained
    version_dir = os.path.join(cfg.export_dir, "1")
    assert sorted(os.listdir(cfg.export_dir)) == ["1"]
    assert open(os.path.join(version_dir, "assets", "labels.txt")).read().split() == ["0", "1"]
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"text"}
    out = serve(text=tf.constant(["the film was good", "awful boring", ""]))
    assert out["label"].dtype == tf.string and out["label"].shape == [3]
    assert out["class_id"].dtype == tf.int64
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == [3, 2]
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    labels = [b.decode() for b in out["label"].numpy()]
    assert labels == [["0", "1"][i] for i in out["class_id"].numpy()]


def test_rerun_resumes_from_last_checkpoint(trained, caplog):
    cfg, _ = trained
    resumed = cfg.replace(max_steps=9, export_dir=None)
    with caplog.at_level("INFO", logger="absl"):
        metrics = workflow.train(resumed)
    assert metrics["step"] == 9
    assert any("Resumed from checkpoint" in r.getMessage() and "at step 6" in r.getMessage()
               for r in caplog.records)


def test_evaluate_predict_and_second_export(trained, tmp_path):
    cfg, _ = trained
    metrics = workflow.evaluate(cfg.model_dir, cfg.test_data)
    assert metrics["examples"] == 20 and metrics["step"] >= 6

    inputs = helpers.write_lines(tmp_path, "in.txt", ["good fun", "", "worst plot"])
    assert workflow.predict(cfg.model_dir, inputs, str(tmp_path / "out.jsonl")) == 2
    lines = [json.loads(l) for l in open(tmp_path / "out.jsonl")]
    assert [r["text"] for r in lines] == ["good fun", "worst plot"]
    assert all(r["label"] in ("0", "1") and 0.5 <= r["probability"] <= 1 for r in lines)
    workflow.predict(cfg.model_dir, inputs, str(tmp_path / "out.csv"))
    assert open(tmp_path / "out.csv").readline().startswith("text,label,probability")

    assert workflow.export(cfg.model_dir, cfg.export_dir).endswith(os.sep + "2")
    # The same checkpoint is not exported twice unless a version is asked for.
    assert workflow.export(cfg.model_dir, cfg.export_dir).endswith(os.sep + "2")
    assert sorted(os.listdir(cfg.export_dir)) == ["1", "2"]
    with pytest.raises(UserError, match="already exists"):
        workflow.export(cfg.model_dir, cfg.export_dir, version=2)


def test_holdout_when_no_eval_data(tmp_path):
    from tfimitate.tasks.text_classification import TextClassification

    cfg = helpers.experiment(tmp_path, train_data=helpers.write_table(
        tmp_path, "t.csv", helpers.sentiment_rows(50) + [("", "0"), ("dup", "1"), ("dup", "1")]),
        holdout_fraction=0.2)
    data = TextClassification().load_data(cfg)
    assert len(data.eval) == 10 and len(data.train) == 41
    assert not set(data.eval.texts) & set(data.train.texts)
    again = TextClassification().load_data(cfg)
    assert again.eval.texts == data.eval.texts  # seeded



def test_eval_and_test_texts_seen_in_training_are_counted_in_a_warning(tmp_path, caplog):
    """SST-2's test sentences are Rotten Tomatoes snippets: a leak users must hear about."""
    from tfimitate.tasks.text_classification import TextClassification

    train = [("A fine film.", "1"), ("It's dull.", "0"), ("great fun", "1"), ("awful", "0")]
    cfg = helpers.experiment(
        tmp_path, train_data=helpers.write_table(tmp_path, "train.csv", train),
        eval_data=helpers.write_table(tmp_path, "eval.csv", [("new words", "1"), ("bad", "0")]),
        test_data=helpers.write_table(tmp_path, "test.csv",
                                      [("a fine film", "1"), ("it 's dull", "0"), ("other", "0")]))
    with caplog.at_level("WARNING", logger="absl"):
        TextClassification().load_data(cfg)
    assert "test.csv: 2 of its 3 texts are also in the training data" in caplog.text
    assert "eval.csv" not in caplog.text


# ---- Errors a user can cause: one sentence, nothing written ----------------

def bad_input_cases(tmp_path):
    good = helpers.write_table(tmp_path, "good.csv", helpers.sentiment_rows(20))
    unseen = helpers.write_table(tmp_path, "unseen.csv", [("fine film", "1"), ("odd", "maybe")])
    empty = helpers.write_lines(tmp_path, "empty.csv", ["text,label"])
    one_label = helpers.write_table(tmp_path, "one.csv", [("a", "1"), ("b", "1")])
    return {
        "missing file": (dict(train_data=str(tmp_path / "nope.csv")), "does not exist"),
        "missing column": (dict(train_data=good, text_column="sentence"), "no column 'sentence'"),
        "unseen eval label": (dict(train_data=good, eval_data=unseen), r"unseen.csv:3: label 'maybe'"),
        "empty data": (dict(train_data=empty), "no examples"),
        "one label": (dict(train_data=one_label), "only one label"),
        "bad backbone folder": (dict(train_data=good, backbone=str(tmp_path / "none/x")), "does not exist"),
    }


@pytest.mark.parametrize("case", ["missing file", "missing column", "unseen eval label",
                                  "empty data", "one label", "bad backbone folder"])
def test_bad_input_fails_before_writing(tmp_path, case):
    overrides, message = bad_input_cases(tmp_path)[case]
    cfg = helpers.experiment(tmp_path, export_dir=str(tmp_path / "export"), **overrides)
    with pytest.raises(UserError, match=message):
        workflow.train(cfg)
    assert not os.path.exists(cfg.model_dir) and not os.path.exists(cfg.export_dir)


def test_non_numeric_version_directory_is_refused(tmp_path):
    (tmp_path / "export" / "latest").mkdir(parents=True)
    cfg = helpers.experiment(tmp_path, export_dir=str(tmp_path / "export"),
                             train_data=helpers.write_table(tmp_path, "t.csv", helpers.sentiment_rows(20)))
    with pytest.raises(UserError, match="holds 'latest', which is not a numeric version"):
        workflow.train(cfg)
    assert not os.path.exists(cfg.model_dir)


def test_model_dir_of_another_experiment_is_refused(trained):
    cfg, _ = trained
    with pytest.raises(UserError, match="holds a run with --backbone"):
        workflow.train(cfg.replace(backbone="minilm_l6"))


def test_text_pair_task_reads_pairs_and_exports_both_inputs(tmp_path):
    import tensorflow as tf
    from tfimitate.tasks import base
    from tfimitate.tasks.text_classification import TextClassification

    task = TextClassification()
    path = helpers.write_lines(tmp_path, "pairs.jsonl", [
        json.dumps({"premise": f"the film {i}", "hypothesis": h, "label": l})
        for i, (h, l) in enumerate([("good", "yes"), ("bad", "no")] * 6)])
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path), train_data=path,
                             text_column="premise", text_pair_column="hypothesis",
                             export_dir=str(tmp_path / "export"))
    data = task.load_data(cfg)
    assert data.labels == ("no", "yes") and data.train.pairs is not None
    cfg = cfg.replace(labels=data.labels)
    model = runs.build_model(task, cfg, len(data.labels), [])
    run = base.Run(cfg, model, task.make_preprocessor(cfg), tf.distribute.get_strategy())
    features, labels = next(iter(task.train_dataset(run, data.train)))
    assert features["segment_ids"].numpy().max() == 1  # the pair is the second segment
    path = workflow.export_model(task, run, task.serving_examples(data.eval), step=0)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"text", "text_pair"}
    out = serve(text=tf.constant(["the film"]), text_pair=tf.constant(["good"]))
    assert out["probabilities"].shape == [1, 2]


@pytest.mark.slow  # about a minute: tracing keras-hub's BPE graph costs seconds each time
def test_byte_pair_roberta_backbone_batches_and_exports_raw_strings(tmp_path):
    """A RoBERTa backbone: BPE tokenizer, <s>/</s> packing and no segment_ids input."""
    import tensorflow as tf
    from tfimitate.tasks import base
    from tfimitate.tasks.text_classification import TextClassification

    task = TextClassification()
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_preset(tmp_path, "bpe"),
                             train_data=helpers.write_table(tmp_path, "train.csv",
                                                            helpers.sentiment_rows(16)),
                             export_dir=str(tmp_path / "export"))
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=data.labels)
    preprocessor = task.make_preprocessor(cfg)
    run = base.Run(cfg, runs.build_model(task, cfg, len(data.labels), []), preprocessor,
                   tf.distribute.get_strategy())
    features, _ = next(iter(task.train_dataset(run, data.train)))
    assert set(features) == {"token_ids", "padding_mask"}
    assert (features["token_ids"].numpy()[:, 0] == preprocessor.tokenizer.start_token_id).all()
    path = workflow.export_model(task, run, task.serving_examples(data.eval), step=0)  # parity-checked
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(text=tf.constant(["the film was good", "Zürich !"]))
    assert out["probabilities"].shape == [2, 2]
