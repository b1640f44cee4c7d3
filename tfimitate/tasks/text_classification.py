"""Text classification: one label per text (or text pair), from CSV/TSV/JSONL to TF Serving.

Data: `--text_column` (and `--text_pair_column`) and `--label_column` of the
files. Model: a keras-hub backbone, its pooled output (or first token), dropout
and a float32 dense layer of logits. Metrics (tasks/classification.py): accuracy, macro
F1, per-class precision/recall/F1 and the confusion matrix. Serving: `serving_default`
takes raw strings (`text`, and `text_pair` for pairs) and returns `label`, `class_id`
and `probabilities`.

Example:
    task = TextClassification()
    data = task.load_data(cfg)
    evaluation = task.evaluate(Run(cfg, model, task.make_preprocessor(cfg), strategy), data.eval)
"""

import dataclasses
import re
from typing import Dict, List, Optional

from absl import logging

from tfimitate import backbones, options
from tfimitate.data import prepared, readers, splits, streams
from tfimitate.errors import UserError
from tfimitate.tasks import common, side_features, text_inputs, text_stream
from tfimitate.tasks.classification import ClassificationTask


@dataclasses.dataclass(eq=False)
class Split(text_inputs.TextSplit):
    """Examples of one data file (text_inputs.TextSplit).

    A label of None is the "no label" marker (unlabelled training text, see `add_unlabeled`).
    `side`: side column -> values (tasks/side_features.py).
    """

    labels: List[Optional[str]]
    lines: List[int]
    side: Dict[str, list] = dataclasses.field(default_factory=dict)

    def hold_out_keys(self):
        """Each example's key for the hashed hold-out (data/splits.py `held_out`)."""
        import tensorflow as tf

        return splits.example_key(tf.constant(self.texts),
                                  None if self.pairs is None else tf.constant(self.pairs))


def read_split(path, cfg, flag, with_labels=True, column_flag="--text_column"):
    """Reads one file into a Split (text_inputs.read_table); an empty label is refused."""
    def label(cell, where):
        text = "" if cell is None else str(cell)
        if not text.strip():
            raise UserError(f"{where}: the label (--label_column={cfg.label_column}) "
                            "is empty; fill it in or remove the row.")
        return text.strip()

    texts, pairs, labels, lines, side = text_inputs.read_table(
        path, cfg, flag, label if with_labels else None, column_flag)
    return Split(path, texts, pairs, labels or [""] * len(texts), lines, side)


