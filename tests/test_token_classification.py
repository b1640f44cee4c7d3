"""Token classification on tiny random backbones: alignment, loss, metrics, export, predict, errors."""

import glob
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from helpers import SHARED_DATA, experiment, tiny_bert_preset, write_lines

ENTITIES = {"PER": ["john smith", "smith", "johns"], "LOC": ["paris", "london", "new york city"],
            "ORG": ["google", "european union", "eu"]}
FILLER = "the a of and to is was it this that said on in at by for with from".split()


def tagged_sentence(rng, fillers=(1, 4)):
    """Filler words around one or two entities: (words, IOB2 tags)."""
    words, tags = [], []
    for _ in range(rng.randint(1, 2)):
        for _ in range(rng.randint(*fillers)):
            words.append(rng.choice(FILLER))
            tags.append("O")
        kind = rng.choice(sorted(ENTITIES))
        for i, word in enumerate(rng.choice(ENTITIES[kind]).split()):
            words.append(word)
            tags.append(("B-" if i == 0 else "I-") + kind)
    return words, tags


def write_conll(directory, name, sentences):
    lines = []
    for words, tags in sentences:
        lines += [f"{w} {t}" for w, t in zip(words, tags)] + [""]
    return write_lines(directory, name, lines)


def long_sentence(rng, n=1000):
    words, tags = [], []
    while len(words) < n:
        w, t = tagged_sentence(rng)
        words += w
        tags += t
    return words[:n - 1] + ["."], tags[:n - 1] + ["O"]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return tiny_bert_preset(tmp_path_factory.mktemp("preset"))


@pytest.fixture(scope="module")
def trained(preset, tmp_path_factory):
    from tfimitate import workflow

    tmp_path = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    train = [tagged_sentence(rng) for _ in range(240)] + [long_sentence(rng)]
    evaluation = [tagged_sentence(rng) for _ in range(40)] + [long_sentence(rng)]
    cfg = experiment(tmp_path, task="token_classification", backbone=preset,
                     train_data=write_conll(tmp_path, "train.txt", train),
                     eval_data=write_conll(tmp_path, "dev.txt", evaluation),
                     test_data=write_conll(tmp_path, "test.txt", evaluation[:20]),
                     max_steps=80, batch_size=16, learning_rate=3e-3, eval_steps=40,
                     checkpoint_steps=40, export_dir=os.path.join(str(tmp_path), "export"))
    workflow.train(cfg)
    return cfg, evaluation


def test_first_piece_carries_the_tag_and_long_sentences_become_windows(preset):
    import tensorflow as tf
    from tfimitate import backbones
    from tfimitate.data.word_pieces import WordPieceWindows

    windows = WordPieceWindows(backbones.load_tokenizer(preset), sequence_length=8)  # 6 pieces each
    words = tf.ragged.constant([["johns", "said", "\u200b", "paris"], ["smith"] * 7])
    tags = tf.constant([3, 1, 1, 5] + [3] * 7, tf.int64)
    features = {k: v.numpy() for k, v in windows(words, {"labels": tags}).items()}
    vocab = windows.tokenizer.get_vocabulary()
    pieces = [[vocab[i] for i, m in zip(row, mask) if m]
              for row, mask in zip(features["token_ids"], features["padding_mask"])]
    assert pieces == [["[CLS]", "john", "##s", "said", "[UNK]", "paris", "[SEP]"],
                      ["[CLS]"] + ["smith"] * 6 + ["[SEP]"], ["[CLS]", "smith", "[SEP]"]]
    assert features["labels"][0].tolist()[:7] == [0, 3, 0, 1, 1, 5, 0]
    assert features["labels"][2].tolist()[:3] == [0, 3, 0]
    assert int((features["labels"] > 0).sum()) == 11  # every word exactly once


def test_loss_ignores_masked_pieces():
    import tensorflow as tf
    from tfimitate.tasks.token_classification import TokenClassification

    task = TokenClassification()
    labels = tf.constant([[0, 2, 0, 1, 0]])
    logits = tf.random.stateless_normal([1, 5, 3], seed=[1, 2])
    noise = tf.constant([[[9.0] * 3, [0.0] * 3, [-7.0] * 3, [0.0] * 3, [5.0] * 3]]) * [[[1, -1, 2]]]
    assert np.allclose(task.example_loss(labels, logits), task.example_loss(labels, logits + noise))
    assert not np.allclose(task.example_loss(labels, logits), task.example_loss(labels + [[0, 1, 0, 0, 0]], logits))


def test_graph_entity_spans_match_seqeval():
    import tensorflow as tf
    from seqeval.metrics.sequence_labeling import get_entities
    from tfimitate.tasks.entity_spans import entity_spans

    rng = random.Random(3)
    tags = [[rng.choice(["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B"])
             for _ in range(rng.randint(0, 12))] for _ in range(300)]
    spans = entity_spans(tf.ragged.constant(tags, dtype=tf.string))
    starts = np.cumsum([0] + [len(t) for t in tags])
    got = [(t.decode(), int(row), int(f - starts[row]), int(l - starts[row]))
           for row, f, l, t in zip(*(x.numpy() for x in (spans.rows, spans.first, spans.last, spans.types)))]
    want = [(kind, row, first, last) for row, seq in enumerate(tags)
            for kind, first, last in get_entities(seq)]
    assert got == want


