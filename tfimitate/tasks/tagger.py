"""The tagger of token classification in TF ops: words in, tags and entity spans out.

`Tagger` is what `TokenClassification.predict` runs and what the export graph serves;
`TokenTaggerServer` is the tf.Module TF Serving runs (its signatures are
TokenClassification.SIGNATURES). tasks/token_classification.py imports this module only
where it tags, so reading the task's options loads no TensorFlow.

Example:
    tagger = Tagger(model, preprocessor)    # a token_classification.Preprocessor
    tagger.tag_words(tf.constant([["Peter", "lives", "in", "Paris", "."]]))["tags"]
"""

import tensorflow as tf

from tfimitate.serving.module import ServingModule
from tfimitate.tasks import ner_words
from tfimitate.tasks.entity_spans import entity_spans


class Tagger:
    """Words in, tags and entity spans out, in TF ops: the export graph and `predict`.

    Example:
        outputs = Tagger(model, preprocessor).tag_text(tf.constant(["Peter lives in Paris ."]))
        # outputs["tags"] [[b"B-PER", b"O", b"O", b"B-LOC", b"O"]], outputs["entity_start"] [[0, 15]]
    """

    def __init__(self, model, preprocessor):
        self.model = model
        self.windows = preprocessor.windows
        self.labels = tf.constant(preprocessor.labels)

    def _tag(self, words):
        flat_ids = tf.range(1, tf.size(words.flat_values, out_type=tf.int64) + 1)
        features = self.windows(words, {"word_ids": flat_ids})
        logits = self.model({k: features[k] for k in self.windows.input_names}, training=False)
        probs = tf.nn.softmax(tf.boolean_mask(tf.cast(logits, tf.float32), features["word_ids"] > 0))
        tags = words.with_flat_values(tf.gather(self.labels, tf.argmax(probs, axis=-1)))
        return tags, words.with_flat_values(probs)

    def tag_text(self, text):
        """Splits raw sentences (tf.string [B]) into words; entity offsets are bytes of `text`."""
        words, starts, ends = ner_words.split_words(text)  # as NER corpora split words
        tags, probs = self._tag(words)
        spans = entity_spans(tags)
        start = tf.gather(starts.flat_values, spans.first)
        end = tf.gather(ends.flat_values, spans.last)
        entity_text = tf.strings.substr(tf.gather(text, spans.rows), start, end - start)
        return _outputs(words, tags, probs, spans, entity_text, start, end)

    def tag_words(self, words):
        """Tags pre-split words (tf.string [B, W], "" padded); entity offsets are word indices."""
        words = tf.RaggedTensor.from_tensor(words, padding="").with_row_splits_dtype(tf.int64)
        tags, probs = self._tag(words)
        spans = entity_spans(tags)
        row_start = tf.gather(words.row_splits, spans.rows)
        entity_words = tf.gather(words.flat_values, tf.ragged.range(spans.first, spans.last + 1))
        entity_text = tf.strings.reduce_join(entity_words, axis=-1, separator=" ")
        return _outputs(words, tags, probs, spans, entity_text, spans.first - row_start,
                        spans.last + 1 - row_start)


def _outputs(words, tags, probs, spans, entity_text, start, end):
    per_entity = lambda values, pad: tf.RaggedTensor.from_value_rowids(
        values, spans.rows, nrows=words.nrows()).to_tensor(pad)
    return {
        "words": words.to_tensor(""), "tags": tags.to_tensor(""),
        "scores": tf.reduce_max(probs, axis=-1).to_tensor(0.0),
        "probabilities": probs.to_tensor(0.0),
        "entity_text": per_entity(entity_text, ""), "entity_type": per_entity(spans.types, ""),
        "entity_start": per_entity(tf.cast(start, tf.int64), -1),
        "entity_end": per_entity(tf.cast(end, tf.int64), -1),
    }


class TokenTaggerServer(ServingModule):
    """What TF Serving runs: `serving_default` on raw sentences, `tag_words` on split words."""

    def __init__(self, model, preprocessor, assets):
        super().__init__(model=model)
        self.tokenizer = preprocessor.tokenizer
        for name, asset in assets.items():  # ships labels.txt with the model
            setattr(self, name, asset)
        tagger = Tagger(model, preprocessor)
        self.serve = tf.function(tagger.tag_text, input_signature=[
            tf.TensorSpec([None], tf.string, name="text")])
        self.tag_words = tf.function(tagger.tag_words, input_signature=[
            tf.TensorSpec([None, None], tf.string, name="words")])

    def serving_signatures(self):
        """Signature name -> tf.function, as saved in the SavedModel."""
        return {"serving_default": self.serve, "tag_words": self.tag_words}