class TextClassification(text_inputs.TextInputs, ClassificationTask):
    """Text classification: the texts' side of the classification story (see the module)."""

    NAME = "text_classification"
    OPTIONS = (
        options.string(
            "text_pair_column", None,
            "Column holding the second text of pair tasks (entailment, paraphrase)."),
    ) + side_features.OPTIONS
    RESUME_FIELDS = ("text_column", "text_pair_column", "label_column", "numeric_columns",
                     "categorical_columns")
    # The packaged MiniLM-L6 (6 layers, 384 wide) in 150 steps of 32, test accuracy:
    # SST-2 78.4 / 86.0 / 87.4 and Rotten Tomatoes 71.1 / 79.3 / 82.5 at 1.5e-5 / 5e-5 /
    # 1.5e-4 (benchmarks/results/defaults.md); a chosen --backbone keeps BERT's 5e-5.
    # With --freeze=backbone only the head trains, on MiniLM-L6's pooled output (small
    # values: sentence-transformers never trained its pooler), and needs far larger steps:
    # SST-2 dev after 150 steps 51.0 / 52.9 / 61.9 / 62.7 / 66.9 / 69.7 / 68.9 at 1.5e-4 /
    # 1e-3 / 3e-3 / 1e-2 / 3e-2 / 1e-1 / 3e-1.
    RECIPE = (
        options.Recipe("learning_rate", 1.5e-4,
                       "the packaged MiniLM-L6 is small and fine-tunes best at 3x BERT's rate",
                       unless=("backbone",)),
    ) + side_features.HEAD_FIRST_RECIPE + (
        options.Recipe("learning_rate", 1e-1,
                       "with --freeze=backbone only the head trains, on the packaged "
                       "MiniLM-L6's small pooled values, and needs large steps",
                       unless=("backbone",), when=lambda cfg: "backbone" in (cfg.freeze or ())),
    )

    def read(self, path, cfg, flag, with_labels=True):
        """A labelled table (a StreamSplit when data/streams.py `streamed` says so), or texts
        to predict: a .txt file (one per line) or a table read with --text_column."""
        if with_labels or readers.base_suffix(path) != ".txt":
            if streams.streamed(path, cfg.stream_data, flag):
                return text_stream.open_split(path, cfg, flag, with_labels)
            return read_split(path, cfg, flag, with_labels)
        side_features.refuse_plain_text(cfg, path, flag)
        numbered = common.read_text_lines(path, flag, "text")
        return Split(path, [line for _, line in numbered], None, [""] * len(numbered),
                     [i for i, _ in numbered])

    def training_split(self, split):
        """The training texts without repeats (each text, or pair, counts once)."""
        return _drop_duplicates(split)

    def load_data(self, cfg):
        """Classification data (ClassificationTask.load_data), with a warning for eval or
        test texts that are also training texts; or streamed splits (tasks/text_stream.py)."""
        if prepared.is_prepared(cfg.train_data) or streams.streamed(
                cfg.train_data, cfg.stream_data, "--train_data"):
            return self._large_data(cfg)
        data = super().load_data(cfg)
        _warn_shared_texts(data.train, (data.eval, data.test))
        return side_features.with_learned(cfg, data)

    def _large_data(self, cfg):
        """Streamed files or prepared shards (tasks/text_stream.py): train and held-out
        eval splits, then --eval_data and --test_data; side columns' preprocessing learned
        in the counting pass."""
        if cfg.cv_folds:
            raise UserError(f"--cv_folds needs the training data in memory, but --train_data="
                            f"{cfg.train_data} is streamed; give one file under 64 MiB, or "
                            "train without --cv_folds.")
        learned = {}
        if prepared.is_prepared(cfg.train_data):
            train, held, learned = self._prepared_splits(cfg)
        else:
            train, held, learned = self._streamed_splits(cfg)
        cfg = cfg.replace(labels=train.labels, **learned)
        evaluation = self.read_file(cfg.eval_data, cfg, "--eval_data") if cfg.eval_data else held
        test = self.read_file(cfg.test_data, cfg, "--test_data") if cfg.test_data else None
        return splits.Data(train, evaluation, test, train.labels, learned)

    def _streamed_splits(self, cfg):
        """(train, held out or None, learned side-feature preprocessing) of streamed
        --train_data: labels from --labels or one counting pass (none when --labels and
        --max_steps are given, and no side columns' preprocessing is to be learned)."""
        stream = text_stream.open_split(cfg.train_data, cfg, "--train_data")
        fraction = 0.0 if cfg.eval_data else cfg.holdout_fraction
        counts = None
        side = stream.side and not cfg.side_feature_stats
        if cfg.labels and cfg.max_steps and not side:
            logging.info("--train_data: not counted (--labels and --max_steps given).")
        else:
            counts = text_stream.tally(stream, fraction, cfg.seed)
            splits.warn_rare_labels([label for label, n in counts["train"].items() if n == 1],
                                    stream.source)
        labels = tuple(cfg.labels or sorted(counts["train"]))
        self.check_label_set(labels, cfg)
        train, held = (stream, None) if cfg.eval_data else \
            text_stream.hold_out(stream, fraction, cfg.seed)
        label = lambda part, role: text_stream.with_labels(
            part, labels, counts[role] if counts else None, cfg.drop_unlisted_labels)
        train, held = label(train, "train"), None if held is None else label(held, "held")
        if counts:
            logging.info("--train_data: %d examples (%s).", len(train),
                         ", ".join(f"{k}: {v}" for k, v in train.label_counts.items()))
        learned = {"side_feature_stats": counts["side"].learned(stream.source)} if side else {}
        return train, held, learned

    def _prepared_splits(self, cfg):
        """(train, eval or hold-out shards, side columns' preprocessing learned at prepare
        time) of a tfimitate.prepare directory, checked against this run's tokenizer."""
        manifest = self._manifest(cfg.train_data, cfg, "--train_data")
        labels = tuple(cfg.labels or manifest.labels)
        side = any(side_features.columns(cfg)) and not cfg.side_feature_stats
        learned = {"side_feature_stats": manifest.side_feature_stats} if side else {}
        train = text_stream.open_prepared(manifest, "train", "--train_data", labels, cfg)
        logging.info("--train_data=%s: prepared shards, %d examples (%s).", cfg.train_data,
                     len(train), ", ".join(f"{k}: {v}" for k, v in train.label_counts.items()))
        role = "eval" if "eval" in manifest.files else "holdout"
        held = text_stream.open_prepared(manifest, role, "--train_data", labels, cfg)
        return train, held, learned

    def _manifest(self, path, cfg, flag):
        manifest = prepared.load(path, flag)
        fingerprint = backbones.tokenizer_fingerprint(self.make_preprocessor(cfg))
        prepared.check_tokenizer(manifest, fingerprint, flag, cfg)
        return manifest

    def read_file(self, path, cfg, flag, with_labels=True):
        """ClassificationTask.read_file; a streamed file is checked against the model's labels
        as it streams; a prepared directory gives its eval (else test, else train) shards."""
        if with_labels and prepared.is_prepared(path):
            manifest = self._manifest(path, cfg, flag)
            role = next(r for r in ("eval", "test", "holdout", "train") if r in manifest.files)
            return text_stream.open_prepared(manifest, role, flag, cfg.labels, cfg)
        split = self.read(path, cfg, flag, with_labels)
        if isinstance(split, text_stream.StreamSplit):
            return text_stream.with_labels(split, cfg.labels, None, cfg.drop_unlisted_labels)
        return super().read_file(path, cfg, flag, with_labels)

    def reading(self, parts):
        """Turns a TensorFlow error of a streamed split into one UserError naming its file."""
        streamed = [s for s in parts if isinstance(s, text_stream.StreamSplit)]
        return text_stream.reading(streamed)

    def add_unlabeled(self, split, path, cfg, flag, column=None, exclude=()):
        """`split` plus the texts of `path` without a label: a .txt file (one text per line)
        or the `column` (default --text_column) of a table. Texts already in `split` or an
        `exclude` split, and repeats, are dropped and counted; texts count as equal when their
        lower-cased letters and digits are (SST-2's "it 's" is Rotten Tomatoes' "It's")."""
        if readers.base_suffix(path) == ".txt":
            side_features.refuse_plain_text(cfg, path, flag)
            if cfg.text_pair_column:
                raise UserError(f"{flag}={path}: a text-pair task needs a table with the "
                                f"--text_pair_column={cfg.text_pair_column} column, not a .txt file.")
            numbered = common.read_text_lines(path, flag, "text")
            extra = Split(path, [line for _, line in numbered], None, [None] * len(numbered),
                          [i for i, _ in numbered])
        else:
            extra = read_split(path, cfg.replace(text_column=column or cfg.text_column), flag,
                               with_labels=False, column_flag="--unlabeled_column")
            extra.labels = [None] * len(extra)
        seen = {_text_key(s, i) for s in (split, *exclude) for i in range(len(s))}
        keep = []
        for i in range(len(extra)):
            if _text_key(extra, i) not in seen:
                seen.add(_text_key(extra, i))
                keep.append(i)
        if len(keep) < len(extra):
            logging.warning("%s: dropped %d unlabelled texts that repeat a text of the training, "
                            "eval or test data (or of the file itself).", path, len(extra) - len(keep))
        if not keep:
            raise UserError(f"{flag}={path}: every text is already in the training, eval or test "
                            "data; give other unlabelled text.")
        pick = lambda values, extra_values: None if values is None else values + [extra_values[i] for i in keep]
        return Split(f"{split.source} + {path} (unlabelled)", pick(split.texts, extra.texts),
                     pick(split.pairs, extra.pairs), pick(split.labels, extra.labels),
                     pick(split.lines, extra.lines),
                     {name: pick(v, extra.side[name]) for name, v in split.side.items()})

    def build_head(self, cfg, backbone, num_outputs):
        """Backbone + dropout + float32 logits on the pooled output (or the first token)."""
        import keras

        inputs, pooled = text_inputs.pooled(backbone)
        inputs, pooled = side_features.join(inputs, pooled, side_features.stats_of(cfg))
        logits = common.logits_head(pooled, cfg, num_outputs, "classifier")
        return keras.Model(inputs, logits, name="text_classifier")

    def train_dataset(self, run, split, extras=None):
        """Endless, reshuffled-per-pass batches of (features, label ids), or of (features,
        {"labels": label ids, **extras}) with per-example `extras`; the run's text
        transform (augmentation) may change texts and pairs every pass."""
        if isinstance(split, text_stream.StreamSplit):
            if extras or run.text_transform(False) is not None:
                raise UserError(f"--train_data={split.source} is streamed, and the chosen "
                                "technique needs the training texts in memory (per-example "
                                "values or changed texts); give one file under 64 MiB or "
                                "train without it.")
            return text_stream.training_batches(split, run, _encoder(run),
                                                text_inputs.pads(run.preprocessor))
        return text_inputs.training_batches(run, split, self.label_ids(split, run.labels),
                                            extras)

    def evaluate(self, run, split):
        """ClassificationTask.evaluate; a streamed split is scored batch by batch, without a
        record per example."""
        if not isinstance(split, text_stream.StreamSplit):
            return super().evaluate(run, split)
        from tfimitate.tasks import classification

        true, predicted = text_stream.predicted_ids(split, run, _encoder(run),
                                                    text_inputs.pads(run.preprocessor))
        return classification.classification_evaluation(true, predicted, run.labels,
                                                        split.source)

    def predict(self, run, split):
        """ClassificationTask.predict; a streamed split's records are made batch by batch
        (a generator), in file order."""
        if isinstance(split, text_stream.StreamSplit):
            return text_stream.predictions(split, run, _encoder(run),
                                           text_inputs.pads(run.preprocessor))
        return super().predict(run, split)

    def serving_examples(self, split):
        """The first 32 examples of `split` as serving_default inputs."""
        if isinstance(split, text_stream.StreamSplit):
            return text_stream.first_rows(split, common.SERVING_EXAMPLES)
        return super().serving_examples(split)

    def serving_signature(self, run):
        """Raw strings `text` (and `text_pair` with --text_pair_column), tokenized in the
        graph (TF Text ops) and cut to the batch's longest text (serving/lengths.py)."""
        import tensorflow as tf

        from tfimitate.serving import lengths

        preprocessor = run.preprocessor
        specs = {"text": tf.TensorSpec([None], tf.string, name="text")}
        if run.cfg.text_pair_column:
            specs["text_pair"] = tf.TensorSpec([None], tf.string, name="text_pair")

        def front(inputs):
            # x= keeps a (texts, pairs) tuple one input; positionally keras-hub reads it as (x, y).
            features = preprocessor(x=inputs["text"] if "text_pair" not in inputs
                                    else (inputs["text"], inputs["text_pair"]))
            pad_id = preprocessor.tokenizer.pad_token_id
            longest = tf.reduce_max(tf.reduce_sum(
                tf.cast(features["token_ids"] != pad_id, tf.int32), axis=1))
            longest = lengths.served_length(longest, preprocessor.sequence_length)
            return {k: v[:, :longest] for k, v in features.items()}

        return side_features.serving(specs, front, side_features.stats_of(run.cfg))


