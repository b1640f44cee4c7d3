"""Text noise (data/noise.py) and training augmentation (techniques/augment.py): what each
operation does, seeded streams that replay on resume, NER labels kept aligned, and the
errors a user can cause."""

import os

import numpy as np
import pytest
import tensorflow as tf

import helpers
from tfimitate import workflow
from tfimitate.data import noise
from tfimitate.errors import UserError
from tfimitate.tasks import base, common, get_task
from tfimitate import techniques
from tfimitate.techniques import augment

WORDS = [f"word{c}{c}x" for c in "abcdefghijklmnopqrst"] + [",", "Paris", "é"]


def _decoded(tensor):
    return [w.decode() for w in tensor.numpy()]


def _one_edit_apart(before, after):
    """True if `after` is `before` with one adjacent swap, deletion, insertion or substitution."""
    if before == after:
        return True
    if len(after) == len(before):
        diff = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and before[diff[0]] == after[diff[1]]
                                  and before[diff[1]] == after[diff[0]])
    short, long = sorted((before, after), key=len)
    return len(long) == len(short) + 1 and any(long[:i] + long[i + 1:] == short
                                               for i in range(len(long)))


def test_typos_edit_one_character_in_about_rate_of_the_words_and_keep_their_number():
    edited = total = 0
    for seed in range(30):
        after = _decoded(noise.typos(tf.constant(WORDS), 0.3, [seed, 7]))
        assert len(after) == len(WORDS) and all(after)
        assert after[-3] == ","  # no letter, no typo
        for before, word in zip(WORDS, after):
            assert _one_edit_apart(before, word), (before, word)
        edited += sum(b != a for b, a in zip(WORDS[:20], after[:20]))
        total += 20
    assert 0.2 < edited / total < 0.4
    again = _decoded(noise.typos(tf.constant(WORDS), 0.3, [3, 7]))
    assert again == _decoded(noise.typos(tf.constant(WORDS), 0.3, [3, 7]))
    assert again != _decoded(noise.typos(tf.constant(WORDS), 0.3, [4, 7]))


def test_typo_replacements_and_insertions_come_from_the_keyboard():
    neighbours = noise.keyboard_neighbours()
    assert neighbours["a"] == "qwsz" and set(neighbours["g"]) == set("tyfhvb")
    for seed in range(20):
        for before, after in zip(["aaaa"], _decoded(noise.typos(tf.constant(["aaaa"]), 1.0, [seed, 0]))):
            extra = set(after) - {"a"}
            assert extra <= set(neighbours["a"]), after


def test_word_dropout_keeps_a_word_and_swaps_only_move_neighbours():
    words = tf.constant(WORDS[:10])
    assert len(_decoded(noise.drop_words(words, 1.0, [1, 1]))) == 1
    kept = _decoded(noise.drop_words(words, 0.5, [1, 1]))
    assert 0 < len(kept) < 10 and kept == [w for w in WORDS[:10] if w in kept]
    swapped = _decoded(noise.swap_words(words, 0.5, [2, 1]))
    assert sorted(swapped) == sorted(WORDS[:10]) and swapped != WORDS[:10]
    assert all(abs(WORDS.index(w) - i) <= 1 for i, w in enumerate(swapped))


def test_case_changes_words_and_mask_touches_only_maskable_pieces():
    assert _decoded(noise.change_case(tf.constant(["Paris", "EU", "é"]), 1.0, [0, 0])) == [
        "PARIS", "eu", "É"]
    ids = tf.fill([4, 50], 7)
    maskable = tf.sequence_mask([50, 30, 10, 0], 50)
    masked = noise.mask_pieces(ids, maskable, 0.5, 103, [0, 1]).numpy()
    assert np.all(masked[~maskable.numpy()] == 7)
    assert 0.35 < np.mean(masked[maskable.numpy()] == 103) < 0.65


def test_parse_rates_refuses_unknown_names_repeats_and_bad_rates():
    assert augment.parse_rates("swap:0.05, mask:0.1", "--augment", ("swap", "mask")) == {
        "swap": 0.05, "mask": 0.1}
    for spec, message in [("shuffle:0.1", "'shuffle' is unknown; use swap, mask"),
                          ("swap:1.5", "the rate of swap is 1.5, outside \\[0, 1\\]"),
                          ("swap:-0.1", "the rate of swap is -0.1, outside"),
                          ("swap", "'swap' needs a rate"),
                          ("swap:0.1,swap:0.2", "'swap' is given twice"),
                          (",", "names no operation")]:
        with pytest.raises(UserError, match=f"--augment={spec}: {message}"):
            augment.parse_rates(spec, "--augment", ("swap", "mask"))


