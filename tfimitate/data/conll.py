"""Read word/tag sentences from CoNLL or JSONL files, with file:line errors.

CoNLL: one word per line, the word in the first column and its tag in the
last, any columns in between (2-column and 4-column CoNLL-2003 both work),
space or tab separated, a blank line between sentences, `-DOCSTART-` lines
skipped. JSONL: one `{"tokens": [...], "tags": [...]}` object per line.
Tags are `O` or `B-/I-/E-/S-TYPE` (IOB2 or IOBES). A data flag may also name a file
pattern or a comma-separated list (data/streams.py `expand`): the files are read in
sorted order and joined, each sentence keeping its file for messages. No TensorFlow
here for local files, so a bad file fails in a second.

Example:
    sentences = read_sentences("train.txt", "--train_data")
    # [Sentence(words=['EU', 'rejects', ...], tags=['B-ORG', 'O', ...], lines=[1, 2, ...],
    #           file='train.txt'), ...]
"""

import re
from typing import List, NamedTuple, Optional

from absl import logging

from tfimitate.data import readers, streams, tfds_source
from tfimitate.errors import UserError

DOCSTART = "-DOCSTART-"
TAG_PATTERN = re.compile(r"^(O|[BIES]-\S+)$")
SCHEMES = ("iob2", "iobes")


class Sentence(NamedTuple):
    words: List[str]
    tags: List[str]
    lines: List[int]  # 1-based line of each word in the file
    file: Optional[str] = None  # the file it was read from (None: not from a file)

    def where(self, i, source):
        """`file:line` of word `i`, for messages (`source` when the file is not known)."""
        return f"{self.file or source}:{self.lines[i]}"


def read_sentences(spec, flag, with_tags=True, columns=None, tfds_data_dir=None):
    """Reads a CoNLL file (or .jsonl with `tokens`/`tags`), or the files of a pattern or
    comma-separated list (sorted, joined), into checked Sentences.

    With `with_tags=False` (words to tag) tags are optional: a one-column CoNLL
    file or JSONL without `tags` is read, and any tags are ignored (all O).
    `tfds:NAME[/CONFIG][:SPLIT]` reads a prepared TensorFlow Datasets split from
    `tfds_data_dir` (tfds_source.py); `columns` (words, tags) name its features.
    """
    if tfds_source.is_tfds(spec):
        return [Sentence(*sentence) for sentence in tfds_source.read_sentences(
            spec, *columns, flag, TAG_PATTERN, tfds_data_dir, with_tags)]
    sentences = []
    for path in streams.expand(spec, flag):
        text = readers.read_text(path, flag)
        if readers.base_suffix(path) in (".jsonl", ".json"):
            sentences += _read_jsonl(text, path, with_tags)
        else:
            sentences += _read_conll(text, path, with_tags)
    if not sentences:
        held = "the files hold" if streams.is_file_list(spec) else "the file holds"
        raise UserError(f"{flag}={spec}: {held} no sentences; give word/tag lines "
                        "(CoNLL) or tokens/tags objects (JSONL).")
    return sentences


def _read_conll(text, path, with_tags=True):
    sentences, words, tags, lines = [], [], [], []
    columns, columns_line = None, 0
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if fields and fields[0] == DOCSTART:
            fields = []
        if not fields:
            if words:
                sentences.append(Sentence(words, tags, lines, path))
            words, tags, lines = [], [], []
            continue
        if not with_tags:
            fields = [fields[0], "O"]
        if len(fields) < 2:
            raise UserError(f"{path}:{number}: line has one column ('{line.strip()}'); CoNLL "
                            "needs the word first and its tag last.")
        if columns is not None and len(fields) != columns:
            raise UserError(
                f"{path}:{number}: line has {len(fields)} columns but line {columns_line} has "
                f"{columns}; every word line needs the same columns (word first, tag last).")
        columns, columns_line = len(fields), number
        _check_tag(fields[-1], path, number)
        words.append(fields[0])
        tags.append(fields[-1])
        lines.append(number)
    if words:
        sentences.append(Sentence(words, tags, lines, path))
    return sentences


def _read_jsonl(text, path, with_tags=True):
    sentences = []
    for number, record in readers.json_records(text, path):
        if not with_tags and isinstance(record.get("tokens"), list):
            record = dict(record, tags=["O"] * len(record["tokens"]))
        if not isinstance(record.get("tokens"), list) or not isinstance(record.get("tags"), list):
            raise UserError(f"{path}:{number}: expected an object with `tokens` and `tags` "
                            "lists; fix the line.")
        words, tags = [str(w) for w in record["tokens"]], [str(t) for t in record["tags"]]
        if not words:
            raise UserError(f"{path}:{number}: the sentence has no tokens; remove the line.")
        if len(words) != len(tags):
            raise UserError(f"{path}:{number}: {len(words)} tokens but {len(tags)} tags; give "
                            "one tag per token.")
        for word in words:
            if not word.strip() or len(word.split()) != 1:
                raise UserError(f"{path}:{number}: token {word!r} is empty or holds "
                                "whitespace; give one word per token.")
        for tag in tags:
            _check_tag(tag, path, number)
        sentences.append(Sentence(words, tags, [number] * len(words), path))
    return sentences


def _check_tag(tag, path, number):
    if not TAG_PATTERN.match(tag):
        raise UserError(f"{path}:{number}: tag '{tag}' is not O or B-/I-/E-/S-TYPE; fix the "
                        "tag (IOB2 or IOBES tags in the last column).")


def detect_scheme(tags):
    """'iobes' if any tag starts with E- or S-, else 'iob2'.

    Example:
        detect_scheme(["B-PER", "E-PER", "O"])  # 'iobes'
    """
    return "iobes" if any(tag[:2] in ("E-", "S-") for tag in tags) else "iob2"


def repair(sentences, scheme, source):
    """Makes entity starts explicit, as IOB2 wants; warns once with the count.

    An I-X (or E-X) that follows O or another type starts an entity in IOB1
    files: it becomes B-X (or S-X). With scheme 'iob2', E-/S- tags are refused, naming
    the sentence's file and line (`source` for sentences that do not know their file).

    Example:
        repair([Sentence(["Paris"], ["I-LOC"], [1])], "iob2", "a.txt")[0].tags  # ['B-LOC']
    """
    fixed, count = [], 0
    for sentence in sentences:
        tags = list(sentence.tags)
        for i, tag in enumerate(tags):
            if scheme == "iob2" and tag[:2] in ("E-", "S-"):
                raise UserError(
                    f"{sentence.where(i, source)}: tag '{tag}' is IOBES but --tagging_scheme="
                    "iob2; pass --tagging_scheme=iobes (or auto).")
            if tag[:2] not in ("I-", "E-"):
                continue
            previous = tags[i - 1] if i else "O"
            if previous[:2] not in ("B-", "I-") or previous[2:] != tag[2:]:
                tags[i] = ("B-" if tag[0] == "I" else "S-") + tag[2:]
                count += 1
        fixed.append(sentence._replace(tags=tags))
    if count:
        logging.warning("%s: %d I-/E- tags did not continue an entity (IOB1 style); treated "
                        "them as entity starts (B-/S-), as IOB2 does.", source, count)
    return fixed
