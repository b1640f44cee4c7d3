"""Search (tfimitate.tune), cross-validation (--cv_folds) and training curves (issue 16).

The search runs in child processes on a tiny random BERT: killed (SIGKILL) in the middle
of its second trial and run again, it keeps the first trial, resumes the second from its
checkpoint and writes the results. keras-tuner's distributed mode (a chief and 2
workers) and a Hyperband search are slow tests.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import experiment, sentiment_rows, tiny_bert_preset, write_table
from processes import child_env, free_port, write_flagfile
from tfimitate import crossval, reports
from tfimitate.data import splits
from tfimitate.search import results, space
from tfimitate.tasks import text_classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _space(tmp_path, text):
    path = tmp_path / "space.cfg"
    path.write_text(text)
    return str(path)


def test_search_space_lines_become_typed_dimensions(tmp_path):
    dimensions = space.read(_space(tmp_path, (
        "# comment\n--learning_rate=log_uniform(1e-5,1e-4)\n\n--epochs=int_range(1,3)\n"
        "--batch_size=choice(16,32)  # batch\n--lora_targets=choice(query|query,value)\n")))
    assert [(d.flag, d.kind, d.values) for d in dimensions] == [
        ("learning_rate", "log_uniform", (1e-5, 1e-4)), ("epochs", "int_range", (1, 3)),
        ("batch_size", "choice", (16, 32)), ("lora_targets", "choice", ("query", "query,value"))]
    values = {"learning_rate": 3e-5, "epochs": 2, "batch_size": 16, "lora_targets": "query,value"}
    assert space.overrides(dimensions, values) == {
        "learning_rate": 3e-5, "epochs": 2, "batch_size": 16, "lora_targets": ("query", "value")}


def test_the_most_important_flag_goes_with_the_score():
    rows = [{"lr": lr, "bs": bs, "score": score} for lr, bs, score in
            [(1e-5, 16, 0.6), (1e-4, 16, 0.8), (3e-5, 32, 0.7), (2e-4, 32, 0.85)]]
    assert results.most_important(rows, ["bs", "lr"]) == "lr"
    rows = [dict(row, lr=1e-4) for row in rows]
    assert results.most_important(rows, ["lr", "bs"]) == "bs"


def test_cv_summary_has_mean_and_std_of_every_metric(tmp_path):
    cfg = experiment(tmp_path, cv_folds=3)
    seen = []

    def train_one(fold_cfg):
        seen.append((fold_cfg.model_dir, fold_cfg.cv_fold))
        return {"score": 0.5 + 0.1 * fold_cfg.cv_fold, "accuracy": 0.7, "step": 6, "data": "x"}

    summary = crossval.train_folds(cfg, train_one)
    assert seen == [(os.path.join(cfg.model_dir, "folds", str(k)), k) for k in range(3)]
    assert set(summary) == {"score", "accuracy"}
    assert summary["score"]["mean"] == pytest.approx(0.6)
    assert summary["score"]["std"] == pytest.approx(0.0816, abs=1e-4)
    with open(os.path.join(cfg.model_dir, "eval", "cv_metrics.json")) as f:
        assert json.load(f) == summary


def test_folds_are_stratified_and_cover_the_training_data(tmp_path):
    rows = [(f"text {i}", "a" if i % 4 else "b") for i in range(40)]  # 30 a, 10 b
    cfg = experiment(tmp_path, train_data=write_table(tmp_path, "t.csv", rows), cv_folds=5)
    train = text_classification.read_split(cfg.train_data, cfg, "--train_data")
    data = splits.Data(train, None, None, ("a", "b"))
    held = []
    for fold in range(5):
        fold_data = crossval.fold_data(data, cfg.replace(cv_fold=fold))
        assert sorted(fold_data.eval.labels) == ["a"] * 6 + ["b"] * 2
        assert not set(fold_data.eval.texts) & set(fold_data.train.texts)
        held += fold_data.eval.texts
    assert sorted(held) == sorted(train.texts)


def _tune_command(flagfile, space_file, tune_dir, *flags):
    return [sys.executable, "-m", "tfimitate.tune", f"--flagfile={flagfile}",
            f"--search_space={space_file}", f"--tune_dir={tune_dir}", *flags]


def _base(tmp_path, **overrides):
    preset = tiny_bert_preset(tmp_path)
    train = write_table(tmp_path, "train.csv", sentiment_rows(40))
    values = dict(backbone=preset, train_data=train, max_steps=4, checkpoint_steps=2)
    cfg = experiment(tmp_path, **dict(values, **overrides))
    return write_flagfile(tmp_path / "base", cfg)


def _wait_for(path, process, timeout=240):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, "the search ended before it could be killed"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_search_continues_where_it_stopped(tmp_path):
    flagfile = _base(tmp_path)
    space_file = _space(tmp_path, "--learning_rate=log_uniform(1e-4,1e-2)\n")
    tune_dir = str(tmp_path / "tune")
    command = _tune_command(flagfile, space_file, tune_dir, "--tuner=random", "--max_trials=2")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=log,
                             stderr=subprocess.STDOUT)
    _wait_for(os.path.join(tune_dir, "trials", "1", "checkpoints", "checkpoint"), first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    trial_0 = os.path.join(tune_dir, "trials", "0", "trial_result.json")
    finished = os.path.getmtime(trial_0)
    with open(os.path.join(tune_dir, "trials", "1", "flags.cfg")) as f:
        flags_1 = f.read()

    again = subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True,
                           timeout=600)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert os.path.getmtime(trial_0) == finished  # the finished trial is not run again
    assert "Resumed from checkpoint" in output and "at step 2 of 4" in output
    with open(os.path.join(tune_dir, "trials", "1", "flags.cfg")) as f:
        assert f.read() == flags_1  # the same trial, same flags
    with open(os.path.join(tune_dir, "results.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "trial,status,learning_rate,score,steps,seconds"
    assert [line.split(",")[:2] for line in lines[1:]] == [["0", "COMPLETED"], ["1", "COMPLETED"]]
    assert "| trial | status | learning_rate | score | steps | seconds |" in again.stdout
    for name in ("best.cfg", "results.png", "trials/0/eval/curves.png", "trials/1/eval/curves.png"):
        assert os.path.isfile(os.path.join(tune_dir, name)), name
    scores = {line.split(",")[0]: float(line.split(",")[3]) for line in lines[1:]}
    # curves.png reads these: every step once (the resumed run's value), the score at the end
    curves = reports.read_scalars(os.path.join(tune_dir, "trials", "1", "logs", "train"),
                                  ["loss", "eval/score"])
    assert curves["loss"][0] == [1, 2, 3, 4]
    assert curves["eval/score"][0] == [4]
    assert curves["eval/score"][1][0] == pytest.approx(scores["1"], abs=1e-5)
    best = max(scores, key=scores.get)
    with open(os.path.join(tune_dir, "best.cfg")) as f:
        best_cfg = f.read()
    with open(os.path.join(tune_dir, "trials", best, "flags.cfg")) as f:
        trial_cfg = f.read()
    assert f"--model_dir={tune_dir}/best\n" in best_cfg
    assert [l for l in best_cfg.splitlines() if not l.startswith(("--model_dir", "--labels"))] == \
        [l for l in trial_cfg.splitlines() if not l.startswith(("--model_dir", "--labels"))]


@pytest.mark.slow
def test_cross_validation_trains_one_run_per_fold(tmp_path):
    from tfimitate import workflow

    preset = tiny_bert_preset(tmp_path)
    cfg = experiment(tmp_path, backbone=preset, max_steps=2, cv_folds=2,
                     train_data=write_table(tmp_path, "train.csv", sentiment_rows(24)))
    summary = workflow.train(cfg)
    assert len(summary["score"]["folds"]) == 2
    for fold in range(2):
        fold_dir = os.path.join(cfg.model_dir, "folds", str(fold))
        with open(os.path.join(fold_dir, "flags.cfg")) as f:
            assert f"--cv_fold={fold}\n" in f.read()
        assert os.path.isfile(os.path.join(fold_dir, "eval", "curves.png"))


@pytest.mark.slow
def test_hyperband_budget_is_training_steps(tmp_path):
    flagfile = _base(tmp_path)  # --max_steps=4: with factor 2, 4 trials of 1 step, 2 of 2, 1 of 4
    space_file = _space(tmp_path, "--learning_rate=log_uniform(1e-4,1e-2)\n")
    tune_dir = str(tmp_path / "tune")
    result = subprocess.run(
        _tune_command(flagfile, space_file, tune_dir, "--tuner=hyperband", "--hyperband_factor=2",
                      "--max_trials=6"),
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(os.path.join(tune_dir, "results.csv")) as f:
        rows = [line.split(",") for line in f.read().splitlines()]
    steps = [int(row[rows[0].index("max_steps")]) for row in rows[1:]]
    assert steps == [1, 1, 1, 1, 2, 2]
    assert result.stderr.count("Continuing trial") == 2  # round 2 starts from round 1's best
    assert result.stderr.count("Resumed from checkpoint") == 2


@pytest.mark.slow
def test_distributed_search_with_a_chief_and_two_workers(tmp_path):
    flagfile = _base(tmp_path)
    space_file = _space(tmp_path, "--learning_rate=log_uniform(1e-4,1e-2)\n")
    tune_dir = str(tmp_path / "tune")
    command = _tune_command(flagfile, space_file, tune_dir, "--tuner=random", "--max_trials=2")
    port = str(free_port())
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = child_env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                        KERASTUNER_ORACLE_PORT=port)
        processes[tuner_id] = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        if tuner_id == "chief":
            time.sleep(5)  # the oracle server starts first
    outputs = {name: process.communicate(timeout=900)[0] for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, (name, outputs[name][-3000:])
    # Each worker ran one of the two trials; the chief wrote the results.
    assert all("Training on" in outputs[worker] for worker in ("tuner0", "tuner1"))
    assert "Training on" not in outputs["chief"]
    with open(os.path.join(tune_dir, "results.csv")) as f:
        assert len(f.read().splitlines()) == 3
    assert os.path.isfile(os.path.join(tune_dir, "best.cfg"))


def test_damaged_search_state_is_one_line_and_failed_trials_print_their_error(tmp_path,
                                                                              monkeypatch):
    """keras-tuner's state is written atomically; a damaged file (torn by an older version, or
    by hand) is one sentence naming it. A failed trial's message is its error, not a traceback."""
    import keras_tuner

    from tfimitate.errors import UserError
    from tfimitate.search import tuner as tuner_lib

    base = experiment(tmp_path, train_data=write_table(tmp_path, "t.csv", sentiment_rows(8)))
    dimensions = space.read(_space(tmp_path, "--learning_rate=choice(1e-4,1e-3)\n"))
    tune_dir = str(tmp_path / "tune")
    tuner = tuner_lib.make_tuner(base, dimensions, "random", 2, tune_dir)
    oracle = os.path.join(tune_dir, tuner_lib.ORACLE_DIR, "oracle.json")
    assert json.load(open(oracle)) and not [n for n in os.listdir(os.path.dirname(oracle))
                                            if n.endswith(".tmp")]
    with open(oracle, "r+") as f:
        f.truncate(20)
    with pytest.raises(UserError, match=f"{oracle}, keras-tuner's search state, is damaged "
                                        r"\(.*\); delete it and re-run the same command"):
        tuner_lib.make_tuner(base, dimensions, "random", 2, tune_dir)

    trial = keras_tuner.engine.trial.Trial(tuner.oracle.hyperparameters, trial_id="7",
                                           status=keras_tuner.engine.trial.TrialStatus.FAILED,
                                           message="Traceback (most recent call last):\n  ...\n"
                                                   "FailedTrialError: --x=1 is wrong.\n")
    shown = []  # what keras-tuner's end of trial (its display, the oracle) is given
    monkeypatch.setattr(keras_tuner.engine.base_tuner.BaseTuner, "on_trial_end",
                        lambda self, ended: shown.append(ended.message))
    tuner.on_trial_end(trial)
    assert shown == ["FailedTrialError: --x=1 is wrong."]