def _run(tmp_path, task_name, **changes):
    """A Run (tiny backbone, no model) of `task_name` with `changes`, and its training split."""
    from samples import TASK_DATA

    flags, _ = TASK_DATA[task_name](tmp_path)
    cfg = helpers.experiment(tmp_path, task=task_name, backbone=helpers.tiny_bert_preset(tmp_path),
                             **flags, **changes)
    task = get_task(task_name)
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=data.labels)
    chosen = techniques.chosen(cfg)
    run = base.Run(cfg, None, task.make_preprocessor(cfg), tf.distribute.get_strategy(),
                   text_transform=lambda keep: techniques.text_transform(chosen, cfg, keep))
    return task, run, data.train, chosen


def _batches(task, run, split, chosen, count, skip=0):
    dataset = techniques.adapt_dataset(chosen, task.train_dataset(run, split), run.cfg)
    return [tf.nest.map_structure(lambda t: t.numpy(), batch)
            for batch in dataset.skip(skip).take(count)]


def test_augmented_text_batches_change_every_pass_and_replay_on_resume(tmp_path):
    """A resumed run skips the batches it already trained on: the rest of the stream is
    the same as an uninterrupted run's, so augmentation is reproducible."""
    task, run, split, chosen = _run(tmp_path, "text_classification",
                                    augment="word_dropout:0.2,swap:0.1,char_noise:0.2,mask:0.2",
                                    augment_prob=0.8)
    stream = _batches(task, run, split, chosen, 14)
    resumed = _batches(task, run, split, chosen, 5, skip=9)
    for a, b in zip(stream[9:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    plain_task, plain_run, _, plain = _run(tmp_path, "text_classification")
    plain_ids = {tuple(ids[mask]) for inputs, _ in _batches(plain_task, plain_run, split, plain, 6)
                 for ids, mask in zip(inputs["token_ids"], inputs["padding_mask"])}
    augmented = [{tuple(ids[mask]) for ids, mask in zip(inputs["token_ids"], inputs["padding_mask"])}
                 for inputs, _ in stream]
    first_pass, second_pass = set().union(*augmented[:6]), set().union(*augmented[7:13])
    assert len(first_pass - plain_ids) > len(split) // 4  # many examples changed
    assert first_pass != second_pass  # new noise on the next pass


def test_every_example_is_seen_once_per_augmented_pass(tmp_path):
    from tfimitate.tasks import text_inputs

    _, run, split, _ = _run(tmp_path, "text_classification", augment="char_noise:0.5")
    examples = text_inputs.examples(split, {"labels": np.arange(len(split), dtype=np.int32)})
    stream = common.training_batches(run, examples, text_inputs.encoder(run.preprocessor),
                                     {"token_ids": 0}, ("text",))
    seen = []
    for _, labels in stream:
        seen += labels.numpy().tolist()
        if len(seen) >= 2 * len(split):
            break
    assert sorted(seen[:len(split)]) == sorted(seen[len(split):]) == list(range(len(split)))


def test_ner_augmentation_keeps_every_tag_on_its_word(tmp_path):
    task, run, split, chosen = _run(tmp_path, "token_classification",
                                    augment="char_noise:0.5,mask:0.3,unk:0.1", augment_prob=1.0)
    tags = sorted(tuple(t for t in ids if t) for ids in _tag_rows(split, run.labels))
    dataset = techniques.adapt_dataset(chosen, task.train_dataset(run, split), run.cfg)
    batches, seen = [], []
    for inputs, labels in dataset:
        batches.append((inputs["token_ids"].numpy(), inputs["padding_mask"].numpy()))
        seen += [tuple(row[row > 0]) for row in labels.numpy()]
        if len(seen) >= len(split):
            break
    assert sorted(seen) == tags  # one pass: every sentence once, its tags in order
    pieces = np.concatenate([ids[mask] for ids, mask in batches])
    mask_id = run.preprocessor.tokenizer.token_to_id("[MASK]")
    assert 0.1 < np.mean(pieces == mask_id) < 0.4


def _tag_rows(split, labels):
    index = {label: i + 1 for i, label in enumerate(labels)}
    return [[index[t] for t in s.tags] for s in split.sentences]


@pytest.mark.parametrize("spec", ["word_dropout:0.1", "swap:0.05,char_noise:0.1"])
def test_ner_refuses_augmentation_that_moves_words_before_writing(tmp_path, spec):
    from samples import TASK_DATA

    (tmp_path / "data").mkdir()
    flags, _ = TASK_DATA["token_classification"](tmp_path / "data")
    cfg = helpers.experiment(tmp_path, task="token_classification", augment=spec,
                             backbone=helpers.tiny_bert_preset(tmp_path / "data"), **flags)
    with pytest.raises(UserError, match="change the words, which would misalign the per-word "
                                        "labels of --task=token_classification"):
        workflow.train(cfg)
    assert not os.path.exists(cfg.model_dir)
