"""The task contract, run over every registered task on a tiny backbone: train a few
steps, evaluate, predict, export with reload parity, refuse a mismatched resume and a
bad flag. A new task gets these tests by being registered and adding its sample data
to TASK_DATA in tests/samples.py; the technique hooks are checked once, with a probe technique.
"""

import json
import os
import sys
import types

import pytest

import helpers
import processes
from samples import TASK_DATA, text_classification_data
from tfimitate import runs, tasks, workflow
from tfimitate.config import Experiment
from tfimitate.errors import UserError
from tfimitate.serving import warmup


def _eval_split(task, cfg):
    """The run's labelled eval split (multi_task: every subtask's), read as evaluate reads it."""
    return task.read_file(cfg.eval_data, cfg, "--eval_data") if cfg.eval_data \
        else task.load_data(cfg).eval


def test_every_registered_task_has_contract_data_and_satisfies_the_protocol():
    assert set(TASK_DATA) == set(tasks.TASKS), "add sample data for the new task to TASK_DATA"
    for name in tasks.TASKS:
        assert tasks.get_task(name).NAME == name


# The multi-task contract trains two subtasks (about 4 min of CPU); tests/test_multi_task.py
# holds its fast end-to-end proof in the default run.
@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) if name == "multi_task" else name
    for name in sorted(TASK_DATA)])
def trained(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    flags, predict_input = TASK_DATA[request.param](directory)
    flags.setdefault("backbone", helpers.tiny_bert_preset(directory))
    cfg = helpers.experiment(directory, task=request.param,
                             export_dir=str(directory / "export"), max_steps=4,
                             checkpoint_steps=2, **flags)
    metrics = workflow.train(cfg)
    return cfg, metrics, predict_input


def test_contract_train_writes_metrics_and_the_export(trained):
    cfg, metrics, _ = trained
    written = json.load(open(os.path.join(cfg.model_dir, "eval", "metrics.json")))
    assert written == metrics and written["step"] == 4
    assert os.path.isfile(os.path.join(cfg.model_dir, "eval", "test_metrics.json"))
    assert os.listdir(cfg.export_dir) == ["1"]


def test_contract_evaluate_reproduces_the_training_report(trained):
    cfg, metrics, _ = trained
    again = workflow.evaluate(cfg.model_dir)
    assert again == metrics


def test_contract_predict_gives_one_record_per_input(trained, tmp_path):
    cfg, _, predict_input = trained
    assert workflow.predict(cfg.model_dir, predict_input, str(tmp_path / "out.jsonl")) == 2
    lines = open(tmp_path / "out.jsonl").read().splitlines()
    assert len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)


def test_contract_export_reloads_with_parity_and_warmup_for_every_signature(trained, tmp_path):
    import tensorflow as tf

    cfg, _, _ = trained
    path = workflow.export(cfg.model_dir, str(tmp_path / "export"))  # no training data read
    loaded = tf.saved_model.load(path)
    signatures = {signature for signature, _ in warmup.read_warmup_inputs(path)}
    assert signatures == set(loaded.signatures) and "serving_default" in signatures
    if not cfg.subtasks:  # the task declares what it exports (multi_task: per subtask)
        assert signatures == set(tasks.get_task(cfg.task).SIGNATURES)


def test_contract_the_saved_model_scores_and_predicts_like_the_checkpoint(trained):
    import tensorflow as tf

    cfg, _, _ = trained
    task, run, _ = runs.restore(cfg.model_dir)
    split = _eval_split(task, run.cfg)
    evaluation = task.evaluate(run, split)
    assert len(evaluation.predictions) == len(split)
    served = task.evaluate_saved_model(tf.saved_model.load(os.path.join(cfg.export_dir, "1")),
                                       split, run.labels)
    assert served.score == pytest.approx(evaluation.score)
    assert served.predictions == evaluation.predictions


