"""Roll a model version out with TF Serving's version labels: canary, promote, roll back.

Clients ask for a label (`--version_label=stable`, REST `/v1/models/NAME/labels/stable`)
and a server polling its models.config (--model_config_file_poll_wait_seconds) moves
them within one poll. These commands edit models.config in one atomic replace:

    python -m tfimitate.serving.rollout label   --model_name=sst2 --label=stable --version=3
    python -m tfimitate.serving.rollout label   --model_name=sst2 --label=canary --version=4
    python -m tfimitate.serving.rollout promote --model_name=sst2 --eval_data=dev.csv
    python -m tfimitate.serving.rollout rollback --model_name=sst2

(`--models_config` defaults to serving/models.config and `--saved_models`, where the
versions are on this machine, to saved_models.) The model's policy becomes
`specific { versions: ... }`: the labelled versions, nothing else. `label` refuses a
version that does not exist under `--saved_models` or did not pass the export's checks
(no assets.extra/tfimitate_serving.json). TF Serving assigns a label only to a version
already loaded, so a version new to the policy is added first; the label follows on a
second run, or at once with `--server=HOST:PORT`, which waits until the server has it.
`promote` moves `stable` to the canary's version (the old stable becomes `previous`),
after scoring both on `--eval_data` through their `classify` signatures: it refuses
when the canary's accuracy is below stable's by more than `--margin`, and writes the
comparison beside the canary (assets.extra/tfimitate_blessing.json, as TFX's evaluator
blesses a model). `rollback` moves `stable` back to `previous`.

Example (in Python):
    config = config_lib.read_models_config("serving/models.config")
    promoted(config, "sst2")   # a copy with stable -> canary's version, previous -> old stable
"""

import json
import os
import time

from absl import flags
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfimitate import files
from tfimitate.errors import UserError, run_cli
from tfimitate.serving import config as config_lib

BLESSING_FILE = os.path.join("assets.extra", "tfimitate_blessing.json")
CHECKED_FILE = os.path.join("assets.extra", "tfimitate_serving.json")  # export.SERVING_FILE
HEADER = ("# Version labels written by `python -m tfimitate.serving.rollout`; clients ask for\n"
          "# a label (--version_label=stable). Edit with the rollout commands.\n")


def _model(config, name, flag="--model_name"):
    for model in config.model_config_list.config:
        if model.name == name:
            return model
    names = ", ".join(m.name for m in config.model_config_list.config)
    raise UserError(f"{flag}={name}: models.config has no such model (it has {names}).")


def check_version(saved_models, name, version):
    """Refuses a version that is not under `saved_models/name` or did not pass the export's
    checks (op audit, parity with both loaders: the export writes CHECKED_FILE after them)."""
    path = os.path.join(saved_models, name, str(version))
    if not files.isfile(os.path.join(path, "saved_model.pb")):
        raise UserError(f"--version={version}: {path} holds no SavedModel; give a version that "
                        f"exists under --saved_models={saved_models}.")
    if not files.isfile(os.path.join(path, CHECKED_FILE)):
        raise UserError(f"--version={version}: {path} was not checked by tfimitate's export "
                        f"(no {CHECKED_FILE}); export it with python -m tfimitate.export.")
    return path


def _copy(config):
    copy = model_server_config_pb2.ModelServerConfig()
    copy.CopyFrom(config)
    return copy


def _set_labels(model, labels):
    """Gives `model` exactly `labels` (label -> version) and serves just those versions."""
    model.ClearField("version_labels")
    for label, version in sorted(labels.items()):
        model.version_labels[label] = version
    model.model_version_policy.ClearField("specific")
    model.model_version_policy.specific.versions.extend(sorted(set(labels.values())))


def served_versions(model, saved_models=None):
    """The versions a model's policy serves: those it pins, or (given the local
    `saved_models`) the newest `latest.num_versions` there, or all of them."""
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return set(policy.specific.versions)
    folder = os.path.join(saved_models or "", model.name)
    if saved_models is None or not files.isdir(folder):
        return set()
    versions = sorted(int(v) for v in files.listdir(folder) if v.isdigit())
    count = len(versions) if kind == "all" else (policy.latest.num_versions or 1)
    return set(versions[-count:])


def with_version(config, name, version):
    """A copy of `config` whose model `name` also serves `version` (labels unchanged)."""
    config = _copy(config)
    model = _model(config, name)
    versions = set(model.version_labels.values()) | {version}
    model.model_version_policy.ClearField("specific")
    model.model_version_policy.specific.versions.extend(sorted(versions))
    return config


