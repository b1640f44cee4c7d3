"""Robustness report: a model's score on clean and on perturbed eval texts, and the
examples whose prediction flipped (`python -m tfimitate.evaluate --perturb=...`).

    typos[:R]       one typo (two adjacent characters swapped, one deleted, a keyboard
                    neighbour inserted or substituted) in each word with a letter, with
                    probability R (default 0.1)
    case[:R]        each word upper-cased (lower-cased if it already is), prob. R (default 1)
    drop_words[:R]  each word deleted with probability R (default 0.1); not for tasks
                    whose labels follow the words (NER)

Perturbations are seeded (--perturb_seed) per example, so every model is scored on the
same perturbed texts: compare a checkpoint, another run, or any exported SavedModel.

Example:
    python -m tfimitate.evaluate --model_dir=runs/sst2 --perturb=typos:0.1,case,drop_words:0.1
    # eval/robustness.json: {"clean": {"score": 0.867}, "perturbations": {"typos:0.1":
    #   {"score": 0.81, "drop": 0.057, "changed": 650, "flipped": 70, "flipped_examples": [...]}}}
"""

from tfimitate.errors import UserError

DEFAULT_RATES = {"typos": 0.1, "case": 1.0, "drop_words": 0.1}
# Perturbations that change the number of words.
MOVES_WORDS = ("drop_words",)


def parse(spec):
    """[(label in the report, operation, rate, name)] for `--perturb=spec`.

    Example:
        parse("typos:0.1,case")  # [("typos:0.1", noise.typos, 0.1, "typos"), ("case:1", ...)]
    """
    from tfimitate.data import noise
    from tfimitate.techniques import augment

    operations = {"typos": noise.typos, "case": noise.change_case, "drop_words": noise.drop_words}
    rates = augment.parse_rates(spec, "--perturb", tuple(operations), DEFAULT_RATES)
    return [(f"{name}:{rate:g}", operations[name], rate, name) for name, rate in rates.items()]


def word_change(name, operation, rate, seed, task_name):
    """A `change(word_lists, keep_word_count)` for Task.perturbed: `operation` on each
    word list with the stateless seed (seed, its index)."""
    import tensorflow as tf

    def change(word_lists, keep_word_count):
        if keep_word_count and name in MOVES_WORDS:
            raise UserError(f"--perturb={name} changes the number of words, which would "
                            f"misalign the per-word labels of --task={task_name}; use typos "
                            "or case.")
        lengths = [len(words) for words in word_lists]
        flat = tf.constant([word for words in word_lists for word in words], tf.string)
        ragged = tf.RaggedTensor.from_row_lengths(flat, tf.constant(lengths, tf.int64))
        dataset = (tf.data.Dataset.from_tensor_slices(ragged).enumerate()
                   .map(lambda index, words: operation(words, rate, tf.stack(
                       [tf.constant(seed, tf.int64), index])))
                   .ragged_batch(1024))
        return [[word.decode() for word in words] for batch in dataset
                for words in batch.to_list()]

    return change


def perturb(task, split, perturbations, seed):
    """{label: the perturbed split} for each of `parse`'s perturbations (UserError for one
    the task cannot take); cheap, so it runs before any model is loaded."""
    return {label: task.perturbed(split, word_change(name, operation, rate, seed, task.NAME))
            for label, operation, rate, name in perturbations}


def report(split, perturbed, score, seed):
    """(clean Evaluation, report dict): `score(split) -> Evaluation` on `split` and on each
    perturbed split, with the examples whose prediction flipped."""
    clean = score(split)
    result = {"data": split.source, "examples": len(split), "perturb_seed": seed,
              "clean": {"score": clean.score}, "perturbations": {}}
    for label, noisy_split in perturbed.items():
        noisy = score(noisy_split)
        changed, flipped = 0, []
        for index, (before, after) in enumerate(zip(clean.predictions, noisy.predictions)):
            changed += _inputs(before) != _inputs(after)
            if before["predicted"] != after["predicted"]:
                flipped.append({"index": index, "clean": before, "perturbed": after})
        result["perturbations"][label] = {
            "score": noisy.score, "drop": clean.score - noisy.score, "changed": changed,
            "flipped": len(flipped), "flipped_examples": flipped}
    return clean, result


def _inputs(record):
    return {key: value for key, value in record.items() if key != "predicted"}


def summary(result):
    """The report as a few printable lines."""
    lines = [f"Robustness on {result['data']} ({result['examples']} examples, "
             f"--perturb_seed={result['perturb_seed']}): clean score {result['clean']['score']:.4f}"]
    for label, found in result["perturbations"].items():
        lines.append(f"  {label:<16} score {found['score']:.4f} (drop {found['drop']:+.4f}); "
                     f"{found['changed']} inputs changed, {found['flipped']} predictions flipped")
    return "\n".join(lines)
