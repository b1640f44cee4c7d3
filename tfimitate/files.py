"""Run files on any TensorFlow file system (local, gs://, s3://, hdfs://, ram://).

Every path a user gives (model_dir, export_dir, data, reports, predictions) goes
through these functions. A path with a scheme (`gs://bucket/run`) is handled by
`tf.io.gfile`; a local path by `os`, which is what `tf.io.gfile` does for it too,
but without importing TensorFlow, so that a wrong flag or a bad local file is
reported in about a second. TensorFlow is imported only for a path with a scheme.

Writes never leave half a file behind. Locally a file is written to a hidden
temporary beside it, fsynced and renamed over the target (atomic on POSIX). On
an object store the temporary is written, read back and compared, then renamed
(a copy there): the target object appears whole, as object writes do, but a
reader may briefly see the hidden temporary.

Example:
    write_atomically("gs://my-bucket/runs/sst2/experiment.json", json.dumps(values))
    if isfile("runs/sst2/experiment.json"): ...
"""

import builtins
import os
import shutil
import socket
import uuid

from absl import logging

from tfimitate.errors import UserError


def is_remote(path):
    """True for a path with a file-system scheme ('gs://b/x', 'ram://x'): tf.io.gfile's."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _ask(method, path):
    """tf.io.gfile's `method` on a path with a scheme; a store that does not answer (unknown
    scheme, no credentials, no network) is one UserError naming the path."""
    import tensorflow as tf

    try:
        return getattr(_gfile(), method)(path)
    except tf.errors.NotFoundError:
        raise
    except tf.errors.OpError as error:
        reason = " ".join(str(error.message).split())[:160]
        raise UserError(f"{path} cannot be reached ({reason}); check the scheme, the bucket "
                        "name and your credentials.") from None


def exists(path):
    return _ask("exists", path) if is_remote(path) else os.path.exists(path)


def isdir(path):
    # gfile's isdir answers False for a store it cannot reach; exists raises.
    return _ask("exists", path) and _ask("isdir", path) if is_remote(path) else os.path.isdir(path)


def isfile(path):
    if is_remote(path):
        return _ask("exists", path) and not _ask("isdir", path)
    return os.path.isfile(path)


def listdir(path):
    """The names in folder `path` (without a trailing '/', whatever the file system)."""
    if is_remote(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def walk(path):
    """Like os.walk (top-down; sorting `subdirs` in place orders the walk)."""
    return _gfile().walk(path) if is_remote(path) else os.walk(path)


def makedirs(path):
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def read_bytes(path):
    """The whole content of file `path`."""
    with (_gfile().GFile(path, "rb") if is_remote(path) else builtins.open(path, "rb")) as f:
        return f.read()


def remove(path):
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path):
    """Deletes a folder and everything in it; no error if it is already gone."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    import tensorflow as tf

    try:
        _gfile().rmtree(path)
    except tf.errors.NotFoundError:
        pass


def abspath(path):
    """An absolute local path; a path with a scheme is returned unchanged."""
    return path if is_remote(path) else os.path.abspath(path)


def dirname(path):
    """The parent folder; 'gs://b/runs/x' -> 'gs://b/runs'."""
    return os.path.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def same_file(a, b):
    """True if `a` and `b` both exist and are the same file."""
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/") and exists(a)
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def write_atomically(path, data):
    """Writes `data` (str as UTF-8, or bytes) to `path`; a failure or kill leaves `path`
    as it was. Creates the folder if needed; returns `path`.

    Locally: a hidden temporary beside `path`, flushed to disk and renamed over it
    (os.replace is atomic on POSIX); the file gets the usual umask permissions. With a
    scheme: the temporary is written, its size checked, then renamed.
    """
    if not isinstance(data, (str, bytes)):
        raise TypeError(f"write_atomically takes str or bytes, not {type(data).__name__}")
    return write_chunks_atomically(path, [data])