def _encoder(run):
    """The run's text encoder (text_inputs.encoder) with its side features."""
    return text_inputs.encoder(run.preprocessor, run.cfg.side_feature_stats)


def _drop_duplicates(split):
    seen, keep, conflicts = {}, [], 0
    for i, key in enumerate(zip(split.texts, split.pairs or split.texts)):
        if key in seen:
            conflicts += split.labels[seen[key]] != split.labels[i]
            continue
        seen[key] = i
        keep.append(i)
    dropped = len(split) - len(keep)
    if dropped:
        logging.warning("%s: dropped %d duplicate texts (%d of them with a different label "
                        "than their first copy).", split.source, dropped, conflicts)
    return split.subset(keep, split.source)


def letters(text):
    """The text as compared across splits: its lower-cased letters and digits
    (SST-2's "it 's" equals Rotten Tomatoes' "It's")."""
    return re.sub(r"[\W_]+", "", text.lower())


def _text_key(split, i):
    """Example i of `split` as compared across splits: its text(s)' lower-cased letters and digits."""
    return letters(split.texts[i]), letters(split.pairs[i]) if split.pairs is not None else None


def _warn_shared_texts(train, scored):
    """Warns when texts of an eval or test split are also training texts (compared on
    lower-cased letters and digits): their scores then overstate accuracy on new text.
    SST-2's test sentences, for one, are snippets of Rotten Tomatoes reviews."""
    trained = {_text_key(train, i) for i in range(len(train))}
    for split in scored:
        shared = sum(_text_key(split, i) in trained for i in range(len(split))) if split else 0
        if shared:
            logging.warning("%s: %d of its %d texts are also in the training data (%s); its "
                            "scores overstate accuracy on unseen text.", split.source, shared,
                            len(split), train.source)
