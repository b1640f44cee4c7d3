"""Bounded gRPC and REST load test of an exported model on loopback: requests/s, p50/p99 latency.

Starts the dev server (tfimitate.serving.devserver) in its own process on free
127.0.0.1 ports, then, for each of `--protocols` (gRPC Predict, REST `:predict` in
the columnar format), runs `--clients` concurrent clients for `--seconds` twice:
one text per request, then `--batch_size` texts per request. The texts are a few
built-in reviews, or `--texts_file` (one per line, or the first column of a .tsv).
Writes benchmarks/results/serving_load.{json,md} with the CPU model, its vector
extensions, a float32 matmul peak measured here and the load average before and after
(benchmarks/machine.py); exits non-zero if any request failed. The dev server has no
server-side batching, so this measures the model and the protocol, not TF Serving's
scheduler.

    python benchmarks/serving_load.py --model_base_path=saved_models/quickstart
    python benchmarks/serving_load.py --model_base_path=saved_models/quickstart \
        --protocols=grpc --protocols=rest
    python benchmarks/serving_load.py --model_base_path=saved_models/sst2 --clients=1 \
        --batch_size=32 --texts_file=../shared/data/sst2/dev.tsv
"""

import os
import socket
import subprocess
import sys
import threading
import time

if not __package__:  # run as `python benchmarks/serving_load.py`: import from the root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import harness, machine  # noqa: E402
from tfimitate.errors import UserError, run_cli  # noqa: E402
from tfimitate.serving.client import ServingClient, ServingError  # noqa: E402
from tfimitate.serving.servables import numeric_versions  # noqa: E402

_BASE_PATH = flags.DEFINE_string("model_base_path", None,
                                 "Folder of integer version directories (an --export_dir).")
_MODEL_NAME = flags.DEFINE_string("model_name", "model", "Name the server serves it under.")
_CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients.", lower_bound=1, upper_bound=64)
_SECONDS = flags.DEFINE_float("seconds", 20.0, "Duration of each phase.", lower_bound=1,
                              upper_bound=300)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Texts per request in the batched phase.",
                                   lower_bound=2)
_TEXTS_FILE = flags.DEFINE_string("texts_file", None,
                                  "Texts to send: one per line, or a .tsv's first column.")
_PROTOCOLS = flags.DEFINE_multi_enum("protocols", ["grpc"], ["grpc", "rest"],
                                     "Protocols to load, one after the other.")
_RESULTS = flags.DEFINE_string("results_dir", harness.RESULTS,
                               "Where serving_load.json and serving_load.md go.")