def _relabelled(config, name, change):
    """A copy of `config` whose model `name` has its labels (a dict label -> version) as
    `change(labels)` leaves them, changed in place."""
    config = _copy(config)
    model = _model(config, name)
    labels = dict(model.version_labels)
    change(labels)
    _set_labels(model, labels)
    return config


def labelled(config, name, label, version):
    """A copy of `config` with `label` on `version` of model `name`."""
    return _relabelled(config, name, lambda labels: labels.update({label: version}))


def promoted(config, name):
    """A copy of `config`: stable -> the canary's version, previous -> the old stable."""
    def promote(labels):
        for needed in ("canary", "stable"):
            if needed not in labels:
                raise UserError(f"--model_name={name}: no '{needed}' label to promote from/to; "
                                f"set it first (rollout label --label={needed} --version=N).")
        if labels["canary"] == labels["stable"]:
            raise UserError(f"--model_name={name}: canary and stable are both version "
                            f"{labels['stable']}; label a new canary first.")
        labels["previous"], labels["stable"] = labels["stable"], labels.pop("canary")

    return _relabelled(config, name, promote)


def rolled_back(config, name):
    """A copy of `config`: stable -> previous (the version promoted away from)."""
    def roll_back(labels):
        if "previous" not in labels:
            raise UserError(f"--model_name={name}: no 'previous' label to roll back to (it is "
                            "set by promote); label the version to serve as stable instead.")
        labels["stable"] = labels.pop("previous")
        labels.pop("canary", None)

    return _relabelled(config, name, roll_back)


def accuracy(version_dir, rows, features, labels, signature_name="classify"):
    """The accuracy of a version's classify signature on `rows` (feature name -> values),
    run through TF Serving's loader; `labels` are the true classes."""
    from tensorflow_serving.apis import classification_pb2

    from tfimitate.serving import inference  # TensorFlow: only once a command scores
    from tfimitate.serving.servables import Servable

    servable = Servable(int(os.path.basename(os.path.normpath(version_dir))), version_dir)
    try:
        correct = 0
        for start in range(0, len(labels), 64):
            request = classification_pb2.ClassificationRequest()
            request.model_spec.signature_name = signature_name
            batch = {name: values[start:start + 64] for name, values in rows.items()}
            for serialized in inference.to_examples({name: batch[name] for name in features}):
                request.input.example_list.examples.add().ParseFromString(serialized)
            for one, truth in zip(inference.classify(servable, request).classifications,
                                  labels[start:start + 64]):
                best = max(one.classes, key=lambda c: c.score)
                correct += best.label == truth
        return correct / len(labels)
    finally:
        servable.session.close()


def bless(saved_models, name, config, eval_data, features, label_column, margin):
    """Scores canary and stable on `eval_data`, writes the comparison beside the canary, and
    refuses (UserError) a canary worse than stable by more than `margin`."""
    from tfimitate.data import readers

    labels = dict(_model(config, name).version_labels)
    rows = readers.read_rows(eval_data, list(features) + [label_column], "--eval_data")
    if not rows:
        raise UserError(f"--eval_data={eval_data}: no rows in it; give labelled examples.")
    columns = {feature: [row.values[i] for row in rows] for i, feature in enumerate(features)}
    truth = [row.values[-1] for row in rows]
    scores = {}
    for label in ("canary", "stable"):
        path = check_version(saved_models, name, labels[label])
        scores[label] = accuracy(path, columns, features, truth)
    blessed = scores["canary"] >= scores["stable"] - margin
    record = {"model": name, "candidate": labels["canary"], "baseline": labels["stable"],
              "eval_data": eval_data, "examples": len(truth), "metric": "accuracy",
              "candidate_score": scores["canary"], "baseline_score": scores["stable"],
              "margin": margin, "blessed": blessed, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                         time.gmtime())}
    files.write_atomically(os.path.join(saved_models, name, str(labels["canary"]), BLESSING_FILE),
                           json.dumps(record, indent=1))
    if not blessed:
        raise UserError(
            f"--model_name={name}: the canary (version {labels['canary']}) scores "
            f"{scores['canary']:.4f} accuracy on --eval_data={eval_data}, below stable's "
            f"{scores['stable']:.4f} by more than --margin={margin:g}; not promoted (see "
            f"{BLESSING_FILE} of the canary). Roll it out again after fixing it, or raise "
            "--margin.")
    return record


def _wait_until_available(server, name, version, timeout):
    """Waits until the gRPC server `server` has `version` of `name` AVAILABLE."""
    from tfimitate.serving.client import ServingClient, ServingError

    client = ServingClient(server, timeout=10, flag="--server")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if any(s["version"] == version and s["state"] == "AVAILABLE"
                       for s in client.status(name)):
                    return
            except ServingError as error:
                if error.code.name != "NOT_FOUND":
                    raise
            time.sleep(0.5)
    finally:
        client.close()
    raise UserError(f"--server={server}: version {version} of {name} was not AVAILABLE within "
                    f"{timeout:g} s; check the server's log (is it polling --models_config?).")


