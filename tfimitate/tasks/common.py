"""Pieces several tasks share: label checks, plain-text inputs, heads, training batches,
serving examples.

Example:
    split = keep_known_labels(split, ("neg", "pos"), "--eval_data", drop_unlisted=False,
                              first_unknown=lambda i: (split.lines[i], split.labels[i])
                              if split.labels[i] not in known else None)
"""

from absl import logging

from tfimitate.data import readers
from tfimitate.errors import UserError

# Real examples kept for the export's parity check and warmup requests.
SERVING_EXAMPLES = 32


def keep_known_labels(split, labels, flag, drop_unlisted, first_unknown, what="label",
                      advice="add it to --labels"):
    """Refuses (or with `drop_unlisted`, drops) examples with a label outside `labels`.

    Args:
        split: the task's Split (len(), .source, .subset(indices, source)).
        labels: the model's labels.
        flag: the flag that named the file, for the message.
        drop_unlisted: drop such examples (counted in the log) instead of refusing.
        first_unknown: example index -> (line, label) of its first unknown label, or None.
        what: "label" or "tag", for the message.
        advice: how to fix it besides editing the file.
    """
    unknown = [first_unknown(i) for i in range(len(split))]
    keep = [i for i, found in enumerate(unknown) if found is None]
    if len(keep) == len(split):
        return split
    if not drop_unlisted:
        line, label = next(found for found in unknown if found is not None)
        raise UserError(
            f"{split.source}:{line}: {what} '{label}' is not one of the model's {what}s "
            f"({', '.join(labels)}); fix the row in {flag}, {advice}, or pass --drop_unlisted_labels.")
    logging.warning("%s: dropped %d examples whose %s is not in --labels.",
                    split.source, len(split) - len(keep), what)
    return split.subset(keep, split.source)


def read_text_lines(path, flag, what):
    """Non-empty lines of a .txt input as (line number, text) pairs.

    Example:
        read_text_lines("reviews.txt", "--input", "text")  # [(1, "a gripping film"), ...]
    """
    text = readers.read_text(readers.resolve_path(path, flag), flag)
    numbered = [(i, line) for i, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{flag}={path}: the file holds no text; give one {what} per line.")
    return numbered


def logits_head(features, cfg, num_outputs, name):
    """Dropout and a float32 dense layer of `num_outputs` logits on `features`."""
    import keras

    features = keras.layers.Dropout(cfg.dropout, name=f"{name}_dropout")(features)
    return keras.layers.Dense(num_outputs, dtype="float32", name="logits")(features)


def training_batches(run, examples, encode, pad_values, texts, keep_word_count=False,
                     split_labels=("labels",), untrimmed=()):
    """Endless, reshuffled-per-pass training batches of raw `examples` (static shapes when
    the strategy needs them, e.g. TPU; a few padded lengths under --jit_compile).

    Examples are encoded once and cached, unless the run changes texts
    (`Run.text_transform`, e.g. augmentation): then the `texts` of each example are
    changed before encoding, anew on every pass, with seeds that replay on resume.

    Args:
        run: the tasks.base.Run being trained.
        examples: dict of tensors, one row per example (word lists as tf.RaggedTensor).
        encode: a ragged batch of examples -> dict of features (`pipelines.encoded`).
        pad_values: feature name -> padding value.
        texts: keys of `examples` holding text: strings (split at spaces into words
            and joined again) or word lists (tf.string [W]).
        keep_word_count: the labels follow the words, so transforms must keep them.
        split_labels: the features that form the labels (one: the tensor itself; several:
            a dict).
        untrimmed: as for `pipelines.encoded`.
    """
    import tensorflow as tf

    from tfimitate import runtime
    from tfimitate.data import pipelines

    cfg = run.cfg
    static = runtime.needs_static_shapes(run.strategy)
    transform = run.text_transform(keep_word_count)
    if transform is None:
        features = pipelines.encoded(tf.data.Dataset.from_tensor_slices(examples), encode,
                                     untrimmed=untrimmed)
        return pipelines.batches(features, cfg.batch_size, cfg.sequence_length, pad_values,
                                 shuffle_seed=cfg.seed, repeat=True, static_length=static,
                                 split_labels=split_labels, few_shapes=cfg.jit_compile)

    def change_texts(example, seed):
        example = dict(example)
        for index, key in enumerate(texts):
            text_seed = tf.random.experimental.stateless_fold_in(seed, index)
            if example[key].shape.rank == 0:
                words = transform(tf.strings.split(example[key]), text_seed)
                example[key] = tf.strings.reduce_join(words, separator=" ")
            else:
                example[key] = transform(example[key], text_seed)
        return example

    return pipelines.transformed_batches(examples, change_texts, encode, cfg.batch_size,
                                         cfg.sequence_length, pad_values, cfg.seed,
                                         static_length=static, split_labels=split_labels,
                                         untrimmed=untrimmed, few_shapes=cfg.jit_compile)


class ServedInputs:
    """Serving defaults of a task that gives raw serving inputs as
    `serving_inputs(split, indices)` (classification and regression tasks).

    Example:
        class ClassificationTask(common.ServedInputs, base.Task): ...
    """

    def example_defaults(self, run):
        """Inputs a tf.Example of the example signature (`classify`, `regress`) may leave
        out: name -> the value that stands for it. Default: none (every input is required)."""
        del run
        return {}

    def serving_examples(self, split):
        """The first 32 examples of `split` as serving_default inputs."""
        return self.serving_inputs(split, range(min(SERVING_EXAMPLES, len(split))))

    def served_forward(self, run):
        """What the serving signatures run on the front end's features: the model's float32
        outputs. Default: the model on the whole batch, its dense layers traced as 2-D
        MatMul + BiasAdd that Grappler fuses (serving/dense_2d.py).

        Example:
            outputs = task.served_forward(run)(front(inputs))
        """
        import tensorflow as tf

        from tfimitate.serving import dense_2d

        def forward(features):
            with dense_2d.two_d_dense(run.model):
                return tf.cast(run.model(features, training=False), tf.float32)

        return forward
