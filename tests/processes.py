"""Test helpers for training in child processes: commands, environments, loss curves.

Example:
    flagfile = write_flagfile(tmp_path, cfg)
    result = subprocess.run(train_command(flagfile), env=child_env(), capture_output=True)
    curve = loss_curve(cfg.model_dir)          # {step: loss} from TensorBoard
    result = train_on_two_cpus(flags_dir)       # one-device and mirrored runs of a saved cfg
"""

import glob
import os
import socket
import subprocess
import sys


def write_flagfile(directory, cfg):
    """Saves `cfg` as `<directory>/flags.cfg` (what `tfimitate.train --flagfile` reads)."""
    os.makedirs(str(directory), exist_ok=True)
    cfg.save(str(directory))
    return os.path.join(str(directory), "flags.cfg")


def train_command(flagfile, *flags):
    """`python -m tfimitate.train --flagfile=... <flags>` as an argument list."""
    return [sys.executable, "-m", "tfimitate.train", f"--flagfile={flagfile}", *flags]


def child_env(**variables):
    """This process's environment without TF_CONFIG, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(variables)
    return env


# The start of a `python -c` script: two logical CPUs (set before TensorFlow initialises,
# which is why it runs in a child) and `cfg`, the Experiment saved in sys.argv[1].
_TWO_CPUS = """
import sys
import tfimitate
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfimitate.config import Experiment
cfg = Experiment.load(sys.argv[1])
"""

# cfg trained by the bare loop with its techniques, once per strategy, into
# <model_dir>-one_device and <model_dir>-mirrored (prints each strategy's replica count).
_LOOP_PER_STRATEGY = """
from tfimitate import runs, runtime
from tfimitate.tasks import base, get_task
from tfimitate import techniques
from tfimitate.training import hooks, loop, optim
task = get_task(cfg.task)
data = task.load_data(cfg)
chosen = techniques.chosen(cfg)
for name in ("one_device", "mirrored"):
    runtime.set_seeds(cfg.seed)
    strategy = runtime.make_strategy(name)
    print("replicas", name, strategy.num_replicas_in_sync, file=sys.stderr)
    with strategy.scope():
        model = runs.build_model(task, cfg, 2, chosen)
        optimizer = optim.make_optimizer(cfg.learning_rate, cfg.max_steps, cfg.warmup_ratio,
                                         cfg.weight_decay)
    run = base.Run(cfg, model, task.make_preprocessor(cfg), strategy, optimizer,
                   text_transform=lambda keep: techniques.text_transform(chosen, cfg, keep))
    loop.train_loop(model, optimizer, techniques.wrap_loss(chosen, hooks.supervised_loss(task), run),
                    task.train_dataset(run, data.train), None,
                    cfg.replace(model_dir=f"{cfg.model_dir}-{name}"), strategy,
                    steps_per_epoch=100, total_steps=cfg.max_steps)
"""


def train_on_two_cpus(flags_dir, *args, body=_LOOP_PER_STRATEGY, timeout=240):
    """Runs `body` in a child with two logical CPUs and `cfg` loaded from `flags_dir` (what
    write_flagfile wrote); `args` follow it in sys.argv. The default body trains a binary
    task for cfg.max_steps once per strategy into <model_dir>-one_device and
    <model_dir>-mirrored. Returns the CompletedProcess (text stderr)."""
    return subprocess.run([sys.executable, "-c", _TWO_CPUS + body, str(flags_dir), *args],
                          env=child_env(), capture_output=True, text=True, timeout=timeout)


def free_port():
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def loss_curve(model_dir, tag="loss"):
    """{step: logged training `tag`} read from the TensorBoard events; later files win on repeats."""
    import tensorflow as tf

    curve = {}
    files = glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*"))
    for path in sorted(files, key=os.path.getmtime):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    curve[event.step] = float(tf.make_ndarray(value.tensor))
    return curve