def _write(path, config):
    config_lib.write_models_config(path, HEADER + text_format.MessageToString(config))


def _define_flags():
    """The rollout flags, defined only when it runs as a program."""
    return dict(
        models_config=flags.DEFINE_string(
            "models_config", os.path.join("serving", "models.config"), "The models.config to edit."),
        saved_models=flags.DEFINE_string(
            "saved_models", "saved_models", "Where the model's versions are on this machine "
            "(<saved_models>/<model_name>/<version>)."),
        model_name=flags.DEFINE_string("model_name", None, "The model, as named in models.config."),
        label=flags.DEFINE_string("label", None, "label: the label to set (stable, canary, ...)."),
        version=flags.DEFINE_integer("version", None, "label: the version it names.",
                                     lower_bound=1),
        server=flags.DEFINE_string(
            "server", None, "label: HOST:PORT of the gRPC server polling --models_config; wait "
            "until it has a version new to the policy, then write the label."),
        wait_seconds=flags.DEFINE_float("wait_seconds", 300, "label: how long --server may take.",
                                        lower_bound=0),
        eval_data=flags.DEFINE_string(
            "eval_data", None, "promote: labelled CSV/TSV/JSONL that canary and stable are scored on."),
        features=flags.DEFINE_list(
            "features", ["text"], "promote: the columns of --eval_data that are the tf.Example "
            "features (the model's input names)."),
        label_column=flags.DEFINE_string("label_column", "label", "promote: the true class column."),
        margin=flags.DEFINE_float(
            "margin", 0.0, "promote: how much lower than stable's the canary's accuracy may be.",
            lower_bound=0),
    )


COMMANDS = ("label", "promote", "rollback")


def main(argv, holders):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise UserError(f"give one command: {', '.join(COMMANDS)} (e.g. python -m "
                        "tfimitate.serving.rollout promote --model_name=sst2 --eval_data=dev.csv).")
    run(argv[1], **{name: holder.value for name, holder in holders.items()})


def run(command, **value):
    """Runs a command (COMMANDS) with the flags' values (see _define_flags for the names)."""
    defaults = {"saved_models": "saved_models", "label": None, "version": None, "server": None,
                "wait_seconds": 300.0, "eval_data": None, "features": ["text"],
                "label_column": "label", "margin": 0.0}
    value = dict(defaults, **value)
    path, name = value["models_config"], value["model_name"]
    config = config_lib.read_models_config(path, "--models_config")
    model = _model(config, name)
    if command == "label":
        if not value["label"] or value["version"] is None:
            raise UserError("label needs --label and --version (e.g. --label=canary --version=4).")
        version = value["version"]
        check_version(value["saved_models"], name, version)
        if version not in served_versions(model, value["saved_models"]):
            _write(path, with_version(config, name, version))
            if not value["server"]:
                print(f"Added version {version} of {name} to the served versions in {path}. TF "
                      "Serving labels only loaded versions: run this again once it is AVAILABLE "
                      "(or pass --server=HOST:PORT to wait).", flush=True)
                return
            _wait_until_available(value["server"], name, version, value["wait_seconds"])
            config = config_lib.read_models_config(path, "--models_config")
        _write(path, labelled(config, name, value["label"], version))
        print(f"{name}: {value['label']} -> version {version} in {path}.", flush=True)
        return
    if command == "promote":
        if not value["eval_data"]:
            raise UserError("promote needs --eval_data: labelled examples that canary and "
                            "stable are compared on.")
        new = promoted(config, name)  # refuses a missing canary/stable before any scoring
        record = bless(value["saved_models"], name, config, value["eval_data"],
                       value["features"], value["label_column"], value["margin"])
        _write(path, new)
        print(f"{name}: stable -> version {record['candidate']} (accuracy "
              f"{record['candidate_score']:.4f} vs {record['baseline_score']:.4f}); previous -> "
              f"version {record['baseline']}. Written to {path}.", flush=True)
        return
    new = rolled_back(config, name)
    _write(path, new)
    print(f"{name}: stable -> version {_model(new, name).version_labels['stable']} (rolled "
          f"back). Written to {path}.", flush=True)


if __name__ == "__main__":
    _HOLDERS = _define_flags()
    flags.mark_flags_as_required(["model_name"])
    run_cli(lambda argv: main(argv, _HOLDERS))
