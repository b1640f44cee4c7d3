"""Entity spans from tag sequences with TF ops, as seqeval's `get_entities` finds them.

An entity starts at B-/S- tags and at I-/E- tags that do not continue the
previous word's entity (a B-X or I-X of the same type); it runs over the
following I-/E- tags of its type and ends after an E- tag. IOB2 and IOBES both
decode this way. Core TF ops only, so the export graph can hold it.

Example:
    spans = entity_spans(tf.ragged.constant([["B-PER", "I-PER", "O", "S-LOC"]]))
    # rows [0, 0], first [0, 3], last [1, 3], types [b"PER", b"LOC"]
"""

from typing import NamedTuple

import tensorflow as tf


class Spans(NamedTuple):
    rows: tf.Tensor   # int64 [E]: the sentence of each entity
    first: tf.Tensor  # int64 [E]: flat index of its first word
    last: tf.Tensor   # int64 [E]: flat index of its last word
    types: tf.Tensor  # string [E]


def entity_spans(tags):
    """Finds the entities of `tags` (tf.RaggedTensor [B, (W)] of tf.string), in order."""
    tags = tags.with_row_splits_dtype(tf.int64)
    flat = tags.flat_values
    prefix = tf.strings.substr(flat, 0, 1)
    kind = tf.strings.regex_replace(flat, "^[BIES]-", "")
    row_start = tf.ragged.range(tags.row_lengths()).flat_values == 0
    previous_prefix = tf.concat([["O"], prefix[:-1]], axis=0)
    previous_kind = tf.concat([[""], kind[:-1]], axis=0)
    inside = prefix != "O"
    continues = (inside & ((prefix == "I") | (prefix == "E")) & ~row_start
                 & (previous_kind == kind)
                 & ((previous_prefix == "B") | (previous_prefix == "I")))
    starts = inside & ~continues
    entity = tf.cumsum(tf.cast(starts, tf.int64)) - 1
    positions = tf.range(tf.size(flat, out_type=tf.int64))
    first = tf.boolean_mask(positions, starts)
    last = tf.math.unsorted_segment_max(
        tf.boolean_mask(positions, inside), tf.boolean_mask(entity, inside), tf.size(first))
    return Spans(tf.gather(tags.value_rowids(), first), first, last, tf.gather(kind, first))
