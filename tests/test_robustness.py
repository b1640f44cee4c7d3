"""The robustness report (tfimitate/robustness.py): parsing --perturb, seeded perturbed
splits of both tasks, the flipped examples, and the errors a user can cause. The
end-to-end report of a checkpoint and of its export is in tests/test_contract.py."""

import os
import subprocess
import sys

import pytest

import helpers
import processes
from tfimitate import robustness
from tfimitate.data import conll
from tfimitate.errors import UserError
from tfimitate.tasks import base, text_classification, token_classification
from tfimitate.tasks.text_classification import TextClassification
from tfimitate.tasks.token_classification import TokenClassification

TEXTS = ["a good film with a great plot", "an awful and boring movie", "the best actor"]


def _classification_split():
    return text_classification.Split("dev.csv", list(TEXTS), None, ["1", "0", "1"], [2, 3, 4])


def _perturbed(task, split, spec, seed=0):
    return robustness.perturb(task, split, robustness.parse(spec), seed)


def test_parse_gives_default_rates_and_report_labels():
    parsed = robustness.parse("typos,case,drop_words:0.2")
    assert [(label, rate, name) for label, _, rate, name in parsed] == [
        ("typos:0.1", 0.1, "typos"), ("case:1", 1.0, "case"), ("drop_words:0.2", 0.2, "drop_words")]
    with pytest.raises(UserError, match="--perturb=typo:0.1: 'typo' is unknown; use typos, case, "
                                        "drop_words"):
        robustness.parse("typo:0.1")
    with pytest.raises(UserError, match="--perturb=typos:1.2: the rate of typos is 1.2, outside"):
        robustness.parse("typos:1.2")


def test_perturbed_texts_are_seeded_and_the_labels_stay():
    split = _classification_split()
    first = _perturbed(TextClassification(), split, "typos:0.5")["typos:0.5"]
    again = _perturbed(TextClassification(), split, "typos:0.5")["typos:0.5"]
    other = _perturbed(TextClassification(), split, "typos:0.5", seed=1)["typos:0.5"]
    assert first.texts == again.texts != other.texts != split.texts
    assert first.labels == split.labels and first.lines == split.lines
    dropped = _perturbed(TextClassification(), split, "drop_words:0.5")["drop_words:0.5"]
    assert all(len(d.split()) < len(t.split()) or d == t for d, t in zip(dropped.texts, TEXTS))
    upper = _perturbed(TextClassification(), split, "case")["case:1"]
    assert upper.texts == [t.upper() for t in TEXTS]


def test_ner_perturbations_stay_inside_words_and_drop_words_is_refused():
    sentence = conll.Sentence(["John", "said", "in", "Paris", "."],
                              ["B-PER", "O", "O", "B-LOC", "O"], [1, 2, 3, 4, 5])
    split = token_classification.Split("dev.txt", [sentence] * 20)
    noisy = _perturbed(TokenClassification(), split, "typos:0.5")["typos:0.5"]
    assert any(s.words != sentence.words for s in noisy.sentences)
    for s in noisy.sentences:
        assert len(s.words) == 5 and s.words[-1] == "." and s.tags == sentence.tags
    with pytest.raises(UserError, match="--perturb=drop_words changes the number of words, which "
                                        "would misalign the per-word labels of "
                                        "--task=token_classification; use typos or case."):
        _perturbed(TokenClassification(), split, "drop_words:0.1")


def test_report_counts_changed_inputs_and_lists_the_flipped_examples():
    """A stand-in model that says 1 when it reads `good`, `great` or `best`."""
    split = _classification_split()

    def score(s):
        predicted = ["1" if {"good", "great", "best"} & set(t.split()) else "0" for t in s.texts]
        records = [{"text": t, "label": l, "predicted": p}
                   for t, l, p in zip(s.texts, s.labels, predicted)]
        accuracy = sum(p == l for p, l in zip(predicted, s.labels)) / len(s)
        return base.Evaluation(accuracy, {"accuracy": accuracy}, "", predictions=records)

    perturbed = _perturbed(TextClassification(), split, "case,drop_words:0.0")
    clean, result = robustness.report(split, perturbed, score, 0)
    assert clean.score == result["clean"]["score"] == 1.0
    case = result["perturbations"]["case:1"]
    assert (case["score"], case["changed"], case["flipped"]) == (pytest.approx(1 / 3), 3, 2)
    assert [flip["index"] for flip in case["flipped_examples"]] == [0, 2]
    assert case["flipped_examples"][0]["perturbed"] == {
        "text": TEXTS[0].upper(), "label": "1", "predicted": "0"}
    untouched = result["perturbations"]["drop_words:0"]
    assert (untouched["changed"], untouched["flipped"], untouched["drop"]) == (0, 0, 0.0)
    assert "case:1           score 0.3333 (drop +0.6667); 3 inputs changed, 2 predictions " \
           "flipped" in robustness.summary(result)


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "tfimitate.evaluate", *args],
                          env=processes.child_env(), capture_output=True, text=True, timeout=300)


def test_cli_bad_perturbation_and_missing_saved_model_are_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    helpers.experiment(tmp_path).save(str(run))
    before = sorted(os.listdir(run))
    result = _evaluate(f"--model_dir={run}", "--perturb=typos:0.1,shout")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --perturb=typos:0.1,shout: 'shout' is unknown; use typos, case, drop_words.")
    result = _evaluate(f"--saved_model={tmp_path / 'nothing'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        f"error: --saved_model={tmp_path / 'nothing'} holds no SavedModel")
    assert sorted(os.listdir(run)) == before


@pytest.mark.slow  # a child importing TensorFlow: 15-45 s on 2 shared cores
def test_a_text_export_loads_in_a_process_that_imported_no_tf_text(tmp_path):
    """`evaluate --saved_model` (and SavedModel teachers) load through serving.saved_models,
    which registers TF Text's ops (RegexSplitWithOffsets, as keras-hub tokenizers export)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    class Splitter(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def split(self, text):
            return {"pieces": tf_text.regex_split(text, r"\s").to_tensor("")}

    module = Splitter()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.split})
    script = ("import sys, tensorflow as tf\n"
              "from tfimitate.serving import saved_models\n"
              "loaded = saved_models.load(sys.argv[1], '--saved_model')\n"
              "print(loaded.signatures['serving_default'](text=tf.constant(['a b']))['pieces']"
              ".numpy().tolist())")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m")],
                            env=processes.child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("[[b'a', b'b']]"), result.stderr
