"""tf.data pipelines: tokenize once on the host, cache, shuffle, batch by length, prefetch.

Tokenization runs in tf.data (keras-hub preprocessors are tf.data-friendly), so
no Python generator sits in the hot path. Batches are padded to their longest
example, not to --sequence_length: examples are grouped into length buckets, so
short texts train several times faster. `static_length` instead pads every batch
to one shape, which TPUs want; `few_shapes` (for XLA, which compiles once per
input shape) pads to a few power-of-two lengths, so a run compiles at most
len(bounded_lengths(sequence_length)) step functions, however long it trains. When raw examples change every pass
(augmentation), `transformed_batches` re-encodes them each pass instead of caching.

Example:
    examples = {"text": tf.constant(texts), "labels": tf.constant(labels)}
    features = encoded(tf.data.Dataset.from_tensor_slices(examples), encode)
    train = batches(features, 32, 128, {"token_ids": pad_id}, shuffle_seed=42, repeat=True)
"""

import tensorflow as tf

TOKENIZE_BATCH = 1024
BUCKET_STEP = 8
SHORTEST_BUCKET = 16  # with few_shapes: lengths 16, 32, 64, ... up to sequence_length
SHUFFLE_BUFFER = 100_000
# A stream fills a smaller buffer before its first batch (start-up, memory); its files are
# also reshuffled per pass and read 8 at a time (data/streams.py), which mixes them further.
STREAM_SHUFFLE_BUFFER = 16_384
# The feature whose length sets an example's length bucket (text tasks).
LENGTH_KEY = "padding_mask"


def encoded(dataset, encode, length_key=LENGTH_KEY, cache=True, untrimmed=()):
    """Runs `encode` over `dataset` in (ragged) batches of TOKENIZE_BATCH, then gives one
    element per example with every per-position feature trimmed to its length, cached.

    Args:
        dataset: tf.data of per-example elements (anything `encode` takes, batched;
            variable-length elements such as word lists arrive as tf.RaggedTensor).
        encode: batch -> dict of dense [batch, positions, ...] or [batch, ...] features;
            those with the length feature's number of positions are trimmed.
        length_key: a boolean/0-1 feature whose sum is the example's length, or
            None to keep features as they are (fixed-size inputs such as images).
        cache: keep the encoded examples in memory (False for endless streams).
        untrimmed: features never trimmed (per-example values that are not per position).

    Example:
        features = encoded(tf.data.Dataset.from_tensor_slices(texts),
                           lambda batch: preprocessor(x=batch))
    """
    ds = (dataset.ragged_batch(TOKENIZE_BATCH)
          .map(encode, num_parallel_calls=tf.data.AUTOTUNE)
          .unbatch())
    if length_key is not None:
        positions = ds.element_spec[length_key].shape[0]

        def trim(features):  # per-position features share the length feature's first dim
            length = tf.reduce_sum(tf.cast(features[length_key], tf.int32))
            return {k: v[:length] if v.shape.rank and v.shape[0] == positions
                    and k not in untrimmed else v for k, v in features.items()}

        ds = ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.cache() if cache else ds


