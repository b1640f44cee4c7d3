"""Check exports against older TF Serving releases, and make the op lists the audit uses.

TF Serving's binary cannot be installed here, but what decides whether a release loads
an export is its TensorFlow and TF Text (`releases.RELEASES`). This tool installs a
release's own TensorFlow + TF Text into a virtualenv of its own (once, under
`--environments_dir`) and there:

* `--op_lists` writes `op_lists/<release>.json.gz` for every release (the ops and their
  attributes that TensorFlow X.Y and the paired TF Text register), which the export's
  op audit reads; re-run it when a release is added to RELEASES.
* otherwise, loads each given version directory through that TensorFlow's C++
  SavedModel loader (`session_loader.py`, copied into the environment) and runs its
  warmup requests, comparing every output with this process's own C++-loader run.

    python -m tfimitate.serving.compat --release=2.12 saved_models/sst2/3 saved_models/ner/1
    python -m tfimitate.serving.compat --op_lists

Example (in Python):
    rows = check_versions(["saved_models/sst2/3"], "2.20", "~/.cache/tfimitate/serving-envs")
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from tfimitate.errors import UserError
from tfimitate.serving import releases

DEFAULT_ENVIRONMENTS = os.path.join(os.path.expanduser("~"), ".cache", "tfimitate", "serving-envs")
_HERE = os.path.dirname(os.path.abspath(__file__))


def environment(packages, root):
    """A virtualenv under `root` with exactly `packages` ("name==version") installed; its python."""
    name = "-".join(p.replace("==", "") for p in packages)
    folder = os.path.join(os.path.expanduser(root), name)
    python = os.path.join(folder, "bin", "python")
    marker = os.path.join(folder, ".complete")
    if not os.path.exists(marker):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", folder], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
        open(marker, "w").close()
    return python


def runtime_environment(release, root):
    """The python of `release`'s stand-in pair (TensorFlow + the TF Text it links)."""
    pair = releases.RELEASES[releases.stand_in(release)]
    return environment([f"tensorflow=={pair.tensorflow}",
                        f"tensorflow-text=={pair.tensorflow_text}"], root)


def _dump(python, which):
    script = os.path.join(releases.OP_LIST_DIR, "dump_ops.py")
    result = subprocess.run([python, script, which], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def build_op_lists(root, keep_environments=False):
    """Writes op_lists/<release>.json.gz for every release from its own packages."""
    for key, pair in releases.RELEASES.items():
        runtime_python = runtime_environment(key, root)
        own_pair = key == releases.stand_in(key)
        core_python = (runtime_python if own_pair
                       else environment([f"tensorflow=={pair.tensorflow}"], root))
        core = _dump(core_python, "core")
        text = _dump(runtime_python, "tf_text")
        listing = {"serving_release": key, "tensorflow": core["tensorflow"],
                   "tensorflow_text": text["tensorflow_text"],
                   "ops": {**core["ops"], **text["ops"]}, "tf_text_ops": sorted(text["ops"])}
        with gzip.open(os.path.join(releases.OP_LIST_DIR, f"{key}.json.gz"), "wt") as f:
            json.dump(listing, f, sort_keys=True)
        print(f"{key}: TensorFlow {core['tensorflow']} ({len(core['ops'])} ops) + TF Text "
              f"{text['tensorflow_text']} ({len(text['ops'])} ops)", flush=True)
        if not keep_environments and not own_pair:
            shutil.rmtree(os.path.dirname(os.path.dirname(core_python)))


def warmup_calls(version_dir):
    """{"<signature>#<k>/<input>": array} for the k-th warmup request of a version (Classify
    and Regress requests feed their serialized tf.Examples)."""
    from tfimitate.serving import warmup

    calls = {}
    for k, (signature, inputs) in enumerate(warmup.read_warmup_inputs(version_dir)):
        for name, array in inputs.items():
            calls[f"{signature}#{k}/{name}"] = array
    return calls


def check_versions(version_dirs, release, root=DEFAULT_ENVIRONMENTS, tolerance=1e-4):
    """Loads each version with `release`'s TensorFlow C++ loader and replays its warmup
    requests; returns one row per version: {"version_dir", "release", "ok", "detail",
    "max_abs_diff"} comparing outputs with this process's C++-loader run."""
    from tfimitate.serving import session_loader

    python = runtime_environment(release, root)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "session_loader.py")  # alone: no package beside it
        shutil.copy(os.path.join(_HERE, "session_loader.py"), script)
        for version_dir in version_dirs:
            calls = warmup_calls(version_dir)
            if not calls:
                raise UserError(f"{version_dir} has no warmup requests to replay; export it "
                                "with tfimitate (which writes them) or pass another version.")
            expected = session_loader.run_all(version_dir, calls)
            rows.append(run_elsewhere(python, script, version_dir, calls, expected, release,
                                      tolerance, scratch))
    return rows