def test_entity_metrics_micro_and_per_type():
    from tfimitate.tasks.token_classification import entity_metrics

    result = entity_metrics([["B-PER", "I-PER", "O", "B-LOC"], ["S-ORG"]],
                            [["B-PER", "I-PER", "O", "O"], ["S-ORG"]])
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(2 / 3)
    assert result["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert "PER" in result["report"]


def test_training_logs_and_writes_entity_metrics(trained):
    import tensorflow as tf

    cfg, evaluation = trained
    with open(os.path.join(cfg.model_dir, "eval", "metrics.json")) as f:
        written = json.load(f)
    assert {"precision", "recall", "f1", "per_type", "step"} <= set(written)
    assert written["step"] == 80 and set(written["per_type"]) == {"PER", "LOC", "ORG"}
    assert written["f1"] > 0.5, written
    assert written["words"] == sum(len(w) for w, _ in evaluation)  # the long sentence counts whole
    assert os.path.isfile(os.path.join(cfg.model_dir, "eval", "test_metrics.json"))
    tags = set()
    for path in glob.glob(os.path.join(cfg.model_dir, "logs", "train", "events.*")):
        tags.update(v.tag for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value)
    assert {"eval/f1", "eval/precision", "eval/recall"} <= tags


def test_every_word_of_a_long_sentence_is_scored(trained):
    from tfimitate import runs
    from tfimitate.data import conll
    from tfimitate.tasks import token_classification

    evaluation = trained[1]
    task, run, _ = runs.restore(trained[0].model_dir)
    words, tags = evaluation[-1]
    split = token_classification.Split("long", [conll.Sentence(words, tags, list(range(len(words))))])
    probs = task.probabilities(run, split)
    assert probs.shape[0] == 1000 and np.allclose(probs.sum(axis=-1), 1.0, atol=1e-4)
    predicted = token_classification._sentence_tags(probs, split, run.labels)[0]
    assert np.mean([p == t for p, t in zip(predicted, tags)]) > 0.8


def test_export_signatures_byte_offsets_and_tag_words(trained):
    import tensorflow as tf

    cfg = trained[0]
    (version,) = glob.glob(os.path.join(cfg.export_dir, "*"))
    loaded = tf.saved_model.load(version)
    assert set(loaded.signatures) == {"serving_default", "tag_words"}
    texts = ["Johns said hello to Paris, then flew to New York City.", "the eu and google",
             "caf\u00e9 \u00fcber smith!", ""]
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        text=tf.constant(texts)).items()}
    assert out["words"][0][:3].tolist() == [b"Johns", b"said", b"hello"]
    assert out["words"].shape == out["tags"].shape and out["tags"][3].tolist() == [b""] * out["tags"].shape[1]
    found = 0
    for i, text in enumerate(texts):
        data = text.encode()
        for entity, kind, start, end in zip(out["entity_text"][i], out["entity_type"][i],
                                            out["entity_start"][i], out["entity_end"][i]):
            if kind:
                found += 1
                assert data[start:end] == entity and kind in (b"PER", b"LOC", b"ORG")
            else:
                assert (entity, start, end) == (b"", -1, -1)
    assert found >= 3
    padded = tf.constant([[w.decode() for w in row] for row in out["words"]])
    by_words = {k: v.numpy() for k, v in loaded.signatures["tag_words"](words=padded).items()}
    assert (by_words["tags"] == out["tags"]).all()
    assert (by_words["entity_type"] == out["entity_type"]).all()
    first = by_words["entity_start"][0][0]
    assert by_words["entity_text"][0][0] == b" ".join(out["words"][0][first:by_words["entity_end"][0][0]])


def test_predict_writes_words_tags_and_entities(trained, tmp_path):
    from tfimitate import workflow

    cfg = trained[0]
    write_lines(tmp_path, "part-1.txt", ["the eu and google"])  # a pattern: every file, in order
    write_lines(tmp_path, "part-0.txt", ["john smith said hello to london .", ""])
    output = os.path.join(str(tmp_path), "out.jsonl")
    workflow.predict(cfg.model_dir, os.path.join(str(tmp_path), "part-*.txt"), output)
    with open(output) as f:
        records = [json.loads(line) for line in f]
    assert [r["text"] for r in records] == ["john smith said hello to london .", "the eu and google"]
    assert records[0]["words"][:2] == ["john", "smith"]
    assert len(records[0]["tags"]) == len(records[0]["words"]) == 7
    entities = [e for r in records for e in r["entities"]]
    assert entities and all(r["text"].encode()[e["start"]:e["end"]].decode() == e["text"]
                            for r in records for e in r["entities"])


