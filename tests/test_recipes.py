"""Recipes: a task's or technique's defaults for options the user left unset, where each
value came from (experiment.json), what --helpfull says, and --keep_best_phase in the loop."""

import json
import os

import numpy as np
import pytest
from absl import flags

from tfimitate import config, recipes
from tfimitate import flags as _flags  # noqa: F401  (defines the flags)
from tfimitate.errors import UserError
from tfimitate.techniques import transfer


def experiment(argv, flagfile_lines=(), tmp_path=None):
    """The Experiment `python -m tfimitate.train` builds from `argv` (plus a flagfile)."""
    argv = ["train"] + list(argv)
    if flagfile_lines:
        path = os.path.join(str(tmp_path), "x.cfg")
        with open(path, "w") as f:
            f.write("\n".join(flagfile_lines) + "\n")
        argv.insert(1, f"--flagfile={path}")
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        return config.experiment_from_flags(argv)
    finally:
        flags.FLAGS.unparse_flags()


def image_run(tmp_path, *more):
    return [f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run",
            "--task=image_classification", *more]


def test_the_image_recipe_fills_what_the_user_left_unset_and_records_why(tmp_path):
    cfg = experiment(image_run(tmp_path, "--batch_size=8"))
    assert (cfg.learning_rate, cfg.freeze_backbone_fraction, cfg.keep_best_phase) == \
        (3e-3, 0.75, True)
    assert (cfg.fine_tune_learning_rate, cfg.fine_tune_batchnorm) == (1e-4, False)
    sources = cfg.option_sources
    assert sources["learning_rate"] == {
        "from": "recipe",
        "reason": "image_classification: a new head on a frozen backbone learns at a head's rate"}
    assert sources["batch_size"] == {"from": "command line"}
    assert sources["warmup_ratio"] == {"from": "default"}
    assert recipes.chosen_lines(cfg)[0].startswith("learning_rate=0.003 (image_classification: ")
    # experiment.json keeps them; flags.cfg re-runs the same values.
    cfg.save(str(tmp_path))
    saved = json.load(open(tmp_path / config.EXPERIMENT_FILE))
    assert saved["option_sources"]["freeze_backbone_fraction"]["from"] == "recipe"
    assert "--freeze_backbone_fraction=0.75" in open(tmp_path / config.FLAGFILE).read()
    assert "option_sources" not in open(tmp_path / config.FLAGFILE).read()


def test_explicit_values_win_and_a_recipe_steps_aside_for_the_users_own_choice(tmp_path):
    cfg = experiment(image_run(tmp_path, "--learning_rate=3e-4"),
                     ["--freeze_backbone_steps=5"], tmp_path)
    assert cfg.learning_rate == 3e-4 and cfg.option_sources["learning_rate"] == {
        "from": "command line"}
    assert cfg.option_sources["freeze_backbone_steps"] == {"from": "flagfile"}
    # The user chose the frozen phase: the recipe's phase and its fallback step aside.
    assert (cfg.freeze_backbone_fraction, cfg.keep_best_phase, cfg.fine_tune_batchnorm) == \
        (0.0, False, True)
    # No frozen phase, the user's choice: no phase-2 entries that would need one.
    no_phase = experiment(image_run(tmp_path, "--freeze_backbone_fraction=0"))
    assert [line.split("=")[0] for line in recipes.chosen_lines(no_phase)] == ["learning_rate"]
    assert transfer.from_config(no_phase) is None
    assert recipes.chosen_lines(experiment(image_run(tmp_path), [
        "--learning_rate=1e-2", "--freeze_backbone_fraction=0.5", "--keep_best_phase=false",
        "--fine_tune_learning_rate=1e-3", "--fine_tune_batchnorm"],
        tmp_path)) == []


def test_text_and_token_classification_raise_the_rate_only_for_the_packaged_backbone(tmp_path):
    cfg = experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run"])
    assert cfg.learning_rate == 1.5e-4
    assert recipes.chosen_lines(cfg) == [
        "learning_rate=0.00015 (text_classification: the packaged MiniLM-L6 is small and "
        "fine-tunes best at 3x BERT's rate)"]
    own = experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run2",
                      "--backbone=bert_base_en_uncased"])
    assert own.learning_rate == 5e-5 and recipes.chosen_lines(own) == []
    tagger = experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run3",
                         "--task=token_classification"])
    assert tagger.learning_rate == 4.5e-4
    # Only the head trains: the entry that applies when --freeze=backbone wins.
    head = experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run4",
                       "--freeze=backbone"])
    assert head.learning_rate == 1e-1 and "--freeze=backbone" in recipes.chosen_lines(head)[0]
    assert experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run5",
                       "--freeze=embeddings"]).learning_rate == 1.5e-4
    assert tagger.option_sources["learning_rate"]["reason"].startswith("token_classification: ")


def test_a_resumed_run_keeps_the_recipe_values_it_recorded(tmp_path):
    first = experiment(image_run(tmp_path))
    first.replace(learning_rate=2e-3).save(f"{tmp_path}/run")  # an older recipe's value
    resumed = experiment(image_run(tmp_path))
    assert resumed.learning_rate == 2e-3
    assert resumed.option_sources["learning_rate"]["reason"].endswith("(recorded by the run)")
    # A run from before recipes recorded none: it resumes on the plain defaults.
    first.replace(option_sources=None, learning_rate=5e-5,
                  freeze_backbone_fraction=0.0, keep_best_phase=False).save(f"{tmp_path}/run")
    old = experiment(image_run(tmp_path))
    assert (old.learning_rate, old.freeze_backbone_fraction) == (5e-5, 0.0)
    assert recipes.chosen_lines(old) == []


