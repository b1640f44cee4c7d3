"""How often the serving word splitter gives CoNLL sentences back word for word.

Each sentence of each file is joined by single spaces and re-split with
`tfimitate.tasks.ner_words.split_words` (what the exported NER model runs on
raw text); the share of sentences whose words come back identical is printed
per file, next to the old splitter (whitespace and every punctuation mark),
with the file words most often cut and the split words most often merged.
Results go to benchmarks/results/ner_word_match.{json,md}.

Run from the repository root (so this checkout's tfimitate is imported):
    python -m benchmarks.ner_word_match
    python -m benchmarks.ner_word_match --data=../shared/data/conll2003/test.txt --top=30
"""

import os
import sys
import time

if not __package__:  # run as `python benchmarks/ner_word_match.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402

CONLL = os.path.normpath(os.path.join(harness.ROOT, "..", "shared", "data", "conll2003"))
# The splitter tag_text used before issue 10: whitespace and around every punctuation mark.
OLD_DELIMITERS, OLD_KEPT = r"\s+|\p{P}|[[:punct:]]", r"\p{P}|[[:punct:]]"

_DATA = flags.DEFINE_list("data", [os.path.join(CONLL, f"{name}.txt") for name in
                                   ("test", "dev", "train")], "CoNLL/JSONL files to measure.")
_TOP = flags.DEFINE_integer("top", 15, "How many of the most frequent mismatches to list.")
_RESULTS = flags.DEFINE_string("results", harness.RESULTS,
                               "Where ner_word_match.json and .md go.")


def old_split(text):
    import tensorflow_text as tf_text

    return tf_text.regex_split_with_offsets(text, OLD_DELIMITERS, OLD_KEPT)


def measure(path, top):
    from tfimitate.data import conll
    from tfimitate.tasks import ner_skew

    sentences = conll.read_sentences(path, "--data")
    start = time.perf_counter()
    new = ner_skew.word_match(sentences)
    seconds = time.perf_counter() - start
    old = ner_skew.word_match(sentences, split=old_split, examples=0)
    return {"file": path, "sentences": new.sentences, "words": sum(len(s.words) for s in sentences),
            "share": new.share, "mismatched": new.mismatched, "old_share": old.share,
            "old_mismatched": old.mismatched, "split_seconds": round(seconds, 2),
            "cut": new.cut.most_common(top), "merged": new.merged.most_common(top),
            "examples": new.examples}


def markdown(results, info):
    lines = ["# Serving word splitter vs CoNLL words (sentences joined by single spaces)", "",
             f"Machine: {info['cpu_model']}, {info['cores']} cores, 1-minute load average "
             f"{info['load_average'][0]} at the end. Command: `python -m benchmarks.ner_word_match`",
             "", "| file | sentences | identical (ner_words) | identical (old splitter) | split s |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {os.path.basename(r['file'])} | {r['sentences']} | "
                     f"{r['share']:.2%} ({r['mismatched']} differ) | "
                     f"{r['old_share']:.2%} ({r['old_mismatched']} differ) | {r['split_seconds']} |")
    for r in results:
        lines += ["", f"## {os.path.basename(r['file'])}: most frequent mismatches", "",
                  "file words cut: " + (", ".join(f"`{w}` {n}" for w, n in r["cut"]) or "none"),
                  "", "split words merging file words: "
                  + (", ".join(f"`{w}` {n}" for w, n in r["merged"]) or "none")]
        for example in r["examples"]:
            lines += ["", f"- file: `{' | '.join(example['words'])}`",
                      f"  split: `{' | '.join(example['split'])}`"]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    import tfimitate  # noqa: F401  (environment before TensorFlow)

    results = [measure(path, _TOP.value) for path in _DATA.value]
    info = machine.describe()
    text = markdown(results, info)
    harness.save("ner_word_match", {"machine": info, "results": results}, text, _RESULTS.value)
    print(text)


if __name__ == "__main__":
    app.run(main)
