"""Where and how the model runs: the tf.distribute strategy, dtype policy and seeds.

Example:
    strategy = make_strategy("auto")
    set_precision("mixed_bfloat16")
    with strategy.scope():
        model = ...
"""

import json
import os
import tempfile

import keras
import tensorflow as tf

from tfimitate.errors import UserError


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


def set_precision(policy):
    """Sets the Keras global dtype policy (float32, mixed_float16, mixed_bfloat16)."""
    keras.mixed_precision.set_global_policy(policy)


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
