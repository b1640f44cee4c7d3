"""Large text-classification TSVs grown from SST-2's real sentences, fast and reproducible.

Each row joins the start of one real sentence (1 to all of its words) to the end of
another (0 to all of its words), both cut at word boundaries, and takes the first
sentence's label. Rows are almost all distinct (so de-duplication does not shrink the
set) and average about 104 bytes like SST-2 itself (10 k rows ≈ 1.1 MB, 4 M ≈ 450 MB,
the sizes of issue 25's table). Rows come in blocks of BLOCK, block i drawn from a
generator seeded with (seed, i), so a smaller set is the start of a larger one. Bytes
are gathered with numpy and written a block at a time: 4 M rows take about a minute.

Example:
    source = Sentences.from_tsv("../shared/data/sst2/train.tsv")
    write_tsv(source, 10_000, "/tmp/d/rows-10k.tsv")                 # header sentence<TAB>label
    write_shards(source, 4_000_000, "/tmp/d/shards", 16)  # train-00000-of-00016.tsv ... same rows
"""

import os
import shutil

import numpy as np

HEADER = b"sentence\tlabel\n"
BLOCK = 250_000


class Sentences:
    """Real sentences as one byte buffer with word boundaries, and their labels."""

    def __init__(self, texts, labels):
        encoded = [text.encode("utf-8") for text in texts]
        self.labels = np.asarray(labels, dtype=np.int64)
        lengths = np.array([len(text) for text in encoded])
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.ends = self.starts + lengths
        word_starts, word_ends, counts = [], [], []
        for text, start in zip(encoded, self.starts):
            words = text.split(b" ")
            offsets = np.cumsum([0] + [len(word) + 1 for word in words])[:-1] + start
            word_starts.append(offsets)
            word_ends.append(offsets + [len(word) for word in words])
            counts.append(len(words))
        self.word_counts = np.array(counts)
        self.first_word = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.word_starts = np.concatenate(word_starts)
        self.word_ends = np.concatenate(word_ends)
        # The buffer ends with " " and then "\t<label>\n" for each label value 0, 1, ...
        joined = b"".join(encoded)
        self.space = len(joined)
        fields = [b"\t%d\n" % label for label in range(self.labels.max() + 1)]
        self.label_lengths = np.array([len(field) for field in fields])
        self.label_starts = len(joined) + 1 + np.cumsum(self.label_lengths) - self.label_lengths
        buffer = joined + b" " + b"".join(fields)
        self.buffer = np.frombuffer(buffer, dtype=np.uint8)

    @classmethod
    def from_tsv(cls, path):
        """The sentences and integer labels of a headerless `text<TAB>label` file."""
        texts, labels = [], []
        with open(path, encoding="utf-8") as f:
            for line in f:
                text, label = line.rstrip("\n").rsplit("\t", 1)
                if text.strip():
                    texts.append(" ".join(text.split()))
                    labels.append(int(label))
        return cls(texts, labels)

    def block(self, seed, index):
        """The bytes of the BLOCK rows (each `text<TAB>label\n`) of block `index`."""
        rng = np.random.default_rng([seed, index])
        rows = BLOCK
        n = len(self.labels)
        first, second = rng.integers(0, n, rows), rng.integers(0, n, rows)
        kept = 1 + (rng.random(rows) * self.word_counts[first]).astype(np.int64)
        dropped = (rng.random(rows) * (self.word_counts[second] + 1)).astype(np.int64)
        head_end = self.word_ends[self.first_word[first] + kept - 1]
        has_tail = dropped < self.word_counts[second]
        tail_start = np.where(has_tail, self.word_starts[self.first_word[second]
                                                         + np.minimum(dropped, self.word_counts[second] - 1)],
                              self.ends[second])
        label = self.labels[first]
        # Four segments per row: head, " " (if a tail follows), tail, "\t<label>\n".
        seg_starts = np.stack([self.starts[first], np.full(rows, self.space), tail_start,
                               self.label_starts[label]], axis=1).ravel()
        seg_lengths = np.stack([head_end - self.starts[first], has_tail.astype(np.int64),
                                self.ends[second] - tail_start,
                                self.label_lengths[label]], axis=1).ravel()
        return _gather(self.buffer, seg_starts, seg_lengths)

    def rows(self, count, seed=0):
        """The blocks (bytes) of the first `count` rows, BLOCK rows at a time."""
        for index in range(-(-count // BLOCK)):
            block = self.block(seed, index)
            if count - index * BLOCK < BLOCK:
                ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
                block = block[:ends[count - index * BLOCK - 1] + 1]
            yield block


def _gather(buffer, starts, lengths):
    """buffer[starts[0]:starts[0]+lengths[0]] + ... as bytes, without a Python loop."""
    offsets = np.cumsum(lengths) - lengths
    index = np.arange(lengths.sum()) + np.repeat(starts - offsets, lengths)
    return buffer[index].tobytes()


def write_tsv(source, count, path, seed=0):
    """Writes `count` rows with a header to `path` (whole or not at all); kept if present."""
    if os.path.exists(path):
        return path
    with open(path + ".tmp", "wb") as f:
        f.write(HEADER)
        for block in source.rows(count, seed):
            f.write(block)
    os.replace(path + ".tmp", path)
    return path


def write_shards(source, count, directory, shards, seed=0):
    """Writes the same rows as write_tsv into `shards` files train-NNNNN-of-SSSSS.tsv
    (contiguous ranges, each with the header) under `directory`; kept if present.
    Returns the file pattern."""
    pattern = os.path.join(directory, f"train-*-of-{shards:05d}.tsv")
    if os.path.isdir(directory):
        return pattern
    if count % shards:
        raise ValueError(f"{count} rows do not split into {shards} equal shards")
    per_shard = count // shards
    temporary = directory + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    files = [open(os.path.join(temporary, f"train-{i:05d}-of-{shards:05d}.tsv"), "wb")
             for i in range(shards)]
    try:
        for f in files:
            f.write(HEADER)
        written = 0
        for block in source.rows(count, seed):
            for line_start, line in _split_rows(block, written, per_shard):
                files[line_start // per_shard].write(line)
            written += block.count(b"\n")
    finally:
        for f in files:
            f.close()
    os.replace(temporary, directory)
    return pattern


def _split_rows(block, first_row, per_shard):
    """(first row number, bytes) pieces of `block` (rows first_row...) that each fall
    inside one shard of `per_shard` rows."""
    newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    row_starts = np.concatenate([[0], newlines + 1])  # byte offset of each row, then the end
    cuts = list(range(-first_row % per_shard, len(newlines), per_shard))
    cuts = sorted({0, *cuts, len(newlines)})
    for begin, end in zip(cuts, cuts[1:]):
        yield first_row + begin, block[row_starts[begin]:row_starts[end]]
