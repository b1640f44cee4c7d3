"""text_regression beyond the task contract: standardised targets stored with the run and
undone in the export, the Regress API on the exported `regress` signature, the Huber loss,
the metrics and figures, predictions per row, and bad labels."""

import csv
import json
import os

import numpy as np
import pytest

import helpers
from samples import text_regression_data
from tfimitate import runs, workflow
from tfimitate.errors import UserError
from tfimitate.tasks import regression, text_regression


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("regression")
    flags, predict_input = text_regression_data(directory)
    cfg = helpers.experiment(directory, task="text_regression", max_steps=3,
                             backbone=helpers.tiny_bert_preset(directory),
                             regression_loss="huber", export_dir=str(directory / "export"),
                             **dict(flags, test_data=None))
    metrics = workflow.train(cfg)
    return cfg, metrics, predict_input


def _targets(path):
    with open(path) as f:
        return [float(row["label"]) for row in csv.DictReader(f)]


def test_target_scale_is_learned_on_the_training_split_and_saved_with_the_run(trained):
    cfg, metrics, _ = trained
    saved = runs.experiment(cfg.model_dir)
    targets = _targets(cfg.train_data)
    assert saved.target_mean == pytest.approx(np.mean(targets))
    assert saved.target_std == pytest.approx(np.std(targets))
    assert "--target_mean=" in open(os.path.join(cfg.model_dir, "flags.cfg")).read()
    assert metrics["score"] == pytest.approx(-metrics["rmse"])
    assert set(metrics) >= {"rmse", "mae", "pearson", "spearman", "r2"}
    for figure in ("scatter", "residuals"):
        assert os.path.isfile(os.path.join(cfg.model_dir, "eval", f"metrics_{figure}.png"))


