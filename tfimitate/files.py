"""Write a file so that readers see the old or the new content, never half of it.

Example:
    write_atomically("runs/sst2/experiment.json", json.dumps(values))
"""

import os
import uuid


def write_atomically(path, data):
    """Writes `data` (str as UTF-8, or bytes) to a hidden temporary file beside `path`,
    flushes it to disk and renames it over `path` (os.replace is atomic on POSIX); a
    failure or kill leaves `path` as it was. The file gets the usual umask permissions."""
    directory, name = os.path.split(os.path.abspath(path))
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