TEXTS = [
    "a gripping, beautifully acted film",
    "two hours I will never get back",
    "the plot is thin but the performances carry it",
    "funny, warm and surprisingly moving",
    "a tedious mess with nothing to say",
    "one of the best thrillers of the year , tense from the first scene to the last",
    "dull",
    "the director's visual flair cannot hide a screenplay that runs out of ideas halfway "
    "through and never recovers , despite a committed lead performance",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base_path, name, rest_port=0):
    """The dev server serving `base_path` as `name` on a free loopback port (and REST on
    `rest_port`; 0: none), once the model is AVAILABLE: (its process, a gRPC ServingClient)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tfimitate.serving.devserver", f"--model_name={name}",
         f"--model_base_path={base_path}", f"--port={port}", f"--rest_api_port={rest_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = ServingClient(f"127.0.0.1:{port}", timeout=5)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"--model_base_path={base_path}: the dev server exited: "
                            f"{process.stderr.read().strip().splitlines()[-1]}")
        try:
            if any(s["state"] == "AVAILABLE" for s in client.status(name)):
                return process, client
        except ServingError:
            pass
        time.sleep(0.5)
    process.kill()
    raise UserError(f"--model_base_path={base_path}: the dev server did not load it in 300 s.")


def _read_texts(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError as error:
        raise UserError(f"--texts_file={path}: cannot read it ({error.strerror}).") from None
    texts = [line.split("\t")[0] for line in lines] if path.endswith(".tsv") else lines
    if not texts:
        raise UserError(f"--texts_file={path}: the file holds no text; give one per line.")
    return texts


def _phase(target, name, clients, seconds, batch_size, texts):
    """Runs `clients` threads for `seconds`; returns throughput, latency percentiles and errors."""
    latencies, errors, lock = [], [], threading.Lock()
    start_at = time.monotonic() + 0.5
    stop_at = start_at + seconds

    def worker(index):
        client = ServingClient(target, timeout=30)
        offset = index
        while time.monotonic() < start_at:
            time.sleep(0.01)
        while time.monotonic() < stop_at:
            batch = [texts[(offset + i) % len(texts)] for i in range(batch_size)]
            offset += batch_size
            began = time.perf_counter()
            try:
                client.predict(name, {"text": batch})
                with lock:
                    latencies.append(time.perf_counter() - began)
            except ServingError as error:
                with lock:
                    errors.append(str(error))
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(time.monotonic() - start_at, 1e-9)
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"texts_per_request": batch_size, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 2),
            "texts_per_s": round(len(latencies) * batch_size / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def _markdown(result):
    lines = [
        "# Serving load test (dev server on loopback)", "",
        f"Model `{result['model_base_path']}` version {result['version']}; "
        f"{result['clients']} concurrent clients, {result['seconds']:g} s per phase, "
        f"{result['texts']}; TF_ENABLE_ONEDNN_OPTS={result['onednn']}.", "",
        machine.markdown(result["machine"], result["load_average_before"],
                         result["load_average_after"]) + " Float32 matmul peak measured here: "
        f"{result['matmul_peak_flops'] / 1e9:.0f} GFLOP/s.", "",
        f"Command: `{result['command']}`", "",
        "| protocol | phase | texts/request | requests | requests/s | texts/s | p50 ms | p99 ms "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|"]
    for protocol, phase, p in _phases(result):
        lines.append(f"| {protocol} | {phase} | {p['texts_per_request']} | {p['requests']} | "
                     f"{p['requests_per_s']} | {p['texts_per_s']} | {p['p50_ms']} | "
                     f"{p['p99_ms']} | {p['errors']} |")
    return "\n".join(lines) + "\n"


def _phases(result):
    """(protocol, phase, figures) of every phase run."""
    return [(protocol, phase, result[protocol][phase]) for protocol in result["protocols"]
            for phase in ("single", "batched")]


def main(argv):
    del argv
    base_path = _BASE_PATH.value
    versions = numeric_versions(base_path)
    if not versions:
        raise UserError(f"--model_base_path={base_path} holds no integer version directory; "
                        "export a model first (see the docstring).")
    texts = _read_texts(_TEXTS_FILE.value) if _TEXTS_FILE.value else TEXTS
    result = {"model_base_path": base_path, "version": versions[-1],
              "clients": _CLIENTS.value, "seconds": _SECONDS.value,
              "texts": (f"{len(texts)} texts from {_TEXTS_FILE.value}" if _TEXTS_FILE.value
                        else f"{len(texts)} built-in texts"),
              "machine": machine.describe(), "matmul_peak_flops": machine.tf_matmul_peak(),
              "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
              "load_average_before": machine.load_average(),
              "command": "python benchmarks/serving_load.py " + " ".join(sys.argv[1:])}
    result["protocols"] = list(dict.fromkeys(_PROTOCOLS.value))
    rest_port = _free_port()
    rest_url = f"http://127.0.0.1:{rest_port}"
    process, client = start_server(base_path, _MODEL_NAME.value, rest_port)
    try:
        for protocol in result["protocols"]:
            target = client.target if protocol == "grpc" else rest_url
            result[protocol] = {
                phase: _phase(target, _MODEL_NAME.value, _CLIENTS.value, _SECONDS.value, size,
                              texts)
                for phase, size in (("single", 1), ("batched", _BATCH_SIZE.value))}
    finally:
        process.terminate()
        process.wait(30)
    result["load_average_after"] = machine.load_average()
    markdown = _markdown(result)
    harness.save("serving_load", result, markdown, _RESULTS.value)
    print(markdown)
    failed = sum(p["errors"] for _, _, p in _phases(result))
    if failed:
        raise UserError(f"{failed} requests failed (first errors are in serving_load.json); "
                        "see the dev server log.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_base_path"])
    run_cli(main)