def test_client_lays_out_served_ner_outputs_like_predict(trained, tmp_path):
    import numpy as np

    from tfimitate import workflow
    from tfimitate.serving.client import ServingClient, records
    from tfimitate.serving.devserver import DevServer

    cfg = trained[0]
    texts = ["john smith said hello to london .", "the eu and google"]
    output = os.path.join(str(tmp_path), "out.jsonl")
    workflow.predict(cfg.model_dir, write_lines(tmp_path, "in.txt", texts), output)
    with open(output) as f:
        expected = [json.loads(line) for line in f]
    server = DevServer("ner", cfg.export_dir, port=0).start()
    try:
        client = ServingClient(server.target, timeout=60)
        item_outputs = client.item_outputs("ner")
        rows = records(texts, client.predict("ner", {"text": texts}).outputs, item_outputs)
    finally:
        server.stop()
    assert item_outputs == {"words", "tags", "scores", "probabilities", "entity_text",
                            "entity_type", "entity_start", "entity_end"}
    assert any(row["entities"] for row in rows)
    for row, want in zip(rows, expected):
        assert (row["text"], row["words"], row["tags"], row["entities"]) == (
            want["text"], want["words"], want["tags"], want["entities"])
        np.testing.assert_allclose(row["scores"], want["scores"], atol=1e-4)


def test_tag_only_in_test_data_fails_before_writing(trained, tmp_path):
    from tfimitate import workflow
    from tfimitate.errors import UserError

    cfg = trained[0]
    test = write_lines(tmp_path, "test.txt", ["paris B-LOC", "", "acme B-COMPANY"])
    bad = cfg.replace(model_dir=os.path.join(str(tmp_path), "run"), test_data=test, export_dir=None)
    with pytest.raises(UserError, match=r"test\.txt:3: tag 'B-COMPANY' is not one of the model's tags"):
        workflow.train(bad)
    assert not os.path.exists(bad.model_dir)


def test_data_flags_take_patterns_and_lists_and_name_the_real_file(tmp_path):
    from tfimitate.errors import UserError
    from tfimitate.tasks.token_classification import TokenClassification

    rng = random.Random(1)
    for i in range(3):
        write_conll(tmp_path, f"train-{i}.txt", [tagged_sentence(rng) for _ in range(5)])
    dev = [write_conll(tmp_path, f"dev-{i}.txt", [tagged_sentence(rng)]) for i in range(2)]
    cfg = experiment(tmp_path, task="token_classification",
                     train_data=os.path.join(str(tmp_path), "train-*.txt"), eval_data=",".join(dev))
    data = TokenClassification().load_data(cfg)
    assert len(data.train) == 15 and len(data.eval) == 2
    assert [os.path.basename(s.file) for s in data.train.sentences[4:6]] == ["train-0.txt", "train-1.txt"]
    write_lines(tmp_path, "test-1.txt", ["paris B-LOC", "", "acme B-COMPANY"])
    write_lines(tmp_path, "test-0.txt", ["paris B-LOC"])
    test = os.path.join(str(tmp_path), "test-*.txt")
    with pytest.raises(UserError, match=r"^[^*]*test-1\.txt:3: tag 'B-COMPANY' is not one of"):
        TokenClassification().load_data(cfg.replace(test_data=test))
    data = TokenClassification().load_data(cfg.replace(test_data=test, labels=data.labels,
                                                       drop_unlisted_labels=True))
    assert [s.words for s in data.test.sentences] == [["paris"], ["paris"]]


def test_cli_bad_line_exits_nonzero_with_one_sentence(tmp_path):
    train = write_lines(tmp_path, "train.txt", ["EU NNP B-ORG", "rejects VBZ O", "German JJ"])
    model_dir = os.path.join(str(tmp_path), "run")
    result = subprocess.run(
        [sys.executable, "-m", "tfimitate.train", "--task=token_classification",
         f"--train_data={train}", f"--model_dir={model_dir}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.txt:3: line has 2 columns but line 2 has 3" in errors[0]
    assert not os.path.exists(model_dir)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "conll2003")),
                    reason="needs ../shared/data/conll2003")
def test_minilm_learns_conll2003_entities(tmp_path):
    """A short run of the real packaged backbone on a slice of CoNLL-2003 (several minutes)."""
    from tfimitate import workflow

    data = os.path.join(SHARED_DATA, "conll2003")
    cfg = experiment(tmp_path, task="token_classification", backbone="minilm_l6",
                     train_data=os.path.join(data, "train.txt"),
                     eval_data=write_lines(tmp_path, "dev.txt", open(
                         os.path.join(data, "dev.txt")).read().split("\n")[:3000]),
                     max_steps=150, batch_size=32, sequence_length=128, learning_rate=1e-4,
                     checkpoint_steps=150)
    assert workflow.train(cfg)["f1"] > 0.5
