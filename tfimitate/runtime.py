"""Where and how the model runs: the tf.distribute strategy, dtype policy and seeds.

Example:
    strategy = make_strategy("auto")
    set_precision("auto")   # "mixed_bfloat16" on a CPU with AMX or AVX512-BF16, else "float32"
    with strategy.scope():
        model = ...
"""

import json
import os
import tempfile

import keras
import tensorflow as tf
from absl import logging

from tfimitate.errors import UserError

# CPU flags (/proc/cpuinfo) of bfloat16 matmul units: Intel AMX, AVX512-BF16 (Intel, AMD Zen 4+).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# What mixed_bfloat16 costs on a CPU without those units (README "Speed on CPU").
NO_BF16_UNITS_COST = ("mixed_bfloat16 trained 8% slower than float32 on a CPU without bfloat16 "
                      "units (MiniLM-L6, SST-2, 2 cores)")


def make_strategy(name, tpu=None):
    """Builds the tf.distribute strategy named by --strategy.

    auto picks tpu when `tpu` is given, mirrored over several GPUs, else one device.
    mirrored uses every GPU, or every logical CPU device on a machine without GPUs.

    Example:
        strategy = make_strategy("tpu", tpu="local")
    """
    if name == "auto":
        name = "tpu" if tpu else "mirrored" if len(_gpus()) > 1 else "one_device"
    if name == "one_device":
        gpus = _gpus()
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = _gpus() or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable "
                "(cluster and task); set it on every worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not tpu:
            raise UserError("--strategy=tpu needs --tpu=ADDRESS (or --tpu=local on a TPU VM).")
        return make_tpu_strategy(tpu)
    raise UserError(f"--strategy={name} is unknown; use auto, one_device, mirrored, multi_worker or tpu.")


def _gpus():
    # Listing devices initialises TensorFlow: not before a multi-worker strategy exists.
    return tf.config.list_logical_devices("GPU")


def needs_static_shapes(strategy):
    """True where input batches must all have one shape (TPUs compile per shape)."""
    return isinstance(strategy, tf.distribute.TPUStrategy)


def make_tpu_strategy(tpu, resolver_class=None):
    """Connects to the TPU at `tpu` (address, name or `local`) and returns a TPUStrategy."""
    resolver_class = resolver_class or tf.distribute.cluster_resolver.TPUClusterResolver
    try:
        resolver = resolver_class(tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"--tpu={tpu}: cannot reach the TPU ({error}); check the address.") from None
    return tf.distribute.TPUStrategy(resolver)


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
    """The feature flags of the first processor in `cpuinfo_path` (empty off Linux)."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def resolve_precision(requested, flags, accelerator=None):
    """(Keras dtype policy, reason) for --precision=`requested` on a machine whose CPU has
    `flags` and whose `accelerator` ("GPU", "TPU" or None) runs the model.

    auto: mixed_bfloat16 on a CPU with AMX-BF16 or AVX512-BF16 units, float32 on other CPUs
    and, as before auto existed, on GPUs and TPUs. Other values are returned as they are.

    Example:
        resolve_precision("auto", {"avx2", "avx512_bf16"})
        # ("mixed_bfloat16", "--precision=auto: the CPU has avx512_bf16 (bfloat16 units)")
    """
    if requested != "auto":
        return requested, f"--precision={requested} as asked"
    if accelerator:
        return "float32", (f"--precision=auto: float32 on {accelerator} (choose mixed_float16 "
                           "or mixed_bfloat16 there yourself)")
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return "mixed_bfloat16", f"--precision=auto: the CPU has {found[0]} (bfloat16 units)"
    return "float32", "--precision=auto: the CPU has no AMX or AVX512-BF16 bfloat16 units"


def has_bf16_units(flags=None):
    """True if this CPU (or one with `flags`) has bfloat16 matmul units."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_CPU_FLAGS)


def set_precision(policy, tpu=None):
    """Sets the Keras global dtype policy (auto, float32, mixed_float16, mixed_bfloat16);
    returns (the policy set, the reason), both logged. `tpu`: the --tpu the model runs on.

    An explicit mixed_bfloat16 on a CPU without bfloat16 units is set with a warning.
    """
    accelerator = "TPU" if tpu else "GPU" if _gpus() else None
    resolved, reason = resolve_precision(policy, cpu_flags(), accelerator)
    if policy == "mixed_bfloat16" and not accelerator and not has_bf16_units():
        logging.warning("--precision=mixed_bfloat16 on a CPU without AMX or AVX512-BF16 units "
                        "runs slower than float32 (%s); use --precision=auto.", NO_BF16_UNITS_COST)
    logging.info("Precision %s (%s).", resolved, reason)
    keras.mixed_precision.set_global_policy(resolved)
    return resolved, reason


def set_seeds(seed):
    """Seeds Python, NumPy and TensorFlow (shuffling, dropout, initialisers)."""
    keras.utils.set_random_seed(seed)


def is_chief(strategy):
    """True on the worker that writes checkpoints, exports and reports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_dir(model_dir, strategy):
    """`model_dir` on the chief; a throw-away temporary folder on other workers.

    Collective saves need every worker to write somewhere; only the chief's copy is kept.
    """
    if is_chief(strategy):
        return model_dir
    return tempfile.mkdtemp(prefix="tfimitate-worker-")