def test_the_export_serves_scores_in_target_units_over_predict_and_regress(trained):
    """serving_default's `score` and the Regress API's values (the `regress` signature, run by
    the dev server's C++-loaded session) equal the checkpoint's scores: the standardisation is
    undone in the graph."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import regression_pb2

    import tensorflow as tf
    from tfimitate.serving import inference
    from tfimitate.serving.servables import Servable

    cfg, _, _ = trained
    task, run, _ = runs.restore(cfg.model_dir)
    split = task.read_file(cfg.eval_data, run.cfg, "--eval_data")
    expected = task.scores(run, split)
    assert abs(float(np.mean(expected)) - run.cfg.target_mean) < 2 * run.cfg.target_std
    path = os.path.join(cfg.export_dir, "1")
    inputs = task.serving_inputs(split, range(len(split)))
    assert "" in inputs["genre"] and any(np.isnan(inputs["votes"]))  # missing side values
    serve = tf.saved_model.load(path).signatures["serving_default"]
    served = serve(**{k: tf.constant(v) for k, v in inputs.items()})["score"].numpy()
    assert served.dtype == np.float32 and served.shape == (len(split),)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    graph = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"),
                                                       "rb").read())
    signature = graph.meta_graphs[0].signature_def["regress"]
    assert signature.method_name == inference.REGRESS_METHOD
    request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = "regress"
    for serialized in inference.to_examples(inputs):
        request.input.example_list.examples.add().ParseFromString(serialized)
    bare = request.input.example_list.examples.add()  # no side features: both missing
    for name in ("text", "text_pair"):
        inference.set_feature(bare.features.feature[name], inputs[name][0], name)
    result = inference.regress(Servable(1, path), request)
    missing = serve(text=tf.constant(inputs["text"][:1]), text_pair=tf.constant(inputs["text_pair"][:1]),
                    genre=tf.constant([""]), votes=tf.constant([np.nan], tf.float32))["score"]
    np.testing.assert_allclose([r.value for r in result.regressions],
                               np.append(expected, missing.numpy()), atol=1e-5)


def test_side_features_are_learned_on_the_training_split_and_change_the_score(trained):
    """An unseen genre scores as the out-of-vocabulary slot, not as a crash; the side
    features reach the head (changing one changes the score); a resume without them is refused."""
    import tensorflow as tf

    cfg, _, _ = trained
    stats = json.loads(runs.experiment(cfg.model_dir).side_feature_stats)
    assert sorted(stats["categorical"]["genre"]) == ["forum", "news"]
    serve = tf.saved_model.load(os.path.join(cfg.export_dir, "1")).signatures["serving_default"]
    score = lambda genre, votes: float(serve(
        text=tf.constant(["good film"]), text_pair=tf.constant(["good plot"]),
        genre=tf.constant([genre]), votes=tf.constant([votes], tf.float32))["score"][0])
    assert len({score("news", 10.0), score("forum", 10.0), score("sports", 10.0),
                score("news", 80.0)}) == 4
    with pytest.raises(UserError, match="holds a run with --numeric_columns=votes, not None"):
        workflow.train(cfg.replace(numeric_columns=None, categorical_columns=None))


def test_predict_writes_the_score_of_every_row(trained, tmp_path):
    cfg, _, predict_input = trained
    output = str(tmp_path / "scores.csv")
    assert workflow.predict(cfg.model_dir, predict_input, output) == 2
    with open(output) as f:
        rows = list(csv.DictReader(f))
    assert [(row["text"], row["genre"], row["votes"]) for row in rows] == [
        ("good film", "news", "12.0"), ("plot cast", "sports", "")]
    assert all(np.isfinite(float(row["score"])) for row in rows)


def test_a_label_that_is_not_a_number_is_one_error_naming_the_line(trained, tmp_path):
    cfg, _, _ = trained
    bad = helpers.write_lines(tmp_path, "bad.csv", ["text,pair,genre,votes,label",
                                                    "a b,a b,news,1,4.0", "a c,b c,news,2,high"])
    run = cfg.replace(model_dir=str(tmp_path / "run"), export_dir=None, train_data=bad)
    with pytest.raises(UserError, match=r"bad.csv:3: --label_column=label holds 'high', not a "
                                        r"finite number"):
        workflow.train(run)
    with pytest.raises(UserError, match="predicts a number, not labels; remove --labels"):
        workflow.train(run.replace(labels=("a", "b")))
    assert not os.path.exists(run.model_dir)


def test_huber_and_squared_error_per_example_and_no_label_no_loss():
    import tensorflow as tf

    task = text_regression.TextRegression()
    labels = tf.constant([0.0, 0.0, float("nan")])
    outputs = tf.constant([[0.5], [3.0], [9.0]])
    np.testing.assert_allclose(task.example_loss(labels, outputs).numpy(), [0.25, 9.0, 0.0])
    task._loss = "huber"
    np.testing.assert_allclose(task.example_loss(labels, outputs).numpy(), [0.125, 2.5, 0.0])


def test_regression_metrics_on_known_numbers():
    evaluation = regression.regression_evaluation(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]), "dev")
    metrics = evaluation.metrics
    assert metrics["rmse"] == pytest.approx(1.0) and metrics["mae"] == pytest.approx(0.5)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["pearson"] == pytest.approx(0.9562, abs=1e-4)
    assert metrics["r2"] == pytest.approx(1 - 4 / 5)
    assert evaluation.score == pytest.approx(-1.0)
    flat = regression.regression_evaluation(np.array([1.0, 2.0]), np.array([1.5, 1.5]), "d")
    assert flat.metrics["pearson"] is None and json.dumps(flat.metrics)


@pytest.mark.slow  # a second training (about 20 s of CPU); the contract checks the soft targets
def test_a_student_distils_from_a_regression_teacher_run(trained, tmp_path):
    """The soft targets are the teacher run's scores (its eval report is reproduced from
    them), and the distillation term is the squared error to the standardised score."""
    import tensorflow as tf

    cfg, metrics, _ = trained
    student = cfg.replace(model_dir=str(tmp_path / "student"), export_dir=None, max_steps=2,
                          teacher=cfg.model_dir, distill_alpha=0.0)
    workflow.train(student)
    report = json.load(open(os.path.join(student.model_dir, "eval", "distill.json")))
    assert report["teacher"]["eval"]["rmse"] == pytest.approx(metrics["rmse"], abs=1e-6)
    assert -1.0 <= report["agreement"]["eval"] <= 1.0
    task = text_regression.TextRegression()
    scaled = runs.experiment(cfg.model_dir).replace(target_mean=2.0, target_std=0.5)
    loss = task.soft_target_loss(tf.constant([[3.0], [2.0]]), tf.constant([[1.0], [1.0]]), scaled)
    np.testing.assert_allclose(loss.numpy(), [(1.0 - 2.0) ** 2, 1.0])


def test_saved_model_and_grpc_regression_teachers_give_the_run_teachers_scores(trained):
    """A regression teacher may be the run's export or the dev server serving it over gRPC:
    the soft targets are its scores (side features sent raw, numbers as float32), equal to
    the run teacher's."""
    from tfimitate.serving.devserver import DevServer
    from tfimitate.techniques.distillation import teachers

    cfg, _, _ = trained
    task = text_regression.TextRegression()
    student = runs.experiment(cfg.model_dir).replace(teacher_batch_size=5)
    split = task.read_file(cfg.eval_data, student, "--eval_data")
    expected = teachers.open_teacher(cfg.model_dir, task, student, runs.restore).probabilities(split)
    assert expected.shape == (len(split), 1)
    server = DevServer("stsb", cfg.export_dir, port=0).start()
    try:
        for spec in (cfg.export_dir, f"grpc://{server.target}/stsb"):
            served = teachers.open_teacher(spec, task, student, runs.restore)
            served.check(split)
            assert served.labels == ("score",)
            np.testing.assert_allclose(served.probabilities(split), expected, atol=1e-4)
    finally:
        server.stop()
    wrong = teachers.open_teacher(cfg.export_dir, task, student.replace(teacher_output="nope"),
                                  runs.restore)
    with pytest.raises(UserError, match="returns no 'nope' .outputs: score.; name its score "
                                        "output with --teacher_output"):
        wrong.check(split)
