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
SERVING_VERSION = flags.DEFINE_string(
    "serving_version", None,
    "Oldest TF Serving release the export must load on, e.g. 2.12 (2.12-2.21); its ops "
    "and attributes are audited against that release's TensorFlow and TF Text. Default: "
    "the oldest release that has every op of the graph (written to "
    "assets.extra/tfimitate_serving.json).")

# --- Data -----------------------------------------------------------------
TRAIN_DATA = flags.DEFINE_string(
    "train_data", None,
    "Training file: .csv, .tsv or .jsonl (optionally .gz/.bz2), or CoNLL for "
    "token_classification. `package:NAME/path` reads a file shipped inside an "
    "installed Python package; `tfds:NAME[/CONFIG][:SPLIT]` a prepared TensorFlow "
    "Datasets split (every task; the column flags name its features; see "
    "--tfds_data_dir). Local or gs:// paths.")
EVAL_DATA = flags.DEFINE_string(
    "eval_data", None,
    "Evaluation file, same format as --train_data. If unset, a seeded "
    "--holdout_fraction of the training data is held out instead.")
TEST_DATA = flags.DEFINE_string(
    "test_data", None, "Optional test file, evaluated once after training.")
TEXT_COLUMN = flags.DEFINE_string(
    "text_column", "text",
    "Column holding the text: a header name, or a 0-based index for files "
    "without a header row (tfds: inputs: a feature key; token_classification: its "
    "Sequence(Text) of words).")
TEXT_PAIR_COLUMN = flags.DEFINE_string(
    "text_pair_column", None,
    "Column holding the second text of pair tasks (entailment, paraphrase).")
LABEL_COLUMN = flags.DEFINE_string(
    "label_column", "label",
    "Column holding the label: a name or a 0-based index (tfds: inputs: a feature key, "
    "usually a ClassLabel; token_classification: its Sequence(ClassLabel) of tags).")
LABELS = flags.DEFINE_list(
    "labels", None,
    "The label set, in class-id order. If unset, it is collected (sorted) from "
    "the training data (a tfds: input's ClassLabel names, in order) and saved with the model.")
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
IMAGE_COLUMN = flags.DEFINE_string(
    "image_column", "path",
    "image_classification listings (.csv/.tsv/.jsonl): column holding the image path, "
    "relative to the listing's folder (a name or a 0-based index); tfds: inputs: the "
    "Image feature's key.")
STRICT_IMAGES = flags.DEFINE_bool(
    "strict_images", False,
    "image_classification: stop with an error on files that are not decodable images "
    "instead of skipping them (they are counted and named in the log either way).")

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
BACKBONE_LAYER = flags.DEFINE_string(
    "backbone_layer", None,
    "With a Keras model file as --backbone (.keras/.h5): the layer whose output feeds the "
    "new head (default: the last feature/pooling layer before the model's classifier).")
IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 0,
    "image_classification: side of the square images the model sees (0: the backbone's "
    "own input size). Smaller is much faster on CPU.", lower_bound=0)
IMAGE_NORMALIZATION = flags.DEFINE_enum(
    "image_normalization", "auto", ["auto", "raw", "unit", "symmetric", "imagenet"],
    "image_classification: how 0..255 pixels are scaled for the backbone. auto: the keras-hub "
    "preset's image converter (a Keras model file must contain a Rescaling layer); raw: "
    "0..255; unit: 0..1; symmetric: -1..1; imagenet: ImageNet mean/std.")

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
FREEZE_BACKBONE_STEPS = flags.DEFINE_integer(
    "freeze_backbone_steps", 0,
    "Transfer recipe, phase 1: train only the head for this many steps, the backbone frozen "
    "(its BatchNorm layers in inference mode) at --learning_rate; then phase 2 fine-tunes "
    "at --fine_tune_learning_rate. 0: no frozen phase.", lower_bound=0)
FINE_TUNE_LAYERS = flags.DEFINE_integer(
    "fine_tune_layers", 0,
    "Transfer recipe, phase 2: unfreeze only the top N backbone layers that have weights "
    "(0: all of them).", lower_bound=0)
FINE_TUNE_LEARNING_RATE = flags.DEFINE_float(
    "fine_tune_learning_rate", 0.0,
    "Transfer recipe, phase 2: peak learning rate after the frozen phase (0: --learning_rate "
    "/ 10).", lower_bound=0.0)
IMAGE_AUGMENT = flags.DEFINE_list(
    "image_augment", None,
    "image_classification: training-only, seeded augmentation with Keras preprocessing "
    "layers, as name[:strength] items: flip, rotation:0.1, zoom:0.1, translation:0.1, "
    "crop:0.1, contrast:0.2, brightness:0.2, mixup:0.2, cutmix:1.0.")