def test_contract_robustness_report_of_the_checkpoint_and_of_the_export(trained):
    """A task perturbs the words of its texts, or (reading no text) refuses in one sentence."""
    cfg, _, _ = trained
    task = tasks.get_task(cfg.task)
    split = _eval_split(task, Experiment.load(cfg.model_dir))
    try:
        task.perturbed(split, lambda word_lists, keep_word_count: word_lists)
    except UserError:
        before = sorted(os.listdir(os.path.join(cfg.model_dir, "eval")))
        with pytest.raises(UserError, match=f"--perturb .*--task={cfg.task}"):
            workflow.evaluate(cfg.model_dir, perturb="typos:0.5")
        assert sorted(os.listdir(os.path.join(cfg.model_dir, "eval"))) == before
        return
    reports = {}
    for name, where in (("robustness", {}), ("saved_model_robustness",
                                             {"saved_model": cfg.export_dir})):
        workflow.evaluate(cfg.model_dir if not where else None, perturb="typos:0.5,case",
                          perturb_seed=3, **where)
        with open(os.path.join(cfg.model_dir, "eval", f"{name}.json")) as f:
            reports[name] = json.load(f)
    checkpoint, served = reports["robustness"], reports["saved_model_robustness"]
    assert set(checkpoint["perturbations"]) == {"typos:0.5", "case:1"}
    typos = checkpoint["perturbations"]["typos:0.5"]
    assert 0 < typos["changed"] <= checkpoint["examples"]
    assert typos["drop"] == pytest.approx(checkpoint["clean"]["score"] - typos["score"])
    for flip in typos["flipped_examples"]:
        assert flip["clean"]["predicted"] != flip["perturbed"]["predicted"]
    for report in (checkpoint, served):  # the same perturbed texts, the same predictions
        del report["model"]
    assert served == checkpoint


def test_contract_robust_techniques_train_a_text_task_or_are_refused(trained, tmp_path):
    """Text augmentation (characters, word pieces) and FGM train a task that reads word
    pieces a few steps; a task that does not refuses each in one sentence, writing nothing."""
    cfg, _, _ = trained
    run = cfg.replace(model_dir=str(tmp_path / "run"), export_dir=None, max_steps=2)
    if hasattr(tasks.get_task(cfg.task).make_preprocessor(cfg), "tokenizer"):
        metrics = workflow.train(run.replace(augment="char_noise:0.3,mask:0.2", adversarial="fgm"))
        assert metrics["step"] == 2
        assert sorted(processes.loss_curve(run.model_dir, "adversarial_loss")) == [1, 2]
        return
    for changes, message in (
            (dict(augment="char_noise:0.3"), "--augment needs text as training inputs, but --task"),
            (dict(augment="mask:0.3"), "--augment needs word pieces as training inputs, but"),
            (dict(adversarial="fgm"), "--adversarial needs word pieces as training inputs, but")):
        with pytest.raises(UserError, match=message):
            workflow.train(run.replace(**changes))
        assert not os.path.exists(run.model_dir)


def test_contract_resume_with_another_sequence_length_is_refused(trained):
    cfg, _, _ = trained
    with pytest.raises(UserError, match="holds a run with --sequence_length=32, not 16"):
        workflow.train(cfg.replace(sequence_length=16))


def test_contract_bad_data_flag_is_one_sentence_and_writes_nothing(trained, tmp_path,
                                                                   tmp_path_factory):
    cfg, _, _ = trained
    bad = cfg.replace(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"))
    absent = str(tmp_path / "absent.txt")
    if cfg.subtasks:  # multi_task: the first subtask's file names the absent data
        lines = [line if not line.startswith("--train_data=") else f"--train_data={absent}"
                 for line in open(cfg.subtasks[0]).read().splitlines()]
        flagfile = helpers.write_lines(tmp_path_factory.mktemp("bad"), "bad.cfg", lines)
        bad = bad.replace(subtasks=(flagfile,) + cfg.subtasks[1:])
    else:
        bad = bad.replace(train_data=absent)
    with pytest.raises(UserError, match="--train_data=.*absent.txt: file .* does not exist"):
        workflow.train(bad)
    assert not os.listdir(tmp_path)


def test_contract_a_task_class_missing_part_of_the_protocol_is_refused_at_registration(
        monkeypatch):
    """A Task subclass missing an abstract method is one TypeError naming what it lacks."""
    from tfimitate.tasks import base

    class Partial(base.Task):
        NAME = "text_classification"

        def load_data(self, cfg):
            del cfg

    partial = types.ModuleType("partial_task")
    partial.Partial = Partial
    monkeypatch.setitem(sys.modules, "partial_task", partial)
    monkeypatch.setitem(tasks.TASKS, "text_classification", "partial_task:Partial")
    with pytest.raises(TypeError, match=r"^task class .*Partial lacks .*evaluate, .*predict"):
        tasks.get_task("text_classification")


def test_contract_technique_hooks_are_called_and_compose(tmp_path, monkeypatch):
    """A probe technique sees the model, the training batches and the step loss; scaling
    the loss by zero leaves the head's weights as initialised."""
    import numpy as np

    from tfimitate import runtime, techniques
    from tfimitate.training import hooks

    calls = []

    class Probe(hooks.Technique):
        name = "probe"

        def adapt_model(self, model, cfg):
            calls.append("model")
            return model

        def adapt_dataset(self, dataset, cfg):
            calls.append("dataset")
            return dataset

        def wrap_loss(self, step_loss, run):
            calls.append("loss")
            return lambda model, inputs, labels: 0.0 * step_loss(model, inputs, labels)

    probe = types.ModuleType("probe_technique")
    probe.from_config = lambda cfg: Probe() if cfg.weight_decay == 0.0 else None
    monkeypatch.setitem(sys.modules, "probe_technique", probe)
    monkeypatch.setitem(techniques.TECHNIQUES, "probe", "probe_technique")

    flags, _ = text_classification_data(tmp_path)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path), max_steps=2,
                             weight_decay=0.0, **flags)
    workflow.train(cfg)
    assert calls == ["model", "dataset", "loss"]
    _, run, _ = runs.restore(cfg.model_dir)  # restore builds the model through the hook too
    assert calls[-1] == "model"
    runtime.set_seeds(cfg.seed)  # as train did before building the model
    initial = runs.build_model(tasks.get_task(cfg.task), cfg, 2, [])
    np.testing.assert_array_equal(run.model.get_layer("logits").kernel.numpy(),
                                  initial.get_layer("logits").kernel.numpy())


