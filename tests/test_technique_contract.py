"""The technique contract, run over every registered technique on tiny backbones: train a
few steps on a task it fits, resume, export with reload parity, and refuse a task it does
not fit in one sentence, writing nothing; its declarations use the known vocabulary; and
the registry imports no TensorFlow. A new technique gets these tests by being registered
(tfimitate/techniques/__init__.py) and adding its sample flags to SAMPLE_FLAGS.
"""

import os
import subprocess
import sys

import pytest

import helpers
from samples import image_classification_data, text_classification_data
from tfimitate import tasks, techniques, workflow
from tfimitate.errors import UserError
from tfimitate.training import hooks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> flags that switch the technique on (with `task=` where it trains on another task
# than text_classification). "{run}" is a trained tiny text_classification run (the run
# to continue, the teacher), "{eval_data}" that run's eval file, "{unlabeled}" a .txt of texts.
SAMPLE_FLAGS = {
    "init_from": dict(init_from="{run}"),
    "transfer": dict(freeze_backbone_steps=1, fine_tune_learning_rate=1e-4),
    "lora": dict(lora_rank=2, lora_alpha=4.0),
    "few_shot": dict(few_shot_pairs=8),
    "adapt_pretraining": dict(adapt_pretraining_steps=1, unlabeled_data="{unlabeled}"),
    "freezing": dict(freeze=("embeddings", "layers:0")),
    "layer_decay": dict(layer_lr_decay=0.8),
    "l2sp": dict(l2sp=0.01),
    "replay": dict(replay_data="{eval_data}", replay_fraction=0.25),
    "retention": dict(retain_eval_data="{eval_data}"),
    "image_augment": dict(task="image_classification", image_augment=("flip", "mixup")),
    "augment": dict(augment="char_noise:0.2,mask:0.1"),
    "adversarial": dict(adversarial="fgm"),
    "distillation": dict(teacher="{run}"),
    "self_training": dict(self_train=True, teacher="{run}", unlabeled_data="{unlabeled}",
                          pseudo_label_threshold=0.5, self_train_rounds=2),
    "feature_cache": dict(task="image_classification", freeze_backbone_steps=2,
                          cache_frozen_features=True),
}
# Tasks a technique may be refused on (their sample data is cheap).
REFUSING_TASKS = ("image_classification", "text_classification")


# Techniques whose sample flags read the trained base run or its eval file: they train in
# this file, beside the base run; the others in tests/test_technique_contract_standalone.py,
# so that the two halves of the contract run on two test workers at once.
READS_THE_BASE_RUN = tuple(sorted(name for name, flags in SAMPLE_FLAGS.items()
                                  if {"{run}", "{eval_data}"} & set(flags.values())))


def sample_data(directory):
    """Per task (text_classification, image_classification): flags of its sample data on a
    tiny backbone, in `directory`."""
    (directory / "text").mkdir()
    (directory / "images").mkdir()
    text, _ = text_classification_data(directory / "text")
    text["backbone"] = helpers.tiny_bert_preset(directory)
    images, _ = image_classification_data(directory / "images")
    for flags in (text, images):
        del flags["test_data"]  # one evaluation per run is enough here
    return {"text_classification": text, "image_classification": images}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Per task: flags of its sample data on a tiny backbone; and a trained tiny text run."""
    directory = tmp_path_factory.mktemp("samples")
    data = sample_data(directory)
    text = data["text_classification"]
    run = helpers.experiment(directory / "base", max_steps=2, **text)
    workflow.train(run)
    unlabeled = helpers.write_lines(directory, "unlabeled.txt", ["a fun new story", "the worst plot"])
    return data, {"{run}": run.model_dir, "{eval_data}": text["eval_data"], "{unlabeled}": unlabeled}


def experiment(samples, directory, name, **overrides):
    """The Experiment of technique `name`'s sample flags on its task, in `directory`."""
    data, places = samples
    flags = dict(SAMPLE_FLAGS[name], **overrides)
    flags = {key: places.get(value, value) if isinstance(value, str) else value
             for key, value in flags.items()}
    task = flags.setdefault("task", "text_classification")
    return helpers.experiment(directory, **dict(data[task], **flags))


def _technique(name, cfg):
    """The technique `name` as `cfg` chooses it."""
    return next(technique for technique in techniques.chosen(cfg) if technique.name == name)


def test_technique_contract_every_registered_technique_has_sample_flags():
    assert set(SAMPLE_FLAGS) == set(techniques.TECHNIQUES), \
        "add sample flags for the new technique to SAMPLE_FLAGS"


@pytest.mark.parametrize("name", sorted(techniques.TECHNIQUES))
def test_technique_contract_declarations_use_the_known_vocabulary(samples, tmp_path, name):
    """Its sample flags choose it (and only it); it names its flag; it claims, excludes and
    needs only known things; a technique that sets phases claims the trainable weights."""
    cfg = experiment(samples, tmp_path, name)
    assert {t.name for t in techniques.chosen(cfg)} <= {name, "transfer"}  # feature_cache's phase 1
    technique = _technique(name, cfg)
    assert technique.flag.startswith("--") and isinstance(technique.order, int)
    claims = techniques.claims_of(technique)
    assert set(claims) <= set(techniques.CLAIMS)
    assert all(flag.startswith("--") for flag in claims.values())
    assert set(technique.excludes) <= set(techniques.CLAIMS)
    assert set(technique.inputs) <= set(techniques.INPUTS)
    if type(technique).phases is not hooks.Technique.phases:
        assert "trainable_weights" in claims


def train_sample(name, samples, directory):
    """Technique `name`'s sample run trained 2 steps in `directory`: (name, cfg, metrics)."""
    cfg = experiment(samples, directory, name, max_steps=2, checkpoint_steps=1)
    return name, cfg, workflow.train(cfg)


def check_trains_resumes_and_exports(trained, caplog):
    """A run of train_sample resumes at step 2, trains to 3 and exports (with parity)."""
    name, cfg, first = trained
    assert first["step"] == 2
    export_dir = os.path.join(os.path.dirname(cfg.model_dir), "export")
    with caplog.at_level("INFO", logger="absl"):
        metrics = workflow.train(cfg.replace(max_steps=3, export_dir=export_dir))
    assert metrics["step"] == 3
    assert any("Resumed from checkpoint" in r.getMessage() and "at step 2" in r.getMessage()
               for r in caplog.records), name
    # The export reloaded the SavedModel and matched the trained model (parity) to be written.
    assert os.listdir(export_dir) == ["1"]
    assert os.path.isfile(os.path.join(export_dir, "1", "saved_model.pb"))


@pytest.fixture(scope="module", params=READS_THE_BASE_RUN)
def trained(request, samples, tmp_path_factory):
    """The technique's sample run trained 2 steps (one per technique, shared)."""
    return train_sample(request.param, samples, tmp_path_factory.mktemp(request.param))


def test_technique_contract_trains_resumes_and_exports_with_parity(trained, caplog):
    check_trains_resumes_and_exports(trained, caplog)


@pytest.mark.parametrize("name", sorted(techniques.TECHNIQUES))
def test_technique_contract_a_task_it_does_not_fit_is_one_sentence_and_writes_nothing(
        samples, tmp_path, name):
    technique = _technique(name, experiment(samples, tmp_path / "fits", name))
    task = next((task for task in REFUSING_TASKS
                 if not set(technique.inputs) <= set(tasks.get_task(task).INPUTS)), None)
    if task is None:
        pytest.skip(f"{name} needs nothing of a task: it fits every task")
    out = tmp_path / "out"
    cfg = experiment(samples, out, name, task=task, export_dir=str(out / "export"))
    with pytest.raises(UserError) as raised:
        workflow.train(cfg)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(".")
    assert technique.flag in message and f"--task={task}" in message
    assert not os.path.exists(out)


# Combinations refused before techniques declared claims, each still one sentence naming
# both flags: (flags, task, the refusal).
REFUSED = [
    (dict(lora_rank=2, freeze=("embeddings",)), "text_classification",
     "--lora_rank and --freeze both set which backbone weights train; use one of them."),
    (dict(lora_rank=2, unfreeze_every_steps=2), "text_classification",
     "--lora_rank and --unfreeze_every_steps both set which backbone weights train"),
    (dict(freeze_backbone_steps=2, lora_rank=2), "text_classification",
     "--freeze_backbone_steps and --lora_rank both set which backbone weights train"),
    (dict(fine_tune_layers=1, freeze=("embeddings",)), "text_classification",
     "--fine_tune_layers and --freeze both set which backbone weights train"),
    (dict(freeze_backbone_steps=2, unfreeze_every_steps=2), "text_classification",
     "--freeze_backbone_steps and --unfreeze_every_steps both set which backbone weights train"),
    (dict(teacher="{run}", adversarial="fgm"), "text_classification",
     "--adversarial and --teacher both wrap the loss of the student's forward pass; use one "
     "of them."),
    (dict(l2sp=0.1, lora_rank=2), "text_classification",
     "--l2sp with --lora_rank: --lora_rank keeps the backbone's weights where they started, so "
     "there is nothing to pull back; drop one of them."),
    (dict(init_from="{run}", lora_rank=2, save_adapters_only=True), "text_classification",
     "--init_from with --save_adapters_only: checkpoints holding only some weights rebuild the "
     "rest from --backbone, not from the --init_from run; drop one of them."),
    (dict(freeze_backbone_steps=2, cache_frozen_features=True, augment="mask:0.1"),
     "text_classification", "--cache_frozen_features caches the features of unchanged inputs, "
     "but --augment changes them at every step; drop one of the two."),
    (dict(freeze_backbone_steps=2, cache_frozen_features=True, adversarial="fgm"),
     "text_classification", "but --adversarial changes them at every step"),
    (dict(freeze_backbone_steps=2, cache_frozen_features=True, image_augment=("flip",)),
     "image_classification", "but --image_augment changes them at every step"),
    (dict(augment="swap:0.1"), "image_classification",
     "--augment needs text as training inputs, but --task=image_classification trains on "
     "images; drop --augment."),
    (dict(augment="unk:0.1"), "image_classification", "--augment needs word pieces as training"),
    (dict(adversarial="pgd"), "image_classification", "--adversarial needs word pieces as training"),
    (dict(image_augment=("flip",)), "text_classification",
     "--image_augment needs images as training inputs, but --task=text_classification trains "
     "on text and word pieces; drop --image_augment."),
]


@pytest.mark.parametrize("flags, task, refusal", REFUSED)
def test_technique_contract_refuses_a_bad_combination_in_one_sentence(samples, tmp_path, flags,
                                                                      task, refusal):
    data, places = samples
    flags = {key: places.get(value, value) if isinstance(value, str) else value
             for key, value in flags.items()}
    cfg = helpers.experiment(tmp_path, **dict(data[task], task=task, **flags))
    with pytest.raises(UserError) as raised:
        techniques.chosen(cfg)
    assert refusal in str(raised.value) and "\n" not in str(raised.value)


def test_technique_contract_the_registry_imports_no_tensorflow():
    """Importing the registry (and listing the techniques' resume fields) loads no
    TensorFlow, so a flag mistake answers before TensorFlow's import."""
    code = ("import sys, tfimitate.techniques as t; t.resume_fields(); "
            "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules "
            "if m.startswith('tensorflow'))[:3]")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