# --- Technique: robust fine-tuning (adversarial training, augmentation, robustness report) ---
ADVERSARIAL = flags.DEFINE_string(
    "adversarial", "none",
    "Adversarial training on the token embeddings: fgm (one step of size --adv_epsilon), "
    "pgd (--adv_steps steps of --adv_alpha, projected onto --adv_epsilon), freelb "
    "(--adv_steps steps, their losses averaged), or none. Roughly 2x (fgm) to "
    "(steps+1)x the time per step.")
ADV_EPSILON = flags.DEFINE_float(
    "adv_epsilon", 0.1,
    "Largest L2 norm of one example's embedding perturbation (all its positions); "
    "MiniLM-L6's token embeddings have norms near 1, and 0.3 already slowed SST-2 training.")
ADV_ALPHA = flags.DEFINE_float(
    "adv_alpha", 0.03, "Size of each pgd/freelb ascent step (and freelb's random start).")
ADV_STEPS = flags.DEFINE_integer("adv_steps", 3, "Ascent steps of pgd and freelb.")
AUGMENT = flags.DEFINE_string(
    "augment", "",
    "Text augmentation of the training data, NAME:RATE,...: word_dropout (delete words), "
    "swap (swap neighbouring words), char_noise (a typo in a word), mask / unk (replace "
    "word pieces with [MASK] / [UNK]); RATE is per word or piece. token_classification "
    "takes only char_noise, mask and unk (they keep words and tags aligned). Seeded, "
    "new every pass, training only.")
AUGMENT_PROB = flags.DEFINE_float(
    "augment_prob", 0.5, "Probability that a training example is augmented on a pass.")
PERTURB = flags.DEFINE_string(
    "perturb", "",
    "evaluate: robustness report, NAME[:RATE],...: typos (one character swapped, "
    "deleted, inserted or replaced by a keyboard neighbour in RATE of the words, default "
    "0.1), case (RATE of the words upper-cased, default 1), drop_words (default 0.1; not "
    "for token_classification). Writes eval/robustness.json: clean vs perturbed score "
    "and the examples whose prediction flipped.")
PERTURB_SEED = flags.DEFINE_integer(
    "perturb_seed", 0, "evaluate: seed of --perturb (keep it to compare models on the same texts).")
SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None,
    "evaluate: score this exported SavedModel version directory through its serving "
    "signatures instead of the checkpoint (task, labels and data from --model_dir, or "
    "from the run it was exported from).")

# --- Technique: careful fine-tuning (LoRA, freezing, layer rates, L2-SP, continual) ---
LORA_RANK = flags.DEFINE_integer(
    "lora_rank", 0,
    "If > 0, train low-rank adapters (LoRA) of this rank on the --lora_targets layers of "
    "the backbone, which is otherwise frozen; only the adapters and the head train. The "
    "export merges the adapters into the dense kernels.", lower_bound=0)
LORA_ALPHA = flags.DEFINE_float(
    "lora_alpha", None,
    "LoRA scale numerator: the update is (lora_alpha / lora_rank) * A @ B "
    "(default: lora_rank, a scale of 1).", lower_bound=0.0)
LORA_TARGETS = flags.DEFINE_list(
    "lora_targets", ["query", "value"],
    "Names of the backbone's dense layers that get adapters (e.g. query,key,value,"
    "attention_output,feedforward_intermediate_dense).")
SAVE_ADAPTERS_ONLY = flags.DEFINE_bool(
    "save_adapters_only", False,
    "With --lora_rank: checkpoints hold only the weights that train (adapters and head); "
    "the frozen backbone is reloaded from --backbone when resuming or exporting.")
FREEZE = flags.DEFINE_list(
    "freeze", None,
    "Backbone parts that never train: `embeddings`, `layers:I-J` (0-based, inclusive) or "
    "`layers:I`, `backbone`, or a backbone layer's name (e.g. pooled_dense).")
UNFREEZE_EVERY_STEPS = flags.DEFINE_integer(
    "unfreeze_every_steps", 0,
    "If > 0, gradual unfreezing: training starts with the backbone frozen and every this "
    "many steps the next layer from the top starts to train (embeddings last).",
    lower_bound=0)
LAYER_LR_DECAY = flags.DEFINE_float(
    "layer_lr_decay", 1.0,
    "Layer-wise learning-rate decay: layer i of L trains at rate * decay^(L - i), the "
    "embeddings at decay^(L + 1), the head at the full rate. 1.0: off.",
    lower_bound=0.0, upper_bound=1.0)
L2SP = flags.DEFINE_float(
    "l2sp", 0.0,
    "L2-SP: adds l2sp/2 * squared distance of the backbone's weights to their starting "
    "(pretrained) values to the loss, alongside --weight_decay. 0: off.", lower_bound=0.0)
INIT_FROM = flags.DEFINE_string(
    "init_from", None,
    "Start from the newest checkpoint of another run (its model_dir) of the same task and "
    "backbone instead of the pretrained backbone; the head is kept when the labels match "
    "(or are mapped with --label_map). With --l2sp the anchor is that run's weights.")
