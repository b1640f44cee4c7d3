"""Seeded text noise in TF ops: word deletion and swaps, typos, case, word-piece masking.

Every function takes one text's words (tf.string [W]) or a batch of word-piece ids
and a stateless seed (int [2]), so the same seed always gives the same noise: in
tf.data (training augmentation, reproducible when a resumed run replays its
stream) and in the robustness report (the same perturbed texts for every model).

Example:
    words = tf.constant(["a", "gripping", "film"])
    typos(words, 1.0, seed=[1, 2])        # e.g. [b"s", b"grpiping", b"fiml"]
    drop_words(words, 0.5, seed=[1, 2])   # e.g. [b"gripping", b"film"]
"""

import tensorflow as tf

# QWERTY rows and each row's horizontal offset, in key widths (rows are staggered).
KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD_OFFSETS = (0.0, 0.5, 0.75, 1.25)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def keyboard_neighbours():
    """Lower-case letter/digit -> the keys around it on a QWERTY keyboard.

    Example:
        keyboard_neighbours()["a"]  # "qwsz"
    """
    place = {key: (row, index + KEYBOARD_OFFSETS[row])
             for row, keys in enumerate(KEYBOARD_ROWS) for index, key in enumerate(keys)}
    return {key: "".join(other for other, (row2, x2) in place.items()
                         if other != key and abs(row2 - row) <= 1 and abs(x2 - x) <= 1)
            for key, (row, x) in place.items()}


def _neighbour_table():
    """Neighbour strings indexed by ASCII code (upper-case letters share the lower-case
    entry); "" where a character has none."""
    neighbours = keyboard_neighbours()
    table = [neighbours.get(chr(code).lower(), "") for code in range(128)]
    return tf.constant(table)


def _uniform(shape, seed, salt):
    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, salt))


def drop_words(words, rate, seed):
    """Deletes each word with probability `rate`, keeping at least one word."""
    draws = _uniform(tf.shape(words), seed, 0)
    keep = draws >= rate
    keep = tf.logical_or(keep, tf.logical_and(
        tf.logical_not(tf.reduce_any(keep)),
        tf.equal(tf.range(tf.size(words)), tf.argmax(draws, output_type=tf.int32))))
    return tf.boolean_mask(words, keep)


def swap_words(words, rate, seed):
    """Swaps each word with the next one with probability `rate` (swaps do not overlap)."""
    size = tf.size(words)
    start = _uniform([tf.maximum(size - 1, 0)], seed, 1) < rate
    start = tf.logical_and(start, tf.logical_not(tf.pad(start[:-1], [[1, 0]])))
    start = tf.cast(start, tf.int32)
    index = tf.range(size) + tf.pad(start, [[0, 1]]) - tf.pad(start, [[1, 0]])
    return tf.gather(words, index)


def typos(words, rate, seed):
    """Gives each word holding a letter, with probability `rate`, one typo: two
    adjacent characters swapped, one deleted, a keyboard neighbour inserted after one,
    or one replaced by a keyboard neighbour. Never changes the number of words and
    never empties a word (a one-character word only gets insertions/replacements)."""
    count = tf.size(words)
    chars = tf.strings.unicode_split(words, "UTF-8")
    lengths = tf.cast(chars.row_lengths(), tf.int32)
    edited = tf.logical_and(tf.strings.regex_full_match(words, r".*\pL.*"),
                            _uniform([count], seed, 2) < rate)
    kind = tf.random.stateless_uniform([count], tf.random.experimental.stateless_fold_in(seed, 3),
                                       minval=0, maxval=4, dtype=tf.int32)
    swap, delete, insert = 0, 1, 2  # and 3: replace
    kind = tf.where(tf.logical_and(lengths < 2, kind <= delete), kind + insert, kind)
    span = lengths - tf.cast(tf.equal(kind, swap), tf.int32)
    position = tf.cast(tf.floor(_uniform([count], seed, 4) * tf.cast(span, tf.float32)), tf.int32)

    flat = chars.flat_values
    word = tf.cast(chars.value_rowids(), tf.int32)
    place = tf.cast(tf.ragged.range(chars.row_lengths()).flat_values, tf.int32)
    edit_here = tf.gather(edited, word)
    word_kind, word_position = tf.gather(kind, word), tf.gather(position, word)
    target = tf.logical_and(edit_here, tf.equal(place, word_position))
    swapped = tf.logical_and(edit_here, tf.equal(word_kind, swap))
    source = tf.range(tf.size(flat))
    source += tf.cast(tf.logical_and(swapped, tf.equal(place, word_position)), tf.int32)
    source -= tf.cast(tf.logical_and(swapped, tf.equal(place, word_position + 1)), tf.int32)
    flat = tf.gather(flat, source)

    codes = tf.strings.unicode_decode(flat, "UTF-8").flat_values
    ascii_codes = tf.where(codes < 128, codes, 0)
    options = tf.gather(_neighbour_table(), ascii_codes)
    options = tf.where(tf.equal(options, ""), LETTERS, options)
    pick = tf.floor(_uniform(tf.shape(flat), seed, 5)
                    * tf.cast(tf.strings.length(options), tf.float32))
    pick = tf.cast(pick, tf.int32)
    neighbour = tf.strings.substr(options, pick, tf.ones_like(pick))
    upper = tf.logical_and(codes >= ord("A"), codes <= ord("Z"))
    neighbour = tf.where(upper, tf.strings.upper(neighbour), neighbour)

    out = tf.where(tf.logical_and(target, tf.equal(word_kind, delete)), "", flat)
    out = tf.where(tf.logical_and(target, tf.equal(word_kind, insert)),
                   tf.strings.join([flat, neighbour]), out)
    out = tf.where(tf.logical_and(target, tf.equal(word_kind, 3)), neighbour, out)
    return tf.strings.reduce_join(chars.with_flat_values(out), axis=1)


def change_case(words, rate, seed):
    """Writes each word, with probability `rate`, in upper case (lower case if it already is)."""
    chosen = _uniform(tf.shape(words), seed, 6) < rate
    upper = tf.strings.upper(words, encoding="utf-8")
    changed = tf.where(tf.equal(words, upper), tf.strings.lower(words, encoding="utf-8"), upper)
    return tf.where(chosen, changed, words)


def mask_pieces(token_ids, maskable, rate, replacement, seed):
    """Replaces each `maskable` word piece (bool, like `token_ids`) with `replacement`
    (e.g. the [MASK] id) with probability `rate`."""
    chosen = tf.logical_and(maskable, _uniform(tf.shape(token_ids), seed, 7) < rate)
    return tf.where(chosen, tf.cast(replacement, token_ids.dtype), token_ids)