def test_contract_per_unit_outputs_extras_and_unlabelled_examples(trained):
    """probabilities, served_probabilities (the export) and score_probabilities agree with
    evaluate; unlabelled examples join the training split; `extras` of one row per label
    unit reach each batch beside their own examples (here: the model's own probabilities,
    or a regression's scores, which its outputs on the batch must reproduce). A task without
    them (SoftTargets) is refused by distillation in one sentence."""
    import numpy as np
    import tensorflow as tf

    from tfimitate.tasks import base
    from tfimitate.techniques import distillation

    cfg, _, predict_input = trained
    task = tasks.get_task(cfg.task)
    if base.missing_members(task, base.SoftTargets):
        with pytest.raises(UserError, match="cannot learn from a teacher"):
            distillation.from_config(cfg.replace(teacher=cfg.model_dir))
        return
    _, run, _ = runs.restore(cfg.model_dir)
    data = task.load_data(cfg)
    probs = task.probabilities(run, data.eval)
    assert task.score_probabilities(data.eval, probs, run.labels).score == task.evaluate(
        run, data.eval).score
    loaded = tf.saved_model.load(os.path.join(cfg.export_dir, "1"))

    def predict(signature, inputs):
        pad = lambda values: [list(v) + [""] * (max(map(len, values)) - len(v)) for v in values] \
            if isinstance(values[0], list) else values
        outputs = loaded.signatures[signature](**{k: tf.constant(pad(v)) for k, v in inputs.items()})
        return list(outputs["probabilities" if "probabilities" in outputs else "score"].numpy())

    np.testing.assert_allclose(task.served_probabilities(data.eval, predict), probs, atol=1e-4)

    split = task.add_unlabeled(data.train, predict_input, cfg, "--unlabeled_data")
    assert len(split) == len(data.train) + 2
    own = task.probabilities(run, split)
    dataset = task.train_dataset(run, split, {"teacher": own})
    if callable(getattr(task, "soft_target_loss", None)):  # a regression: scores, not classes
        from tfimitate.tasks import regression

        mean, std = regression.target_scale(run.cfg)
        to_targets = lambda outputs: outputs * std + mean
    else:
        to_targets = tf.nn.softmax
    for inputs, labels in dataset.take(8):
        assert set(labels) == {"labels", "teacher"}
        teacher = labels["teacher"].numpy()
        present = teacher.sum(axis=-1) > 0
        outputs = to_targets(tf.cast(run.model(inputs, training=False), tf.float32)).numpy()
        np.testing.assert_allclose(outputs[present], teacher[present], atol=1e-4)
    gold_free = task.add_unlabeled(data.train.subset([], "none"), predict_input, cfg, "--x")
    batch = next(iter(task.train_dataset(run, gold_free)))
    outputs = tf.cast(run.model(batch[0], training=False), tf.float32)
    assert np.all(task.example_loss(batch[1], outputs).numpy() == 0.0)  # no label, no loss