def write_chunks_atomically(path, chunks):
    """`write_atomically` for `chunks` (str or bytes each) written as they come, so the whole
    content is never held in memory; returns `path`.

    Example:
        write_chunks_atomically("predictions.jsonl", (json.dumps(r) + "\\n" for r in records))
    """
    remote = is_remote(path)
    directory, name = os.path.split(path.rstrip("/") if remote else os.path.abspath(path))
    makedirs(directory)
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    size = 0
    try:
        with (_gfile().GFile(temporary, "wb") if remote else
              os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")) as f:
            for chunk in chunks:
                payload = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                f.write(payload)
                size += len(payload)
            if not remote:
                f.flush()
                os.fsync(f.fileno())
        if remote:
            if _gfile().stat(temporary).length != size:
                raise OSError(f"{temporary} does not hold what was written; the store is failing.")
            _gfile().rename(temporary, path, overwrite=True)
        else:
            os.replace(temporary, path)
    except BaseException:
        if exists(temporary):
            remove(temporary)
        raise
    return path


def copy_tree(source, target, last=()):
    """Copies every file under folder `source` to the same place under `target` (any file
    systems), files named in `last` (e.g. 'saved_model.pb') after all others, then checks
    every copied size.

    This is how a checked folder is published on an object store, where a folder is only
    a name prefix and cannot be renamed in one step: readers may see `target` fill up,
    but what `last` names appears only once everything else is there. A copy stopped
    half-way is finished by copying again.

    Example:
        copy_tree("/tmp/export-1", "gs://bucket/models/sst2/1", last=("saved_model.pb",))
    """
    gfile = _gfile()
    names = []
    for directory, _, found in walk(source):
        relative = directory[len(source.rstrip("/")):].strip("/")
        names += [f"{relative}/{name}" if relative else name for name in found]
    names.sort(key=lambda name: (os.path.basename(name) in last, name))
    for name in names:
        gfile.makedirs(os.path.dirname(f"{target}/{name}"))
        gfile.copy(f"{source}/{name}", f"{target}/{name}", overwrite=True)
    for name in names:
        if gfile.stat(f"{target}/{name}").length != gfile.stat(f"{source}/{name}").length:
            raise OSError(f"{target}/{name} does not have the size of its original; "
                          "the store is failing.")


def check_reachable(path, flag):
    """Raises UserError unless the file system of `path` answers (scheme known, credentials
    and bucket fine); returns whether `path` exists."""
    import tensorflow as tf

    try:
        return tf.io.gfile.exists(path)
    except tf.errors.OpError as error:
        reason = " ".join(str(error.message).split())[:160]
        raise UserError(f"{flag}={path} cannot be reached ({reason}); check the scheme, the "
                        "bucket name and your credentials.") from None


def check_readable_file(path, flag):
    """Raises UserError unless `path` is an existing, readable file (not a folder)."""
    if is_remote(path):
        if not check_reachable(path, flag):
            raise UserError(f"{flag}={path}: file {path} does not exist; check the path.")
        if isdir(path):
            raise UserError(f"{flag}={path} is a directory; give a file in it.")
        return
    if os.path.isdir(path):
        raise UserError(f"{flag}={path} is a directory; give a file in it.")
    if not os.path.isfile(path):
        raise UserError(f"{flag}={path}: file {path} does not exist; check the path.")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag}={path}: file {path} is not readable; check its permissions.")


def check_writable_file(path, flag):
    """Raises UserError unless a file can be written at `path` (its folder may not exist yet)."""
    if is_remote(path):
        if check_reachable(path, flag) and isdir(path):
            raise UserError(f"{flag}={path} is a directory; give a file path.")
        return
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
    """Raises UserError unless `path` is (or can be created as) a writable folder.

    With a scheme, only that the store answers and `path` is no file is checked (write
    permission shows at the first write).
    """
    if not path:
        raise UserError(f"{flag} is empty; give a folder path.")
    if is_remote(path):
        if check_reachable(path, flag) and not isdir(path):
            raise UserError(f"{flag}={path} is a file, not a folder; choose another path.")
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path} is a file, not a folder; choose another path.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise UserError(f"{flag}={path}: {existing} is a file, not a folder; choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path}: folder {existing} is not writable; choose another path.")
    _try_creating(path, existing, flag)


def _try_creating(path, existing, flag):
    """Creates `path`'s missing folders and a file in it, then removes them all: os.access
    says yes where writing fails (/proc, /sys, read-only mounts)."""
    import tempfile

    created = []
    try:
        for folder in _missing_folders(os.path.abspath(path), os.path.abspath(existing)):
            try:
                os.mkdir(folder)
            except FileExistsError:  # another process made it meanwhile: it is not ours
                continue
            created.append(folder)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as error:
        raise UserError(f"{flag}={path}: cannot write there ({error.strerror}); choose another "
                        "path.") from None
    finally:
        for folder in reversed(created):
            os.rmdir(folder)


def _missing_folders(path, existing):
    """The folders from below `existing` down to `path`, top first."""
    folders = []
    while path != existing:
        folders.append(path)
        path = os.path.dirname(path)
    return folders[::-1]


class RunLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    Locally the OS drops the lock when its process dies (even by SIGKILL), so a stale
    lock file never blocks a later run. An object store has no locks: there the lock
    file only records the owner (host and pid), a second trainer is warned, not
    refused (it cannot tell a live owner from a preempted one), and the file is
    deleted at the end.

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
        if is_remote(self.model_dir):
            owner = f"{socket.gethostname()} {os.getpid()}"
            if isfile(self.path):
                logging.warning("%s names another trainer (%s); if it still runs, the two "
                                "will overwrite each other's checkpoints.", self.path,
                                read_bytes(self.path).decode("utf-8", "replace").strip())
            write_atomically(self.path, owner)
            return self
        import fcntl

        os.makedirs(self.model_dir, exist_ok=True)
        self.handle = builtins.open(self.path, "a+")
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
        if self.handle is None:
            if isfile(self.path):
                remove(self.path)
            return
        self.handle.close()  # closing releases the lock
