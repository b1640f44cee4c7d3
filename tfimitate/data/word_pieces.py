"""Word-level inputs to word-piece windows: the label alignment of token classification.

Each word is split into word pieces by the backbone's keras-hub tokenizer (a
word that yields none becomes [UNK], so every word keeps a first piece). A
per-word value (a tag id, a word number) is put on the word's first piece and
0 on every other piece and on [CLS]/[SEP], so 0 means "ignore". Sentences with
more than `sequence_length - 2` pieces are cut into consecutive windows of
pieces, each packed as [CLS] pieces [SEP]; windows do not overlap, so every
word's first piece lands in exactly one window and no word is lost. All TF ops:
it runs in tf.data on the host and in the export graph.

Example:
    windows = WordPieceWindows(backbones.load_tokenizer("minilm_l6"), sequence_length=128)
    features = windows(tf.ragged.constant([["EU", "rejects", "it"]]),
                       {"labels": tf.constant([2, 1, 1], tf.int64)})
    # token_ids [[101, 7327, 19164, 2009, 102]], labels [[0, 2, 1, 1, 0]], ...
"""

import tensorflow as tf

BACKBONE_INPUTS = ("token_ids", "segment_ids", "padding_mask")


class WordPieceWindows:
    """Tokenizes ragged words and packs their pieces into windows with first-piece values."""

    def __init__(self, tokenizer, sequence_length):
        self.tokenizer = tokenizer
        self.window = sequence_length - 2
        self.pad_id = tokenizer.pad_token_id
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.unk_id = tokenizer.token_to_id(tokenizer.oov_token)
        # In a graph keras-hub returns the ragged tensor itself (eagerly: Python lists).
        self._tokenize = tf.function(lambda flat_words: tokenizer(flat_words))

    def __call__(self, words, values):
        """Returns dense [windows, longest] features for `words` (tf.RaggedTensor [B, (W)]).

        Args:
            words: the sentences' words, tf.string.
            values: dict name -> tensor [total words, ...] (flat, in word order),
                each word's row put on its word's first piece (0 elsewhere).

        Returns:
            dict with int32 `token_ids` and `segment_ids`, bool `padding_mask` and
            `<name>` for each of `values` (int64, or float32 for float values, with
            the values' trailing dimensions), windows in sentence order.
        """
        words = words.with_row_splits_dtype(tf.int64)
        pieces = tf.cast(self._tokenize(words.flat_values), tf.int32).with_row_splits_dtype(tf.int64)
        empty = tf.expand_dims(pieces.row_lengths() == 0, 1)
        unknown = tf.ragged.boolean_mask(tf.fill([pieces.nrows(), 1], self.unk_id), empty)
        pieces = tf.concat([pieces, tf.cast(unknown, tf.int32).with_row_splits_dtype(tf.int64)],
                           axis=1)

        counts = pieces.row_lengths()
        first = tf.ragged.range(counts).flat_values == 0
        word_of_piece = tf.repeat(tf.range(pieces.nrows()), counts)
        sentence_pieces = tf.math.unsorted_segment_sum(counts, words.value_rowids(), words.nrows())

        windows = tf.maximum(-(-sentence_pieces // self.window), 1)
        window_start = tf.cumsum(windows, exclusive=True)
        piece_sentence = tf.repeat(tf.range(words.nrows()), sentence_pieces)
        piece_position = tf.ragged.range(sentence_pieces).flat_values
        window_of_piece = tf.gather(window_start, piece_sentence) + piece_position // self.window
        total = tf.reduce_sum(windows)
        window_lengths = tf.math.unsorted_segment_sum(
            tf.ones_like(window_of_piece), window_of_piece, total)

        def pack(flat, start, end, pad):
            rows = tf.RaggedTensor.from_row_lengths(flat, window_lengths)
            shape = tf.concat([tf.stack([total, 1]), tf.shape(flat, out_type=tf.int64)[1:]], 0)
            column = lambda value: tf.fill(shape, tf.cast(value, flat.dtype))
            return tf.concat([column(start), rows, column(end)], axis=1).to_tensor(pad)

        token_ids = pack(pieces.flat_values, self.cls_id, self.sep_id, self.pad_id)
        features = {
            "token_ids": token_ids,
            "segment_ids": tf.zeros_like(token_ids),
            "padding_mask": pack(tf.ones_like(first), True, True, False),
        }
        for name, value in values.items():
            value = tf.convert_to_tensor(value)
            value = tf.cast(value, tf.float32 if value.dtype.is_floating else tf.int64)
            on_piece = tf.gather(value, word_of_piece)
            mask = tf.reshape(first, tf.concat([[-1], tf.ones([tf.rank(on_piece) - 1], tf.int32)], 0))
            on_first = tf.where(mask, on_piece, tf.zeros_like(on_piece))
            features[name] = pack(on_first, 0, 0, 0)
        return features
