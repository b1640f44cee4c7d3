"""File writes that never leave half a file behind, and early checks of output paths.

Example:
    write_atomically("runs/sst2/experiment.json", json.dumps(values))
"""

import os
import uuid

from tfimitate.errors import UserError


def write_atomically(path, data):
    """Writes `data` (str as UTF-8, or bytes) to a hidden temporary file beside `path`,
    flushes it to disk and renames it over `path` (os.replace is atomic on POSIX); a
    failure or kill leaves `path` as it was. The file gets the usual umask permissions.
    Creates the folder if needed; returns `path`."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def check_writable_file(path, flag):
    """Raises UserError unless a file can be written at `path` (its folder may not exist yet)."""
    if os.path.isdir(path):
        raise UserError(f"{flag}={path} is a directory; give a file path.")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag}={path}: {parent} is a file, not a folder; choose another path.")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag}={path}: folder {parent} is not writable; choose another path.")


def check_writable_dir(path, flag):
    """Raises UserError unless `path` is (or can be created as) a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path} is a file, not a folder; choose another path.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise UserError(f"{flag}={path}: {existing} is a file, not a folder; choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path}: folder {existing} is not writable; choose another path.")


class RunLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    The OS drops the lock when its process dies (even by SIGKILL), so a stale
    lock file never blocks a later run.

    Example:
        with RunLock("runs/sst2"):
            train()
    """

    FILE = ".lock"

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, self.FILE)
        self.model_dir = model_dir
        self.handle = None

    def __enter__(self):
        import fcntl

        os.makedirs(self.model_dir, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise UserError(
                f"--model_dir={self.model_dir} is in use by a training that is still running "
                f"(pid {owner}); wait for it to finish or stop it, or choose another --model_dir.")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        self.handle.close()  # closing releases the lock

