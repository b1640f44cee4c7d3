"""The rollout commands on models.config alone (no model, no server): label moves, refusals,
and the command line's one-line errors that leave the file as it was. The full rollout
under a polling dev server is in test_serving.py."""

import os
import subprocess
import sys

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfimitate.errors import UserError
from tfimitate.serving import rollout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """model_config_list { config { name: "m" base_path: "/models/m"
  model_version_policy { specific { versions: 3 versions: 4 } }
  version_labels { key: "stable" value: 3 } version_labels { key: "canary" value: 4 } } }"""


def _config(text=CONFIG):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def _state(config):
    [model] = config.model_config_list.config
    return dict(model.version_labels), sorted(model.model_version_policy.specific.versions)


def test_promote_then_rollback_move_the_labels_and_serve_only_labelled_versions():
    promoted = rollout.promoted(_config(), "m")
    assert _state(promoted) == ({"stable": 4, "previous": 3}, [3, 4])
    assert _state(rollout.rolled_back(promoted, "m")) == ({"stable": 3}, [3])
    assert _state(rollout.labelled(_config(), "m", "canary", 5)) == (
        {"stable": 3, "canary": 5}, [3, 5])
    assert _state(rollout.with_version(_config(), "m", 5)) == ({"stable": 3, "canary": 4},
                                                               [3, 4, 5])
    assert _state(_config()) == ({"stable": 3, "canary": 4}, [3, 4])  # inputs left as they were


@pytest.mark.parametrize("change,message", [
    (lambda c: rollout.rolled_back(c, "m"), "no 'previous' label"),
    (lambda c: rollout.promoted(rollout.promoted(c, "m"), "m"), "no 'canary' label"),
    (lambda c: rollout.promoted(c, "other"), "--model_name=other: models.config has no such"),
])
def test_impossible_moves_are_one_sentence(change, message):
    with pytest.raises(UserError, match=message):
        change(_config())


def test_cli_refusal_is_one_line_exit_2_and_leaves_models_config_as_it_was(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(CONFIG)
    (tmp_path / "m" / "5").mkdir(parents=True)  # a version folder without a SavedModel
    for args, message in (
            (["label", "--label=canary", "--version=5"], "--version=5: "),
            (["promote", f"--eval_data={tmp_path / 'none.csv'}"], "--eval_data="),
            (["rollback"], "no 'previous' label")):
        done = subprocess.run(
            [sys.executable, "-m", "tfimitate.serving.rollout", *args, "--model_name=m",
             f"--models_config={path}", f"--saved_models={tmp_path}"],
            capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in \
            done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert path.read_text() == CONFIG
