"""Few-shot training (--few_shot_pairs): seeded pairs, refusals, and which weights each
phase's loss reaches (the technique contract trains, resumes and exports it)."""

import pytest

import helpers
from tfimitate.errors import UserError
from tfimitate.techniques import few_shot


def test_few_shot_pairs_are_seeded_balanced_and_of_the_right_classes():
    labels = ["neg"] * 3 + ["pos"] * 3 + ["mixed"] * 2
    pairs = few_shot.make_pairs(labels, 40, seed=7)
    assert pairs == few_shot.make_pairs(labels, 40, seed=7) != few_shot.make_pairs(labels, 40, 8)
    assert len(pairs) == 40
    for anchor, partner, target in pairs:
        assert anchor != partner
        assert (labels[anchor] == labels[partner]) == (target == 1.0)
    # Every pass gives every example one same-class and one cross-class pair.
    first_pass = pairs[:2 * len(labels)]
    assert sorted(a for a, _, t in first_pass if t == 1.0) == list(range(len(labels)))
    assert sorted(a for a, _, t in first_pass if t == 0.0) == list(range(len(labels)))


def test_few_shot_refuses_a_class_of_one_example_a_task_and_text_pairs(tmp_path):
    with pytest.raises(UserError, match="class 'pos' of train.csv has 1 example; a pair of its "
                                        "own needs at least two"):
        few_shot.make_pairs(["neg", "neg", "pos"], 8, seed=1, source="train.csv")
    cfg = helpers.experiment(tmp_path, few_shot_pairs=8)
    with pytest.raises(UserError, match="--task=token_classification is not text classification"):
        few_shot.from_config(cfg.replace(task="token_classification"))
    with pytest.raises(UserError, match="--text_pair_column=b makes each example a text pair"):
        few_shot.from_config(cfg.replace(text_pair_column="b"))
    with pytest.raises(UserError, match="the head would never train"):
        few_shot.from_config(cfg).phases(cfg.replace(batch_size=4), total_steps=2)


def test_few_shot_phase_1_tunes_only_the_backbone_and_phase_2_only_the_head_on_served_embeddings(
        tmp_path):
    import tensorflow as tf

    from tfimitate import runs
    from tfimitate.tasks import get_task
    from tfimitate.training import hooks

    rows = helpers.sentiment_rows(8)
    cfg = helpers.experiment(tmp_path, backbone=helpers.tiny_bert_preset(tmp_path),
                             train_data=helpers.write_table(tmp_path, "train.csv", rows),
                             few_shot_pairs=8, labels=("0", "1"), dropout=0.0)
    task = get_task(cfg.task)
    technique = few_shot.from_config(cfg)
    data = task.load_data(cfg)
    examples = technique.adapt_examples(hooks.Examples(data.train), task, data, cfg)
    assert len(examples.split) == 8 and examples.extras[few_shot.TARGET].tolist() == [1, 0] * 4
    model = runs.build_model(task, cfg, 2, [technique])
    phases = technique.phases(cfg, total_steps=3)
    assert [phase.start for phase in phases] == [0, 1]
    features = task.make_preprocessor(cfg)(tf.constant(examples.split.texts))
    labels = dict({k: tf.constant(v) for k, v in examples.extras.items()},
                  labels=tf.constant(task.label_ids(examples.split, cfg.labels)))
    step_loss = technique.wrap_loss(hooks.supervised_loss(task), None)
    reached = helpers.weights_reached(phases, model, step_loss, features, labels)
    assert reached[0] and "logits" not in reached[0]  # the embedding, not the head
    assert reached[1] == {"logits"}
    # Phase 2 fits the head on the embeddings the served model computes: the backbone's
    # dropout (0.1 in the tiny preset) is off, so the loss is the served model's, every time.
    served = task.example_loss(labels["labels"], model(features, training=False))
    for _ in range(2):
        assert tf.reduce_max(tf.abs(step_loss(model, features, labels) - served)) < 1e-6