def transformed_batches(examples, transform, encode, batch_size, sequence_length, pad_values,
                        seed, static_length=False, split_labels=("labels",),
                        length_key=LENGTH_KEY, untrimmed=(), few_shapes=False):
    """Endless training batches of raw `examples` that `transform` changes on every pass.

    Each pass visits every example once in a new order, passes it through
    `transform(example, seed)` with a stateless seed unique to the example and the
    pass, encodes it (not cached) and groups the pass like `batches` does. Nothing
    depends on timing, so every run sees the same stream, and a resumed run that
    skips its first batches sees what an uninterrupted run would.

    Args:
        examples: dict of tensors (tf.RaggedTensor allowed), one row per example.
        transform: (example dict, int64 [2] seed) -> example dict.
        encode, length_key, untrimmed: as for `encoded`.
        seed: the run's seed (an int).
        Others: as for `batches`.
    """
    first = next(iter(examples.values()))
    count = int(first.nrows() if isinstance(first, tf.RaggedTensor) else first.shape[0])

    def one_pass(epoch):
        pass_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), pass_seed)

        def example(index):
            element = {key: tf.gather(values, index) for key, values in examples.items()}
            return transform(element, tf.random.experimental.stateless_fold_in(pass_seed, index))

        raw = tf.data.Dataset.from_tensor_slices(order).map(example, num_parallel_calls=tf.data.AUTOTUNE)
        features = encoded(raw, encode, length_key, cache=False, untrimmed=untrimmed)
        return _group(features, batch_size, sequence_length, pad_values, static_length,
                      length_key, few_shapes)

    ds = tf.data.Dataset.counter().flat_map(one_pass)
    ds = ds.map(lambda f: _split(f, split_labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def padding_values(element_spec, pad_values=None):
    """Padding value per feature: `pad_values[key]` if given, else zero/False/""."""
    pad_values = pad_values or {}
    zero = lambda dtype: False if dtype == tf.bool else "" if dtype == tf.string else 0
    return {key: tf.constant(pad_values.get(key, zero(spec.dtype)), spec.dtype)
            for key, spec in element_spec.items()}


def batches(features, batch_size, sequence_length=None, pad_values=None, shuffle_seed=None,
            repeat=False, static_length=False, split_labels=("labels",),
            length_key=LENGTH_KEY, few_shapes=False, shuffle_buffer=SHUFFLE_BUFFER):
    """Batches per-example `features` into (inputs, labels) pairs.

    With a `length_key`, examples are grouped into length buckets of BUCKET_STEP
    positions and padded to the longest of their batch; every bucket is flushed at
    the end of each pass, so every example is seen once per pass.

    Args:
        features: dataset of per-example feature dicts (e.g. output of `encoded`).
        batch_size: examples per batch.
        sequence_length: the longest possible example (positions).
        pad_values: feature name -> padding value (e.g. {"token_ids": pad_id}); others pad with 0/False.
        shuffle_seed: if set, reshuffle each pass with this seed (deterministic), in a
            buffer of `shuffle_buffer` examples.
        repeat: repeat forever (training).
        static_length: pad every batch to `sequence_length` and drop the last
            partial batch (TPU).
        few_shapes: pad every batch to the next of `bounded_lengths(sequence_length)`
            with full batches only (XLA): when repeating, buckets fill across passes.
        split_labels: feature keys returned as the second element of each pair.
        length_key: the feature whose length buckets the examples, or None for
            fixed-size examples (plain batches).
    """
    ds = features
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat and (length_key is None or static_length or few_shapes):
        ds = _group(ds.repeat(), batch_size, sequence_length, pad_values, static_length,
                    length_key, few_shapes)
    else:  # length buckets are flushed at the end of each pass, then repeated
        ds = _group(ds, batch_size, sequence_length, pad_values, static_length, length_key,
                    few_shapes)
        ds = ds.repeat() if repeat else ds
    ds = ds.map(lambda f: _split(f, split_labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def bounded_lengths(sequence_length):
    """The padded lengths of `few_shapes` batches: 16, 32, ... (doubling), then sequence_length.

    Example:
        bounded_lengths(128)  # [16, 32, 64, 128]; bounded_lengths(100): [16, 32, 64, 100]
    """
    lengths, length = [], SHORTEST_BUCKET
    while length < sequence_length:
        lengths.append(length)
        length *= 2
    return lengths + [sequence_length]


def _group(ds, batch_size, sequence_length, pad_values, static_length, length_key,
           few_shapes=False):
    """Batches per-example features: plain, padded to `sequence_length`, or by length bucket."""
    pads = padding_values(ds.element_spec, pad_values)
    if length_key is None:
        return ds.batch(batch_size, drop_remainder=static_length)
    if static_length:
        shapes = {k: [sequence_length] + spec.shape[1:] if _is_sequence(spec) else spec.shape
                  for k, spec in ds.element_spec.items()}
        return ds.padded_batch(batch_size, padded_shapes=shapes, padding_values=pads,
                               drop_remainder=True)
    if few_shapes:  # a bucket below each boundary, padded to boundary - 1
        boundaries = [length + 1 for length in bounded_lengths(sequence_length)]
        return ds.bucket_by_sequence_length(
            lambda f: tf.shape(f[length_key])[0], bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1), padding_values=pads,
            pad_to_bucket_boundary=True, drop_remainder=True)
    boundaries = list(range(BUCKET_STEP + 1, sequence_length + 1, BUCKET_STEP))
    return ds.bucket_by_sequence_length(
        lambda f: tf.shape(f[length_key])[0],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padding_values=pads)


def _is_sequence(spec):
    return spec.shape.rank >= 1 and spec.shape[0] is None


def _split(features, label_keys):
    inputs = {k: v for k, v in features.items() if k not in label_keys}
    labels = {k: features[k] for k in label_keys}
    if len(labels) == 1:
        labels = next(iter(labels.values()))
    return inputs, labels