def run_elsewhere(python, script, version_dir, calls, expected, release, tolerance, scratch):
    """Runs `calls` on `version_dir` with `script` under another `python`; compares."""
    from tfimitate.serving import session_loader

    inputs_file = os.path.join(scratch, "inputs.tfrecord")
    outputs_file = os.path.join(scratch, "outputs.tfrecord")
    session_loader.write_named_tensors(inputs_file, calls)
    process = subprocess.run([python, script, version_dir, inputs_file, outputs_file],
                             capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if process.returncode:
        return _row(version_dir, release, False,
                    (process.stderr.strip().splitlines() or ["crashed"])[-1])
    return compare_runs(version_dir, release, session_loader.read_named_tensors(outputs_file),
                        expected, tolerance)


def _row(version_dir, release, ok, detail, diff=None):
    return {"version_dir": version_dir, "release": release, "ok": ok, "detail": detail,
            "max_abs_diff": diff}


def compare_runs(version_dir, release, got, expected, tolerance):
    """A row comparing `got` ({"<call>/<output>": array}, or {"error": ...}) with `expected`."""
    for outputs in (expected, got):
        if "error" in outputs:
            message = outputs["error"].reshape(-1)[0]
            return _row(version_dir, release, False,
                        message.decode() if isinstance(message, bytes) else str(message))
    worst = 0.0
    for key, want in expected.items():
        value = got.get(key)
        if value is None or value.shape != want.shape:
            return _row(version_dir, release, False, f"{key}: missing or of another shape")
        if want.dtype.kind in "fc":
            worst = max(worst, float(np.max(np.abs(value - want))) if want.size else 0.0)
        elif not np.array_equal(value, want):
            return _row(version_dir, release, False, f"{key}: differs")
    ok = worst <= tolerance
    return _row(version_dir, release, ok, "same outputs" if ok else f"differs by {worst:.2e}", worst)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dirs", nargs="*", help="exported version directories")
    parser.add_argument("--release", default="2.12", help="TF Serving release, e.g. 2.12 or 2.20")
    parser.add_argument("--environments_dir", default=DEFAULT_ENVIRONMENTS,
                        help="where the per-release virtualenvs are kept")
    parser.add_argument("--op_lists", action="store_true", help="regenerate op_lists/*.json.gz")
    args = parser.parse_args(argv)
    try:
        if args.op_lists:
            build_op_lists(args.environments_dir)
            return 0
        if not args.version_dirs:
            raise UserError("give one or more exported version directories to check.")
        key = releases.release(args.release, "--release")
        rows = check_versions(args.version_dirs, key, args.environments_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        diff = "" if row["max_abs_diff"] is None else f", max abs diff {row['max_abs_diff']:.1e}"
        print(f"{row['version_dir']}: TF Serving {row['release']} "
              f"({'loads' if row['ok'] else 'FAILS'}): {row['detail']}{diff}")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    import tfimitate  # noqa: F401  (environment before TensorFlow is imported)

    sys.exit(main())
