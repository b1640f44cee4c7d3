"""tf.data pipelines: tokenize once on the host, cache, shuffle, batch by length, prefetch.

Tokenization runs in tf.data (keras-hub preprocessors are tf.data-friendly), so
no Python generator sits in the hot path. Batches are padded to their longest
example, not to --sequence_length: examples are grouped into length buckets, so
short texts train several times faster. `static_length` instead pads every batch
to one shape, which XLA and TPUs want.

Example:
    features = tokenize(texts, preprocessor, extra={"labels": labels})
    train = batches(features, batch_size=32, shuffle_seed=42, repeat=True)
"""

import tensorflow as tf

TOKENIZE_BATCH = 1024
BUCKET_STEP = 8


def tokenize(inputs, preprocessor, extra=None):
    """Tokenizes `inputs` (texts, or a tuple (texts, pairs)) into a cached tf.data.Dataset.

    Each element is a dict with the preprocessor's features trimmed to the
    example's own length, plus the `extra` per-example tensors (e.g. labels).
    """
    data = {"inputs": inputs}
    if extra:
        data.update(extra)
    pad_id = preprocessor.tokenizer.pad_token_id

    def run_preprocessor(batch):
        # x= keeps a (texts, pairs) tuple one input; positionally keras-hub reads it as (x, y).
        features = preprocessor(x=batch.pop("inputs"))
        features.update(batch)
        return features

    def trim(features):
        length = tf.reduce_sum(tf.cast(features["token_ids"] != pad_id, tf.int32))
        return {k: v[:length] if k in ("token_ids", "segment_ids", "padding_mask") else v
                for k, v in features.items()}

    return (tf.data.Dataset.from_tensor_slices(data)
            .batch(TOKENIZE_BATCH)
            .map(run_preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
            .map(trim, num_parallel_calls=tf.data.AUTOTUNE)
            .cache())


def padding_values(element_spec, pad_id):
    """Padding value per feature: the tokenizer's pad id for token ids, else zero/False."""
    values = {}
    for key, spec in element_spec.items():
        if key == "token_ids":
            values[key] = tf.constant(pad_id, spec.dtype)
        elif spec.dtype == tf.bool:
            values[key] = tf.constant(False)
        else:
            values[key] = tf.constant(0, spec.dtype)
    return values


def batches(features, batch_size, pad_id, sequence_length, shuffle_seed=None,
            repeat=False, static_length=False, split_labels=("labels",)):
    """Batches tokenized `features` into (inputs, labels) pairs, padded per bucket.

    Args:
        features: output of `tokenize`.
        batch_size: examples per batch.
        pad_id: the tokenizer's padding id.
        sequence_length: the longest possible example.
        shuffle_seed: if set, reshuffle each pass with this seed (deterministic).
        repeat: repeat forever (training).
        static_length: pad every batch to `sequence_length` and drop the last
            partial batch (XLA / TPU).
        split_labels: feature keys returned as the second element of each pair.
    """
    ds = features
    if shuffle_seed is not None:
        ds = ds.shuffle(100_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    pads = padding_values(ds.element_spec, pad_id)
    if static_length:
        shapes = {k: [sequence_length] if k in ("token_ids", "segment_ids", "padding_mask")
                  or _is_sequence(spec) else spec.shape
                  for k, spec in ds.element_spec.items()}
        ds = ds.padded_batch(batch_size, padded_shapes=shapes, padding_values=pads,
                             drop_remainder=True)
    else:
        boundaries = list(range(BUCKET_STEP + 1, sequence_length + 1, BUCKET_STEP))
        ds = ds.bucket_by_sequence_length(
            lambda f: tf.shape(f["token_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=pads)
    ds = ds.map(lambda f: _split(f, split_labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _is_sequence(spec):
    return spec.shape.rank == 1 and spec.shape[0] is None


def _split(features, label_keys):
    inputs = {k: v for k, v in features.items() if k not in label_keys}
    labels = {k: features[k] for k in label_keys}
    if len(labels) == 1:
        labels = next(iter(labels.values()))
    return inputs, labels
