"""The bad-input matrix: mistakes a careless or unlucky user makes, one line per case.

A case is (entry, arguments, files to create, text the `error:` line must contain).
`entry` is either a `python -m` module, run as a child process that must exit 2 with
exactly one `error:` line and no traceback, or a name in IN_PROCESS, a library call
that must raise one UserError line (data formats are checked in-process: a child that
imports TensorFlow costs 5-10 s). Either way nothing may appear in the case's folder
besides the files it created. `{tmp}` in arguments and file contents is that folder.
Add a case by adding a line to CASES.
"""

import collections
import os
import subprocess
import sys

import pytest

from tfimitate import backbones, workflow
from tfimitate.config import Experiment, validate_for_training
from tfimitate.data import readers, splits, tfds_source
from tfimitate.errors import UserError
from tfimitate.search import space
from tfimitate.serving import client, servables
from tfimitate.techniques.distillation import teachers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = "".join(f"row {i},{i % 2}\n" for i in range(20))  # a clean CSV body
TRUNCATED_EXPERIMENT = '{\n  "task": "text_classification",\n  "model_dir": "ru'


class _Items(list):
    """The least a hold-out needs of a task's split: len() and subset()."""

    source = "t.csv"

    def subset(self, indices, source):
        return _Items(self[i] for i in indices)


def _train(*assignments):
    """workflow.train on an Experiment of `field=value` strings, each read by its flag's parser."""
    from absl import flags

    from tfimitate import flags as _defined  # noqa: F401  (defines the flags)

    values = {}
    for assignment in assignments:
        field, text = assignment.split("=", 1)
        value = flags.FLAGS[field].parser.parse(text)
        values[field] = tuple(value) if isinstance(value, list) else value
    return workflow.train(Experiment(**values))


def _search():
    from tfimitate.search import tuner  # imports keras-tuner (TensorFlow): only when needed

    return tuner


IN_PROCESS = {
    "workflow.train": _train,
    "workflow.predict": workflow.predict,
    "workflow.export": workflow.export,
    "read_rows": lambda path, columns: readers.read_rows(path, columns.split(","), "--train_data"),
    "Experiment.load": Experiment.load,
    "validate_for_training": lambda field, value: validate_for_training(
        Experiment(model_dir="run", train_data="t.csv", **{field: float(value)})),
    "hold_out": lambda fraction: splits.hold_out(_Items(range(10)), float(fraction), 0, "t.csv"),
    "client.read_texts": client.read_texts,
    "backbones.max_sequence_length": backbones.max_sequence_length,
    "space.read": space.read,
    "check_trials": lambda train, path: _search().check_trials(
        Experiment(model_dir="run", train_data=train), space.read(path)),
    "open_teacher": lambda spec: teachers.open_teacher(spec, None, None, None),
    "numeric_versions": servables.numeric_versions,
    "tfds_source.label_names": lambda spec, data_dir: tfds_source.label_names(
        spec, "label", "--train_data", data_dir),
}

