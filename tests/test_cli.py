"""The entry points as a user runs them: one error sentence, exit code, no traceback."""

import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_unknown_flag_exits_non_zero_without_traceback():
    result = run("tfimitate.train", "--no_such_flag=1")
    assert result.returncode != 0
    assert "Unknown command line flag 'no_such_flag'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_flagfile_is_named():
    result = run("tfimitate.train", "--flagfile=configs/missing.cfg")
    assert result.returncode != 0
    assert "missing.cfg" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_file_is_one_sentence_and_nothing_is_written(tmp_path):
    model_dir = tmp_path / "run"
    result = run("tfimitate.train", "--flagfile=configs/sst2_minilm.cfg",
                 f"--train_data={tmp_path}/absent.tsv", f"--model_dir={model_dir}",
                 f"--export_dir={tmp_path}/export")
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert errors == [f"error: --train_data={tmp_path}/absent.tsv: file {tmp_path}/absent.tsv "
                      "does not exist; check the path."]
    assert "Traceback" not in result.stderr
    assert not model_dir.exists() and not (tmp_path / "export").exists()


def test_command_line_overrides_flagfile_and_required_flags(tmp_path):
    result = run("tfimitate.train", "--flagfile=configs/sst2_minilm.cfg", "--model_dir=")
    assert result.returncode == 2 and "--model_dir is required" in result.stderr
    result = run("tfimitate.evaluate")
    assert result.returncode != 0 and "model_dir" in result.stderr


def test_evaluate_on_a_directory_without_a_run(tmp_path):
    result = run("tfimitate.evaluate", f"--model_dir={tmp_path}")
    assert result.returncode == 2
    assert "holds no experiment.json" in result.stderr and "Traceback" not in result.stderr
