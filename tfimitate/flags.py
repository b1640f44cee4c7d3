"""Every command-line flag of tfimitate, defined once, grouped by what it controls.

Override order: flag defaults, then the `--flagfile`, then the command line
(absl reads arguments left to right, so put `--flagfile` first).
Entry points read the flags through `config.experiment_from_flags()`; library
code never touches them, so it imports without parsed flags.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg --epochs=1
"""

from absl import flags

from tfimitate.tasks import TASKS

# --- Experiment -----------------------------------------------------------
TASK = flags.DEFINE_enum(
    "task", "text_classification", sorted(TASKS),
    "What to train: text_classification (one label per text or text pair), "
    "token_classification (one tag per word, NER), or another registered task "
    "(tfimitate/tasks/__init__.py).")
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None,
    "Where checkpoints, logs, experiment.json, flags.cfg and eval/ are written. "
    "Re-running the same command continues from its last checkpoint.")
EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None,
    "If set, a SavedModel is written to <export_dir>/<version>/ after training "
    "(the layout TF Serving polls).")

# --- Data -----------------------------------------------------------------
TRAIN_DATA = flags.DEFINE_string(
    "train_data", None,
    "Training file: .csv, .tsv or .jsonl (optionally .gz/.bz2), or CoNLL for "
    "token_classification. `package:NAME/path` reads a file shipped inside an "
    "installed Python package.")
EVAL_DATA = flags.DEFINE_string(
    "eval_data", None,
    "Evaluation file, same format as --train_data. If unset, a seeded "
    "--holdout_fraction of the training data is held out instead.")
TEST_DATA = flags.DEFINE_string(
    "test_data", None, "Optional test file, evaluated once after training.")
TEXT_COLUMN = flags.DEFINE_string(
    "text_column", "text",
    "Column holding the text: a header name, or a 0-based index for files "
    "without a header row.")
TEXT_PAIR_COLUMN = flags.DEFINE_string(
    "text_pair_column", None,
    "Column holding the second text of pair tasks (entailment, paraphrase).")
LABEL_COLUMN = flags.DEFINE_string(
    "label_column", "label", "Column holding the label: a name or a 0-based index.")
LABELS = flags.DEFINE_list(
    "labels", None,
    "The label set, in class-id order. If unset, it is collected (sorted) from "
    "the training data and saved with the model.")
DROP_UNLISTED_LABELS = flags.DEFINE_bool(
    "drop_unlisted_labels", False,
    "With --labels: drop (and count) rows whose label is not listed, instead "
    "of stopping with an error.")
TAGGING_SCHEME = flags.DEFINE_enum(
    "tagging_scheme", "auto", ["auto", "iob2", "iobes"],
    "token_classification: tag scheme of the data. auto: iobes if any tag starts "
    "with E- or S-, else iob2. I- tags that follow O (IOB1) become B- with a warning.")
HOLDOUT_FRACTION = flags.DEFINE_float(
    "holdout_fraction", 0.1,
    "Fraction of the training data held out for evaluation when --eval_data "
    "is not given.", lower_bound=0.0, upper_bound=0.5)

# --- Model ----------------------------------------------------------------
BACKBONE = flags.DEFINE_string(
    "backbone", "minilm_l6",
    "Pretrained backbone: `minilm_l6` (packaged, offline), a keras-hub preset "
    "name (e.g. bert_base_en_uncased; needs a model hub), an `hf://` handle, "
    "or a local keras-hub / Hugging Face model folder.")
SEQUENCE_LENGTH = flags.DEFINE_integer(
    "sequence_length", 128,
    "Maximum word pieces per example, special tokens included. Batches are "
    "padded only to their longest example.", lower_bound=8)
DROPOUT = flags.DEFINE_float(
    "dropout", 0.1, "Dropout before the classification head.",
    lower_bound=0.0, upper_bound=0.9)

# --- Training -------------------------------------------------------------
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "Global batch size (split across replicas).", lower_bound=1)
EPOCHS = flags.DEFINE_integer(
    "epochs", 3, "Passes over the training data.", lower_bound=1)
MAX_STEPS = flags.DEFINE_integer(
    "max_steps", 0,
    "If > 0, stop after this many optimizer steps (overrides --epochs).",
    lower_bound=0)
LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 5e-5, "Peak learning rate of AdamW.", lower_bound=0.0)
WARMUP_RATIO = flags.DEFINE_float(
    "warmup_ratio", 0.1,
    "Fraction of the steps with a linear warmup; the rest decays linearly to 0.",
    lower_bound=0.0, upper_bound=1.0)
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.01,
    "AdamW decoupled weight decay (not applied to biases and LayerNorm).",
    lower_bound=0.0)
SEED = flags.DEFINE_integer("seed", 42, "Seed for shuffling, holdout and initialisation.")
EVAL_STEPS = flags.DEFINE_integer(
    "eval_steps", 0,
    "Evaluate every this many steps (0: at the end of every epoch).", lower_bound=0)