def test_helpfull_shows_the_plain_default_and_which_recipes_change_it():
    help_text = flags.FLAGS["learning_rate"].help
    assert flags.FLAGS["learning_rate"].default == 5e-5
    assert ("A recipe may change this default: text_classification (0.00015), "
            "text_classification (0.003), text_classification (0.1), "
            "token_classification (0.00045), image_classification (0.003)") in help_text


def test_a_frozen_phase_longer_than_the_run_or_set_twice_is_refused_naming_both(tmp_path):
    with pytest.raises(UserError, match=r"--freeze_backbone_steps=100 is more than "
                                        r"--max_steps=80, so the backbone would never be"):
        transfer.from_config(config.Experiment(freeze_backbone_steps=100, max_steps=80))
    with pytest.raises(UserError, match=r"--freeze_backbone_steps=5 and "
                                        r"--freeze_backbone_fraction=0.5 both set the frozen"):
        transfer.from_config(config.Experiment(freeze_backbone_steps=5,
                                               freeze_backbone_fraction=0.5))
    phases = transfer.from_config(config.Experiment(freeze_backbone_fraction=0.75,
                                                    learning_rate=1e-3)).phases(
        config.Experiment(freeze_backbone_fraction=0.75, learning_rate=1e-3), 80)
    assert [(p.start, p.learning_rate) for p in phases] == [(0, 1e-3), (60, 1e-4)]


@pytest.mark.parametrize("last_score, restored", [(0.4, True), (0.95, False)])
def test_keep_best_phase_undoes_a_phase_that_lowered_the_eval_score(tmp_path, last_score,
                                                                   restored):
    import helpers
    import keras
    import tensorflow as tf

    from tfimitate.tasks.base import Evaluation
    from tfimitate.training import checkpoints, hooks, loop, optim

    inputs = keras.Input([4])
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    step_loss = lambda model, x, y: keras.losses.sparse_categorical_crossentropy(
        y, model(x, training=True), from_logits=True)
    batches = tf.data.Dataset.from_tensors(
        (np.eye(4, dtype="float32"), np.array([0, 1, 0, 1]))).repeat()
    cfg = helpers.experiment(tmp_path, max_steps=6, checkpoint_steps=6, eval_steps=6,
                             keep_best_phase=True)
    phases = [hooks.Phase(0, 1e-2, lambda m: None), hooks.Phase(3, 1e-2, lambda m: None)]
    seen = {}

    def evaluate():
        step = int(optimizer.iterations)
        seen[step] = [w.numpy().copy() for w in model.weights]
        score = 0.9 if step == 3 else last_score
        return Evaluation(score=score, metrics={"accuracy": score}, report="")

    optimizer = optim.make_optimizer(1e-2, total_steps=6, warmup_ratio=0.0, weight_decay=0.0,
                                     phases=phases)
    result = loop.train_loop(model, optimizer, step_loss, batches, evaluate, cfg,
                             tf.distribute.get_strategy(), steps_per_epoch=6, total_steps=6,
                             phases=phases)
    assert sorted(seen) == [3, 6]  # evaluated at the phase end and at the end
    kept = seen[3] if restored else seen[6]
    assert all(np.array_equal(w.numpy(), k) for w, k in zip(model.weights, kept))
    assert result.final_evaluation.score == (0.9 if restored else last_score)
    best = tf.train.latest_checkpoint(os.path.join(cfg.model_dir, checkpoints.BEST_SUBDIR))
    assert (best is not None and best.endswith("ckpt-3")) == restored


def test_lora_brings_its_targets_and_rate_and_steps_aside_for_the_users_choices(tmp_path):
    from tfimitate.techniques import lora

    run = [f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run", "--lora_rank=8"]
    cfg = experiment(run)
    assert (cfg.learning_rate, tuple(cfg.lora_targets)) == (2e-3, lora.EVERY_DENSE)
    assert cfg.option_sources["learning_rate"]["reason"].startswith("lora: ")
    assert cfg.option_sources["lora_targets"]["from"] == "recipe"
    assert experiment(run + ["--learning_rate=1e-3"]).learning_rate == 1e-3
    # The user's own targets (or backbone) keep them, at the rate for adapters on a few layers.
    own = experiment(run + ["--lora_targets=query,value"])
    assert (own.learning_rate, tuple(own.lora_targets)) == (5e-3, ("query", "value"))
    other = experiment(run + ["--backbone=bert_base_en_uncased"])
    assert (other.learning_rate, tuple(other.lora_targets)) == (5e-3, ("query", "value"))




def test_side_columns_train_the_head_first_unless_the_user_chose_the_rate_or_phase(tmp_path):
    run = [f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run", "--task=text_regression",
           "--numeric_columns=budget"]
    cfg = experiment(run)
    assert (cfg.learning_rate, cfg.freeze_backbone_fraction, cfg.fine_tune_learning_rate,
            cfg.keep_best_phase) == (3e-3, 0.5, 1.5e-4, True)
    assert cfg.normalize_targets and experiment(run + ["--nonormalize_targets"]).normalize_targets is False
    assert cfg.option_sources["freeze_backbone_fraction"]["reason"].startswith("text_regression: ")
    for own in ("--learning_rate=1e-4", "--freeze_backbone_steps=10", "--backbone=bert_tiny"):
        chosen = experiment(run + [own])
        assert not chosen.freeze_backbone_fraction and not chosen.keep_best_phase, own
    plain = experiment([f"--train_data={tmp_path}", f"--model_dir={tmp_path}/run2"])
    assert (plain.learning_rate, plain.freeze_backbone_fraction) == (1.5e-4, 0.0)
