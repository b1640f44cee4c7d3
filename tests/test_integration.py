"""The real packaged MiniLM-L6 on real data: the quickstart config and the SST-2 config,
run through the CLI as a user would, shortened to a few steps."""

import json
import os
import re
import subprocess
import sys

import pytest

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2 = os.path.join(helpers.SHARED_DATA, "sst2")


def train(*args):
    result = subprocess.run([sys.executable, "-m", "tfimitate.train", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_quickstart_config_trains_evaluates_and_exports(tmp_path):
    result = train("--flagfile=configs/quickstart.cfg", "--max_steps=3", "--batch_size=8",
                   "--sequence_length=64", "--holdout_fraction=0.02",
                   f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/export")
    held = re.search(r"held out (\d+) of 12752 training examples", result.stderr)
    assert held and 200 <= int(held.group(1)) <= 310  # 2%, by a keyed hash of each text
    assert "dropped 1083 examples whose label is not in --labels" in result.stderr
    assert "Parity check on 32 examples" in result.stderr
    assert f"Exported the model to {tmp_path}/export/1" in result.stdout
    metrics = json.load(open(tmp_path / "run" / "eval" / "metrics.json"))
    assert metrics["step"] == 3 and metrics["labels"] == ["fresh", "rotten"]
    assert sum(map(sum, metrics["confusion_matrix"])) == int(held.group(1))


@pytest.mark.skipif(not os.path.isdir(SST2), reason=f"{SST2} is not here (CI has it)")
@pytest.mark.slow
def test_sst2_config_with_header_less_tsv(tmp_path):
    lines = open(os.path.join(SST2, "train.tsv"), encoding="utf-8").read().splitlines()
    train_file = helpers.write_lines(tmp_path, "train.tsv", lines[:200])
    train("--flagfile=configs/sst2_minilm.cfg", f"--train_data={train_file}", "--max_steps=4",
          "--batch_size=16", f"--model_dir={tmp_path}/run", "--export_dir=")
    metrics = json.load(open(tmp_path / "run" / "eval" / "metrics.json"))
    assert metrics["examples"] == 872 and metrics["step"] == 4
    test_metrics = json.load(open(tmp_path / "run" / "eval" / "test_metrics.json"))
    assert test_metrics["examples"] == 1821