EARLY_STOPPING_PATIENCE = flags.DEFINE_integer(
    "early_stopping_patience", 0,
    "If > 0, stop after this many evaluations without a better eval score and "
    "restore the best weights.", lower_bound=0)
CHECKPOINT_STEPS = flags.DEFINE_integer(
    "checkpoint_steps", 500,
    "Write a checkpoint every this many steps (and always at the end).", lower_bound=1)
KEEP_CHECKPOINTS = flags.DEFINE_integer(
    "keep_checkpoints", 3, "How many recent checkpoints to keep.", lower_bound=1)

# --- Technique: knowledge distillation -------------------------------------
TEACHER = flags.DEFINE_string(
    "teacher", None,
    "Distil from this teacher (off when unset): a tfimitate run directory (its best or "
    "newest checkpoint), a SavedModel (version directory, or the folder of numbered "
    "versions: the newest) whose signature takes strings and returns class probabilities "
    "or logits, or a TF Serving model grpc://HOST:PORT/MODEL[:SIGNATURE].")
TEACHER_SIGNATURE = flags.DEFINE_string(
    "teacher_signature", None,
    "Signature of a SavedModel/served teacher (default: serving_default; tag_words for "
    "token_classification).")
TEACHER_OUTPUT = flags.DEFINE_string(
    "teacher_output", None,
    "Output of the teacher's signature holding class probabilities or logits (default: "
    "`probabilities`, else `logits`).")
TEACHER_LABEL_MAP = flags.DEFINE_list(
    "teacher_label_map", None,
    "TEACHER:STUDENT label pairs when the teacher's labels differ from the student's "
    "(several teacher labels may map to one student label; unmapped ones are dropped).")
TEACHER_BATCH_SIZE = flags.DEFINE_integer(
    "teacher_batch_size", 64, "Examples per teacher call (one Predict request).",
    lower_bound=1)
TEACHER_TIMEOUT = flags.DEFINE_float(
    "teacher_timeout", 60.0,
    "grpc:// teacher: deadline of each Predict request in seconds (retried 3 times with "
    "backoff).", lower_bound=0.001)
UNLABELED_DATA = flags.DEFINE_string(
    "unlabeled_data", None,
    "Unlabelled text added to the transfer set (learned from the teacher only): .txt one "
    "text per line, or a table read with --unlabeled_column (token_classification: .txt "
    "sentences or CoNLL/JSONL words).")
UNLABELED_COLUMN = flags.DEFINE_string(
    "unlabeled_column", None,
    "Column of --unlabeled_data holding the text (default: --text_column).")
DISTILL_TEMPERATURE = flags.DEFINE_float(
    "distill_temperature", 2.0,
    "Softmax temperature of teacher and student in the KL term (scaled by T^2).",
    lower_bound=0.01)
DISTILL_ALPHA = flags.DEFINE_float(
    "distill_alpha", 0.5,
    "Weight of the cross-entropy on gold labels (where present); the KL to the teacher "
    "gets 1 - alpha.", lower_bound=0.0, upper_bound=1.0)
STUDENT_LAYERS = flags.DEFINE_integer(
    "student_layers", 0,
    "If > 0, the student is the teacher's backbone (--backbone, which must be the "
    "teacher's) cut to this many transformer layers, initialised from the teacher run's "
    "weights.", lower_bound=0)
STUDENT_LAYER_CHOICE = flags.DEFINE_enum(
    "student_layer_choice", "every_other", ["every_other", "bottom"],
    "Which teacher layers a cut student keeps: spread evenly up to the top layer "
    "(every_other: 2nd, 4th, 6th of 6) or the bottom K.")

# --- Runtime --------------------------------------------------------------
STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy. auto: tpu if --tpu is given, mirrored over all GPUs if "
    "there are several, else one device. mirrored without GPUs uses every logical "
    "CPU device. multi_worker reads TF_CONFIG.")
TPU = flags.DEFINE_string(
    "tpu", None, "TPU address (grpc://...), name, or `local`; used by --strategy=tpu.")
PRECISION = flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
    "Keras dtype policy. Heads and loss stay float32; float16 uses loss scaling.")
JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "Compile the training step with XLA.")
STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution", 1,
    "Optimizer steps run inside one tf.function call (fewer host round trips).",
    lower_bound=1)

# --- Evaluate / predict / export -----------------------------------------
INPUT = flags.DEFINE_string(
    "input", None,
    "predict: input file (.txt one text per line, or .csv/.tsv/.jsonl with "
    "--text_column; token_classification: .txt sentences or CoNLL/JSONL words).")
OUTPUT = flags.DEFINE_string(
    "output", None, "predict: output file, .jsonl or .csv.")
EXPORT_VERSION = flags.DEFINE_integer(
    "export_version", None,
    "export: version number to write (default: one more than the newest).",
    lower_bound=1)
