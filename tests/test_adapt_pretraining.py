"""Domain-adaptive pretraining (--adapt_pretraining_steps): refusals, and what phase 1's
masked-LM loss trains (the technique contract trains, resumes and exports it)."""

import pytest

import helpers
from tfimitate.errors import UserError
from tfimitate.techniques import adapt_pretraining


def test_adapt_pretraining_refuses_other_tasks_missing_text_and_a_run_without_fine_tuning(
        tmp_path):
    cfg = helpers.experiment(tmp_path, adapt_pretraining_steps=4)
    with pytest.raises(UserError, match="--task=token_classification is another task"):
        adapt_pretraining.from_config(cfg.replace(task="token_classification"))
    with pytest.raises(UserError, match="--adapt_pretraining_text=unlabeled needs --unlabeled_data"):
        adapt_pretraining.from_config(cfg.replace(adapt_pretraining_text="unlabeled"))
    with pytest.raises(UserError, match="takes all 4 steps of the run"):
        adapt_pretraining.from_config(cfg).phases(cfg, total_steps=4)
    # --unlabeled_data without --teacher is text to pretrain on, not a distillation mistake.
    from tfimitate.techniques import distillation

    assert distillation.from_config(cfg.replace(unlabeled_data="u.txt")) is None
    with pytest.raises(UserError, match="--unlabeled_data needs --teacher"):
        distillation.from_config(cfg.replace(unlabeled_data="u.txt", adapt_pretraining_steps=0))


def test_adapt_pretraining_phase_1_trains_backbone_and_masked_lm_head_not_the_classifier(
        tmp_path, caplog):
    import tensorflow as tf

    from tfimitate import runs
    from tfimitate.tasks import get_task
    from tfimitate.training import hooks

    unlabeled = helpers.write_lines(tmp_path, "target.txt", ["a fun new story", "the worst plot",
                                                              "good acting in paris"])
    cfg = helpers.experiment(
        tmp_path, backbone=helpers.tiny_bert_preset(tmp_path), labels=("0", "1"),
        train_data=helpers.write_table(tmp_path, "train.csv", helpers.sentiment_rows(8)),
        adapt_pretraining_steps=1, unlabeled_data=unlabeled)
    task = get_task(cfg.task)
    technique = adapt_pretraining.from_config(cfg)
    data = task.load_data(cfg)
    technique.adapt_examples(hooks.Examples(data.train), task, data, cfg)
    assert len(technique.texts) == len(data.train) + 3
    with caplog.at_level("INFO", logger="absl"):
        model = runs.build_model(task, cfg, 2, [technique])
    assert any("holds no masked-LM head, so a fresh BertMaskedLM head" in r.getMessage()
               for r in caplog.records)
    labels = tf.constant(task.label_ids(data.train, cfg.labels))
    batches = technique.adapt_dataset(tf.data.Dataset.from_tensors(
        (task.make_preprocessor(cfg)(tf.constant(data.train.texts)), labels)), cfg)
    inputs, labels = next(iter(batches))
    assert float(tf.reduce_sum(labels[adapt_pretraining.MLM_WEIGHTS])) > 0  # tokens masked
    step_loss = technique.wrap_loss(hooks.supervised_loss(task), None)
    reached = helpers.weights_reached(technique.phases(cfg, total_steps=3), model, step_loss,
                                      inputs, labels)
    assert "mlm_head" in reached[0] and "logits" not in reached[0]
    assert "logits" in reached[1] and "mlm_head" not in reached[1]
    served = technique.prepare_export(model, cfg)
    assert len(served.weights) < len(model.weights)  # the export has no masked-LM head
