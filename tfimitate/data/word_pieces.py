"""Word-level inputs to word-piece windows: the label alignment of token classification.

Each word is tokenized on its own, the way the backbone's keras-hub tokenizer
splits the sentence the words make when joined by spaces:
  * WordPiece (BERT, DistilBERT, ELECTRA): the word as it is (the tokenizer splits
    at whitespace anyway);
  * SentencePiece (XLM-R, ALBERT, DeBERTa-v3, F-Net): the word as it is; the
    tokenizer puts its word-start marker ▁ in front of it;
  * byte-level BPE (RoBERTa, BART, GPT-2): a space before every word but the
    sentence's first, which becomes the word-start marker Ġ (unless the tokenizer
    adds a prefix space to every input itself).
A word that yields no piece becomes the unknown token, so every word keeps a first
piece. A per-word value (a tag id, a word number) is put on the word's first piece
and 0 on every other piece and on the start/end tokens, so 0 means "ignore".
Sentences with more than `sequence_length - 2` pieces are cut into consecutive
windows, each packed as start pieces end with the tokenizer's own special tokens
([CLS]/[SEP]/[PAD] for BERT, <s>/</s>/<pad> for XLM-R and RoBERTa); windows do not
overlap, so every word's first piece lands in exactly one window. All TF ops: it
runs in tf.data on the host and in the export graph.

Example:
    windows = WordPieceWindows(keras_hub.models.BertTokenizer.from_preset("bert_tiny_en_uncased"),
                               sequence_length=128)
    features = windows(tf.ragged.constant([["EU", "rejects", "it"]]),
                       {"labels": tf.constant([2, 1, 1], tf.int64)})
    # token_ids [[101, 7327, 19164, 2009, 102]], labels [[0, 2, 1, 1, 0]], ...
"""

import tensorflow as tf

from tfimitate.errors import UserError

BACKBONE_INPUTS = ("token_ids", "segment_ids", "padding_mask")
UNKNOWN_TOKENS = ("<unk>", "[UNK]")


def tokenizer_family(tokenizer):
    """'wordpiece', 'sentencepiece' or 'bpe': how `tokenizer` marks the start of a word."""
    from keras_hub import tokenizers

    families = {"wordpiece": tokenizers.WordPieceTokenizer,
                "sentencepiece": tokenizers.SentencePieceTokenizer,
                "bpe": tokenizers.BytePairTokenizer}
    for family, base in families.items():
        if isinstance(tokenizer, base):
            return family
    raise UserError(
        f"--backbone: its tokenizer ({type(tokenizer).__name__}) is not WordPiece, "
        "SentencePiece or byte-level BPE, so words cannot be aligned to its pieces; choose "
        "an encoder backbone such as BERT, XLM-R or RoBERTa.")


def special_ids(tokenizer):
    """(start, end, pad, unknown) token ids of a keras-hub tokenizer.

    Example:
        special_ids(keras_hub.models.BertTokenizer.from_preset("bert_tiny_en_uncased"))
        # (101, 102, 0, 100)
    """
    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in ("start", "end", "pad")]
    vocabulary = set(tokenizer.get_vocabulary())
    names = [getattr(tokenizer, "unk_token", None), getattr(tokenizer, "oov_token", None)]
    unknown = next((n for n in names + list(UNKNOWN_TOKENS) if n in vocabulary), None)
    ids.append(None if unknown is None else tokenizer.token_to_id(unknown))
    if None in ids:
        missing = [n for n, i in zip(("start", "end", "pad", "unknown"), ids) if i is None]
        raise UserError(
            f"--backbone: its tokenizer ({type(tokenizer).__name__}) has no "
            f"{'/'.join(missing)} token, which aligning words to its pieces needs; choose an "
            "encoder backbone such as BERT, XLM-R or RoBERTa.")
    return tuple(int(i) for i in ids)


class WordPieceWindows:
    """Tokenizes ragged words and packs their pieces into windows with first-piece values.

    `input_names` are the backbone inputs to return (RoBERTa takes no `segment_ids`).
    """

    def __init__(self, tokenizer, sequence_length, input_names=BACKBONE_INPUTS):
        self.tokenizer = tokenizer
        self.window = sequence_length - 2
        self.input_names = tuple(input_names)
        family = tokenizer_family(tokenizer)
        self.start_id, self.end_id, self.pad_id, self.unk_id = special_ids(tokenizer)
        # Byte-level BPE marks a word start by the space in front of it.
        self.space_before_words = family == "bpe" and not tokenizer.add_prefix_space
        # In a graph keras-hub returns the ragged tensor itself (eagerly: Python lists); one
        # signature, so it is traced once (tracing keras-hub's BPE takes seconds).
        self._tokenize = tf.function(lambda flat_words: tokenizer(flat_words),
                                     input_signature=[tf.TensorSpec([None], tf.string)])

    def word_pieces(self, words):
        """Piece ids of every word (tf.RaggedTensor [total words, (pieces)], int32).

        Args:
            words: tf.RaggedTensor [B, (W)] of tf.string, one row per sentence.
        """
        words = words.with_row_splits_dtype(tf.int64)
        flat = words.flat_values
        if self.space_before_words:
            initial = tf.ragged.range(words.row_lengths()).flat_values == 0
            flat = tf.strings.join([tf.where(initial, "", " "), flat])
        pieces = tf.cast(self._tokenize(flat), tf.int32).with_row_splits_dtype(tf.int64)
        empty = tf.expand_dims(pieces.row_lengths() == 0, 1)
        unknown = tf.ragged.boolean_mask(tf.fill([pieces.nrows(), 1], self.unk_id), empty)
        return tf.concat([pieces, tf.cast(unknown, tf.int32).with_row_splits_dtype(tf.int64)],
                         axis=1)

    def __call__(self, words, values):
        """Returns dense [windows, longest] features for `words` (tf.RaggedTensor [B, (W)]).

        Args:
            words: the sentences' words, tf.string.
            values: dict name -> tensor [total words, ...] (flat, in word order),
                each word's row put on its word's first piece (0 elsewhere).

        Returns:
            dict with int32 `token_ids` (and `segment_ids` if in `input_names`), bool
            `padding_mask` and `<name>` for each of `values` (int64, or float32 for float
            values, with the values' trailing dimensions), windows in sentence order.
        """
        words = words.with_row_splits_dtype(tf.int64)
        pieces = self.word_pieces(words)
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

        token_ids = pack(pieces.flat_values, self.start_id, self.end_id, self.pad_id)
        features = {
            "token_ids": token_ids,
            "segment_ids": tf.zeros_like(token_ids),
            "padding_mask": pack(tf.ones_like(first), True, True, False),
        }
        features = {k: v for k, v in features.items() if k in self.input_names}
        for name, value in values.items():
            value = tf.convert_to_tensor(value)
            value = tf.cast(value, tf.float32 if value.dtype.is_floating else tf.int64)
            on_piece = tf.gather(value, word_of_piece)
            mask = tf.reshape(first, tf.concat([[-1], tf.ones([tf.rank(on_piece) - 1], tf.int32)], 0))
            on_first = tf.where(mask, on_piece, tf.zeros_like(on_piece))
            features[name] = pack(on_first, 0, 0, 0)
        return features