Case = collections.namedtuple("Case", "entry args files expected")
CASES = [
    # --- flags: absl parse errors, nan/inf, flagfiles, argv bytes (child processes, < 1 s each)
    Case("tfimitate.train", ["--batch_size=0"], {}, "--batch_size=0: 0 is not a positive integer"),
    Case("tfimitate.train", ["--batch_size=abc"], {}, "--batch_size=abc: invalid literal"),
    Case("tfimitate.train", ["--holdout_fraction=0.9"], {}, "--holdout_fraction=0.9: 0.9 is not"),
    Case("tfimitate.train", ["--task=nope"], {}, "--task=nope: value should be one of"),
    Case("tfimitate.train", ["--no_such_flag=1"], {}, "Unknown command line flag 'no_such_flag'"),
    Case("tfimitate.train", ["--batch_size"], {}, "Missing value for flag --batch_size"),
    Case("tfimitate.train", ["--learning_rate=nan"], {}, "--learning_rate=nan: give a finite number"),
    Case("tfimitate.train", ["--weight_decay=inf"], {}, "--weight_decay=inf: give a finite number"),
    Case("tfimitate.train", ["--dropout=-inf"], {}, "--dropout=-inf: -inf is not a number in the range"),
    Case("tfimitate.train", ["--flagfile={tmp}/missing.cfg"], {},
         "--flagfile={tmp}/missing.cfg: No such file or directory"),
    Case("tfimitate.train", ["--flagfile={tmp}/outer.cfg"], {"outer.cfg": "--flagfile={tmp}/in.cfg\n"},
         "--flagfile={tmp}/in.cfg: No such file or directory"),
    Case("tfimitate.train", ["--flagfile={tmp}/q.cfg"], {"q.cfg": '--model_dir="{tmp}/run"\n'},
         'a --flagfile takes values literally, so the quotes would become part of the value; '
         "write --model_dir={tmp}/run."),
    Case("tfimitate.train", ["--flagfile={tmp}/q.cfg"], {"q.cfg": "--labels='a,b'\n"},
         "write --labels=a,b."),
    Case("tfimitate.train", ["--flagfile={tmp}/b.cfg"], {"b.cfg": b"--model_dir=caf\xe9\n"},
         "a --flagfile holds bytes that are not valid UTF-8"),
    Case("tfimitate.train", [b"--model_dir={tmp}/caf\xe9"], {}, "argument 1 (b'--model_dir="),
    Case("tfimitate.evaluate", [], {}, "--model_dir is required"),
    Case("tfimitate.serving.client", ["--model_name=m", b"caf\xe9"], {},
         "command-line argument 2 (b'caf\\xe9') is not valid UTF-8"),
    Case("validate_for_training", ["learning_rate", "nan"], {}, "--learning_rate=nan: give a finite"),
    # --- CSV/TSV read strictly (issue 9, items 4 and 6)
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": 'text,label\n"stray,1\n' + ROWS + '"a, b",0\n'},
         "d.csv:2: a quoted field that starts here is closed badly on line 23"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": 'text,label\n"stray,1\n' + ROWS + 'the 5",0\n' + ROWS},
         "d.csv:2: a quote opened on this line closes only on line 23, so 22 rows were read as one field"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": 'text,label\n' + ROWS + '"stray,1\n' + ROWS},
         "d.csv:22: a quote opened on this line is never closed"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": 'text,label\n"a"b,1\n'},
         "d.csv:2: a quoted field that starts here is closed badly on line 2"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": "text,label\nhello, world,1\n"},
         "d.csv:2: row has 3 columns but the header has 2; quote fields that contain ','"),
    Case("read_rows", ["{tmp}/d.tsv", "0,1"], {"d.tsv": "a\t1\nb\t0\tx\n"},
         "d.tsv:2: row has 3 columns but line 1 has 2; remove stray tabs"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": "text,label,text\na,1,b\n"},
         "d.csv:1: the header names column 'text' 2 times"),
    Case("read_rows", ["{tmp}/d.tsv", "0,1"], {"d.tsv": "sentence\tlabel\ngood\t1\nbad\t0\n"},
         "d.tsv:1: this looks like a header row (sentence, label) but the column flags are 0-based"),
    Case("read_rows", ["{tmp}/d.csv", "0,1"], {"d.csv": "text,category\n" + "".join(
        f"t {i},{('pos', 'neg')[i % 2]}\n" for i in range(12))}, "d.csv:1: this looks like a header row"),
    Case("read_rows", ["{tmp}/d.jsonl", "text,label"], {"d.jsonl": '{"text": "a", "label": 1}\n{"text": ["b"], "label": 0}\n'},
         "d.jsonl:2: 'text' is a list, not a string or number"),
    Case("read_rows", ["{tmp}/d.jsonl", "text,label"], {"d.jsonl": '{"text": "a", "label": {"id": 1}}\n'},
         "d.jsonl:1: 'label' is an object, not a string or number"),
    Case("read_rows", ["{tmp}/d.csv", "text,label"], {"d.csv": "sentence,label\nhi,1\n"},
         "no column 'text' (columns: sentence, label)"),
    Case("read_rows", ["{tmp}/d.tsv", "0,1"], {"d.tsv": b"fine\t1\nbroken \xff\xfe\t0\n"},
         "d.tsv:2: bytes are not valid UTF-8"),
    Case("read_rows", ["{tmp}/d.tsv", "0,1"], {"d.tsv": "fine\t1\nno label here\n"},
         "d.tsv:2: row has 1 columns but column 1 is needed"),
    Case("read_rows", ["{tmp}/d.jsonl", "text,label"], {"d.jsonl": '{"text": "a", "label": 1}\n{"text": \n'},
         "d.jsonl:2: not valid JSON"),
    Case("read_rows", ["{tmp}/d.parquet", "text"], {"d.parquet": "x"}, "is not .csv, .tsv or .jsonl"),
    Case("read_rows", ["{tmp}/data", "text,label"], {"data/train.csv": "text,label\n"},
         "--train_data={tmp}/data is a directory; give a file in it."),
    # --- splits, run state, backbone config (issue 9, items 6, 7 and 9)
    Case("hold_out", ["0"], {}, "--holdout_fraction=0 holds no evaluation data out of --train_data; "
                                "give --eval_data=FILE"),
    Case("Experiment.load", ["{tmp}/run"], {"run/experiment.json": TRUNCATED_EXPERIMENT,
                                             "run/flags.cfg": "--model_dir=run\n"},
         "run/experiment.json is damaged (Unterminated string starting at: line 3 column 16 (char "
         "50)); delete it and re-run training with --flagfile={tmp}/run/flags.cfg "
         "--model_dir={tmp}/run"),
    Case("Experiment.load", ["{tmp}/run"], {"run/experiment.json": "[1, 2]"},
         "run/experiment.json is damaged (not a JSON object); restore it from a backup."),
    Case("backbones.max_sequence_length", ["{tmp}/model"], {"model/config.json": '{"max_position'},
         "--backbone={tmp}/model: cannot read {tmp}/model/config.json"),
    # --- a store that does not answer (issue 30, cause 11): every path through files.py
    Case("Experiment.load", ["nope://bucket/run"], {},
         "nope://bucket/run/experiment.json cannot be reached (File system scheme 'nope' not "
         "implemented"),
    Case("open_teacher", ["nope://bucket/teacher"], {}, "nope://bucket/teacher cannot be reached"),
    Case("tfds_source.label_names", ["tfds:glue/sst2", "nope://bucket/tfds"], {},
         "--tfds_data_dir=nope://bucket/tfds cannot be reached"),
    Case("numeric_versions", ["nope://bucket/models/sst2"], {},
         "nope://bucket/models/sst2 cannot be reached"),
    Case("workflow.export", ["{tmp}/run", ""], {}, "--export_dir is empty; give a folder path."),
    Case("workflow.train", ["model_dir={tmp}/run", "export_dir=/proc/tfimitate/export",
                            "train_data={tmp}/t.csv"], {"t.csv": ""},
         "--export_dir=/proc/tfimitate/export: cannot write there (No such file or directory)"),
    # --- output paths and data a run cannot use, before anything is written (items 3, 7, 8, 10)
    Case("workflow.train", ["model_dir={tmp}/f", "train_data={tmp}/t.csv"], {"f": "x", "t.csv": ""},
         "--model_dir={tmp}/f is a file, not a folder; choose another path."),
    Case("workflow.train", ["model_dir={tmp}/run", "export_dir={tmp}/f/sub", "train_data={tmp}/t.csv"],
         {"f": "x", "t.csv": ""}, "--export_dir={tmp}/f/sub: {tmp}/f is a file, not a folder"),
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", "sequence_length=1000"],
         {"t.csv": ""}, "--sequence_length=1000 is longer than --backbone=minilm_l6 allows (512)"),
    Case("workflow.train", ["model_dir={tmp}/run", "task=token_classification", "train_data={tmp}/o.txt"],
         {"o.txt": "john O\nsaid O\n\nparis O\n"}, "every tag is O, so there is no entity to learn"),
    Case("workflow.predict", ["{tmp}/run", "{tmp}/in.jsonl", "{tmp}/in.jsonl"], {"in.jsonl": '{"text": "a"}\n'},
         "--output={tmp}/in.jsonl is the --input file; writing it would replace the input"),
    Case("workflow.predict", ["{tmp}/run", "{tmp}/in.txt", "{tmp}/f/out.jsonl"], {"in.txt": "a\n", "f": "x"},
         "--output={tmp}/f/out.jsonl: {tmp}/f is a file, not a folder"),
    Case("workflow.predict", ["{tmp}/run", "{tmp}/none.txt", "{tmp}/out.jsonl"], {},
         "--input={tmp}/none.txt: file {tmp}/none.txt does not exist; check the path."),
    Case("workflow.predict", ["{tmp}/run", "{tmp}/in.txt", "{tmp}/out.txt"], {"in.txt": "a\n"},
         "--output={tmp}/out.txt: give a file ending in .jsonl or .csv."),
    # --- technique flags refused before any work (workflow.train; the CLI prints the same line)
    *[Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", *given],
           {"t.csv": "text,label\n"}, expected) for given, expected in [
        (["adversarial=fgsm"], "--adversarial=fgsm is unknown; use fgm, pgd or freelb"),
        (["adversarial=fgm", "adv_epsilon=0.0"], "--adv_epsilon=0.0 must be above 0"),
        (["adversarial=pgd", "adv_alpha=-1.0"], "--adv_alpha=-1.0 must be above 0"),
        (["adversarial=freelb", "adv_steps=0"], "--adv_steps=0 must be at least 1"),
        (["augment=typo:0.1"], "--augment=typo:0.1: 'typo' is unknown"),
        (["augment=mask:2"], "--augment=mask:2: the rate of mask is 2, outside [0, 1]"),
        (["augment=mask:0.1", "augment_prob=1.5"], "--augment_prob=1.5 is outside [0, 1]"),
        (["lora_rank=0", "save_adapters_only=true"], "--save_adapters_only needs --lora_rank"),
        (["lora_rank=4", "lora_targets="], "--lora_targets is empty"),
        (["lora_rank=4", "freeze=embeddings"],
         "--lora_rank and --freeze both set which backbone weights train; use one of them."),
        (["lora_rank=4", "l2sp=0.1"], "--l2sp with --lora_rank"),
        (["label_map=a=1"], "--label_map needs --init_from"),
        (["init_from={tmp}/old", "label_map=a:1"], "--label_map: 'a:1' is not NEW=OLD"),
        (["cache_frozen_features=true", "freeze_backbone_steps=0"], "set --freeze_backbone_steps=N"),
        (["cache_frozen_features=true", "freeze_backbone_steps=5", "image_augment=flip"],
         "--image_augment changes them at every step"),
    ]],
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv",
                            "replay_data={tmp}/old.csv", "replay_fraction=0.0"],
         {"t.csv": "text,label\n", "old.csv": "text,label\n"}, "--replay_fraction=0.0"),
    # the CLI's line (a child that imports TensorFlow: ~10 s each)
    Case("tfimitate.train", ["--model_dir={tmp}/run", "--train_data={tmp}/t.csv", "--adversarial=fgsm"],
         {"t.csv": "text,label\n" + ROWS}, "--adversarial=fgsm is unknown"),
    Case("tfimitate.train", ["--model_dir={tmp}/run", "--train_data={tmp}/t.csv",
                             "--augment=swap:0.1,shuffle:0.2"], {"t.csv": "text,label\n" + ROWS},
         "--augment=swap:0.1,shuffle:0.2: 'shuffle' is unknown; use word_dropout, swap, "
         "char_noise, mask, unk."),
    # --- multi-task subtask names that would export a signature twice
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/a.cfg,{tmp}/b.cfg"],
         {"a.cfg": "--task=token_classification\n--subtask_name=entities\n--train_data={tmp}/a.txt\n",
          "b.cfg": "--task=text_classification\n--subtask_name=entities_tag_words\n--train_data={tmp}/b.csv\n"},
         "{tmp}/b.cfg: the subtask name 'entities_tag_words' would export the signature "
         "'entities_tag_words', which subtask 'entities' ({tmp}/a.cfg) exports too; set another "
         "--subtask_name."),
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/serving_default.cfg"],
         {"serving_default.cfg": "--task=text_classification\n--train_data={tmp}/b.csv\n"},
         "{tmp}/serving_default.cfg: the subtask name 'serving_default' would export the signature "
         "'serving_default', which is the SavedModel's default signature; set another --subtask_name."),
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/b.cfg"],
         {"b.cfg": b"--task=text_classification\n--labels=\xff\n"},
         "{tmp}/b.cfg:2: bytes are not valid UTF-8"),
    # --- side columns given to a task that reads none: refused, never silently dropped
    Case("workflow.train", ["model_dir={tmp}/run", "task=token_classification",
                            "train_data={tmp}/o.txt", "numeric_columns=votes"],
         {"o.txt": "john B-PER\nsaid O\n"}, "--numeric_columns=votes: --task=token_classification "
         "tags each word of a sentence, so it cannot read side columns; drop --numeric_columns/"
         "--categorical_columns, or use text_classification"),
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/a.cfg",
                            "categorical_columns=genre"],
         {"t.csv": "text,genre,label\n", "a.cfg": "--task=text_classification\n--train_data={tmp}/t.csv\n"},
         "--categorical_columns=genre: --task=multi_task joins no side features to its subtasks' "
         "heads, so it cannot read side columns"),
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/a.cfg"],
         {"t.csv": "text,genre,label\n",
          "a.cfg": "--task=text_classification\n--train_data={tmp}/t.csv\n--numeric_columns=votes\n"},
         "{tmp}/a.cfg:3: --numeric_columns: a subtask of --task=multi_task cannot read side columns"),
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", "stream_data=on",
                            "numeric_columns=votes"], {"t.csv": "text,votes,label\na b,3,0\nc d,x9,1\n"},
         "a row of --train_data holds 'x9' in --numeric_columns=votes, not a number; fix the "
         "row, or leave the cell empty (a missing value)."),
    Case("workflow.train", ["model_dir={tmp}/run", "task=image_classification",
                            "train_data={tmp}/imgs", "numeric_columns=age"], {"imgs/a/x.png": "x"},
         "--train_data={tmp}/imgs is a folder of images, which has no side columns (age); give a "
         ".csv/.tsv/.jsonl listing (or TFRecord files) with those columns beside the image path."),
    Case("workflow.train", ["model_dir={tmp}/run", "task=image_regression", "train_data={tmp}/l.csv",
                            "numeric_columns=age"], {"l.csv": "path,age,label\na.png,old,0.5\n", "a.png": "x"},
         "{tmp}/l.csv:2 ({tmp}/a.png): --numeric_columns=age holds 'old', not a number"),
    Case("workflow.train", ["model_dir={tmp}/run", "task=image_classification",
                            "train_data={tmp}/l.csv", "categorical_columns=path"], {"l.csv": ""},
         "--categorical_columns: column 'path' is named twice (also by --image_column)"),
    # --- a resumed run whose data now gives other labels (issue 30, cause 3), every task alike
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv"],
         {"t.csv": "text,label\n" + ROWS,
          "run/experiment.json": '{"train_data": "{tmp}/t.csv", "labels": ["neg", "pos"]}'},
         "--model_dir={tmp}/run holds a run trained on the labels (neg, pos), but its data now "
         "gives (0, 1); resuming would reuse the model's outputs under other labels"),
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv"],
         {"t.csv": "text,label\n" + ROWS,
          "run/experiment.json": '{"train_data": "{tmp}/t.csv", "labels": ["1", "0"]}'},
         "holds a run whose labels are in the order (1, 0), not (0, 1); re-run with --labels=1,0"),
    Case("workflow.train", ["model_dir={tmp}/run", "task=multi_task", "subtasks={tmp}/a.cfg"],
         {"t.csv": "text,label\n" + ROWS,
          "a.cfg": "--task=text_classification\n--train_data={tmp}/t.csv\n",
          "run/experiment.json": '{"task": "multi_task", "subtasks": ["{tmp}/a.cfg"], '
                                 '"labels": ["a:bad", "a:good"]}'},
         "holds a run trained on the labels (a:bad, a:good), but its data now gives (a:0, a:1)"),
    # --- contradictory or meaningless flags (issue 30, cause 6)
    *[Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", *given],
           {"t.csv": "text,label\n"}, expected) for given, expected in [
        (["init_from={tmp}/old", "label_map=a=1,a=0"],
         "--label_map maps 'a' twice (a=1, a=0); give each label of this run one OLD label."),
        (["lora_alpha=8"], "--lora_alpha needs --lora_rank=R (R > 0): without it no adapters"),
        (["lora_targets=query,key"], "--lora_targets needs --lora_rank=R (R > 0)"),
    ]],
    Case("tfimitate.train", ["--model_dir={tmp}/run", "--train_data={tmp}/t.csv",
                             "--subtasks={tmp}/a.cfg"], {"t.csv": "text,label\n", "a.cfg": ""},
         "--subtasks needs --task=multi_task: --task=text_classification reads no subtask files"),
    Case("tfimitate.train", ["--model_dir={tmp}/run", "--task=multi_task"], {},
         "--task=multi_task needs --subtasks=FILE,FILE"),
    # --- search spaces and cross-validation (issue 16, item 8)
    Case("tfimitate.tune", ["--search_space={tmp}/s.cfg", "--tune_dir={tmp}/tune"],
         {"s.cfg": "--learning_rate=log_uniform(1e-5)\n"},
         "{tmp}/s.cfg:1: log_uniform(1e-5) needs two bounds, e.g. log_uniform(1,3)."),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "# lr\n--learning_rate=loguniform(1e-5,1e-4)\n"},
         "{tmp}/s.cfg:2: '--learning_rate=loguniform(1e-5,1e-4)' is not a search range"),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": b"--learning_rate=choice(1e-5,\xff)\n"},
         "--search_space={tmp}/s.cfg:1: bytes are not valid UTF-8"),
    Case("space.read", ["{tmp}/none.cfg"], {},
         "--search_space={tmp}/none.cfg: file {tmp}/none.cfg does not exist; check the path."),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "--learnin_rate=choice(1e-5,1e-4)\n"},
         "{tmp}/s.cfg:1: --learnin_rate is not a flag tfimitate.train can search"),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "--batch_size=choice(8,big)\n"},
         "{tmp}/s.cfg:1: 'big' is not a valid --batch_size"),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "--learning_rate=log_uniform(0,1e-4)\n"},
         "{tmp}/s.cfg:1: log_uniform(0,1e-4) is an empty range; give 0 < low < high."),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "--epochs=uniform(1,3)\n"},
         "{tmp}/s.cfg:1: --epochs does not take uniform values; use int_range(...)."),
    Case("space.read", ["{tmp}/s.cfg"], {"s.cfg": "--dropout=uniform(0,0.95)\n"},
         "{tmp}/s.cfg:1: '0.95' is not a valid --dropout (it must be at most 0.9); fix the value."),
    Case("check_trials", ["{tmp}/t.csv", "{tmp}/s.cfg"],
         {"t.csv": "text,label\n" + ROWS,
          "s.cfg": "--task=choice(text_classification,token_classification)\n"},
         "{tmp}/s.cfg:1: --task=token_classification cannot train ("),
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", "cv_folds=11"],
         {"t.csv": "text,label\n" + ROWS}, "--cv_folds=11 is more than the 8 training example(s) of label '1'"),
    Case("workflow.train", ["model_dir={tmp}/run", "train_data={tmp}/t.csv", "cv_folds=2"],
         {"t.csv": "text,label\n" + ROWS + "a lone one,2\n"},
         "label '2' has only one training example in {tmp}/t.csv, so no two folds can both hold it"),
    # --- client input (issue 9, item 10)
    Case("client.read_texts", ["{tmp}/texts.txt"], {"texts.txt": b"fine\nbad \xff\n"},
         "texts.txt:2: bytes are not valid UTF-8"),
    Case("client.read_texts", ["{tmp}/texts.txt"], {"texts.txt": "\n  \n"}, "--input={tmp}/texts.txt: no text in it"),
    Case("client.read_texts", ["{tmp}/none.txt"], {}, "--input={tmp}/none.txt: file {tmp}/none.txt does not exist"),
    Case("tfimitate.serving.client", ["--model_name=m", "{tmp}/none.jpg"], {},
         "{tmp}/none.jpg: no such image file; check the path."),
]


def _fill(value, tmp):
    if isinstance(value, bytes):
        return value.replace(b"{tmp}", os.fsencode(tmp))
    return value.replace("{tmp}", tmp)


def _listing(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)


def _error_lines(case, tmp):
    """The `error:` lines the case produced (after checking exit code and traceback)."""
    args = [_fill(arg, tmp) for arg in case.args]
    if case.entry in IN_PROCESS:
        with pytest.raises(UserError) as raised:
            IN_PROCESS[case.entry](*args)
        return [f"error: {raised.value}"] + str(raised.value).splitlines()[1:]
    result = subprocess.run([sys.executable, "-m", case.entry, *args], cwd=REPO,
                            capture_output=True, timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.entry}:{case.expected[:40]}")
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path):
    tmp = str(tmp_path)
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = _fill(content, tmp)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _listing(tmp)
    lines = _error_lines(case, tmp)
    assert len(lines) == 1, lines
    assert _fill(case.expected, tmp) in lines[0]
    assert _listing(tmp) == before

