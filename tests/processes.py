"""Test helpers for training in child processes: commands, environments, loss curves.

Example:
    flagfile = write_flagfile(tmp_path, cfg)
    result = subprocess.run(train_command(flagfile), env=child_env(), capture_output=True)
    curve = loss_curve(cfg.model_dir)          # {step: loss} from TensorBoard
"""

import glob
import os
import socket
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