LABEL_MAP = flags.DEFINE_list(
    "label_map", None,
    "With --init_from: NEW=OLD pairs naming, for labels of this run, the label of the "
    "--init_from run whose head row they continue (e.g. fresh=1,rotten=0).")
REPLAY_DATA = flags.DEFINE_string(
    "replay_data", None,
    "Old training data (same format, columns and labels as --train_data) mixed into every "
    "batch, against forgetting it.")
REPLAY_FRACTION = flags.DEFINE_float(
    "replay_fraction", 0.2,
    "With --replay_data: share of every batch that is old data (added to --batch_size new "
    "examples).", lower_bound=0.0, upper_bound=0.9)
RETAIN_EVAL_DATA = flags.DEFINE_string(
    "retain_eval_data", None,
    "Old evaluation data (same format as --eval_data), scored before training and at every "
    "evaluation; metrics.json and TensorBoard get retain_score and forgetting (before - now).")

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

# --- Search and cross-validation -------------------------------------------
CV_FOLDS = flags.DEFINE_integer(
    "cv_folds", 0,
    "If >= 2, train: K-fold cross-validation of the training data (seeded by --seed, "
    "stratified by label where a task has one label per example), one run per fold in "
    "<model_dir>/folds/<k>/ and mean ± std of every metric in <model_dir>/eval/cv_metrics.json.",
    lower_bound=0)
CV_FOLD = flags.DEFINE_integer(
    "cv_fold", -1,
    "With --cv_folds: train only this fold (0-based; what each fold's flags.cfg says); "
    "-1 trains them all.", lower_bound=-1)
SEARCH_SPACE = flags.DEFINE_string(
    "search_space", None,
    "tune: file of flags to search, one per line: --learning_rate=log_uniform(1e-5,1e-4), "
    "--dropout=uniform(0,0.3), --epochs=int_range(1,3), --batch_size=choice(16,32).")
TUNER = flags.DEFINE_enum(
    "tuner", "random", ["random", "bayesian", "hyperband"],
    "tune: keras-tuner's search algorithm; hyperband's budget is training steps (--max_steps).")
MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", 10, "tune: how many trials (training runs) to run at most.", lower_bound=1)
TUNE_DIR = flags.DEFINE_string(
    "tune_dir", None,
    "tune: where trials (trials/<id>/), the oracle's state, results.csv and best.cfg are "
    "written; re-running the same command continues the search.")
HYPERBAND_FACTOR = flags.DEFINE_integer(
    "hyperband_factor", 3,
    "tune --tuner=hyperband: keep the best 1/factor of each round; the shortest trials run "
    "--max_steps/factor^2 steps.", lower_bound=2)

# --- Task: multi-task learning ---------------------------------------------
SUBTASKS = flags.DEFINE_list(
    "subtasks", None,
    "--task=multi_task: subtask flagfiles (e.g. configs/subtasks/sentiment.cfg,configs/subtasks/"
    "entities.cfg), each with that subtask's --task, data, columns, labels, --subtask_name and "
    "--loss_weight; backbone, training and runtime flags stay in the main flagfile. The first "
    "subtask is the export's serving_default.")
TASK_SAMPLING = flags.DEFINE_enum(
    "task_sampling", "proportional", ["proportional", "temperature", "round_robin"],
    "--task=multi_task: which subtask each training batch comes from: proportional to the "
    "subtasks' training examples, temperature (size^(1/--task_temperature)) or round_robin.")
TASK_TEMPERATURE = flags.DEFINE_float(
    "task_temperature", 2.0,
    "--task_sampling=temperature: 1 is proportional, larger evens the subtasks out.",
    lower_bound=1.0)
SUBTASK_NAME = flags.DEFINE_string(
    "subtask_name", None,
    "In a subtask flagfile: the subtask's name (its metrics.json section and signature name; "
    "default: the file name without .cfg).")
LOSS_WEIGHT = flags.DEFINE_float(
    "loss_weight", 1.0, "In a subtask flagfile: multiplies the subtask's loss.", lower_bound=0.0)

# --- Technique: cached frozen features (image transfer recipe) -----------
CACHE_FROZEN_FEATURES = flags.DEFINE_bool(
    "cache_frozen_features", False,
    "While --freeze_backbone_steps keeps the backbone frozen, train the head on the "
    "backbone's features computed once per training example (inference mode) instead of "
    "running the backbone at every step. Not with --image_augment/--augment/--adversarial.")

# --- Platform: TensorFlow Datasets ----------------------------------------
TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None,
    "Where prepared TensorFlow Datasets are (local or gs://) for data flags of the form "
    "tfds:NAME[/CONFIG][:SPLIT]; default TFDS's own (~/tensorflow_datasets). Nothing is "
    "downloaded: prepare the dataset there first (tfds build NAME --data_dir=DIR).")

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
