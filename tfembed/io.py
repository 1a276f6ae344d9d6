"""Writes that complete or leave no trace: a temporary file in the target's directory, renamed over
the target (``os.replace`` is atomic on one filesystem). A crash, a kill -9 or two workers writing
the same file never leave a half-written report, model or cache file behind.

SavedModel exports (``tfembed.export``) and teacher caches (``tfembed.distill.cache``) are
directories and follow the same rule with a temporary directory.
"""

import os
import uuid


def atomic_write(path, write_fn, mode: str = "w", fsync: bool = True) -> None:
    """Writes ``path`` completely or not at all: ``write_fn(f)`` fills a temporary file in the
    same directory, which is then renamed over ``path`` (``mode``: ``"w"`` or ``"wb"``).
    ``fsync=False`` skips the flush to disk (thousands of small files, e.g. a dataset export,
    where a power cut may lose the newest files but never leaves a partial one)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # os.open(..., 0o666) rather than mkstemp (always 0600), so the umask decides the mode as for
    # any file the run writes; O_EXCL + a random name keep concurrent writers apart.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(model, path) -> None:
    """``model.save(path)`` completely or not at all (a ``.keras`` file): the model is saved to
    a temporary file in the same directory, then renamed over ``path``. An interrupted save
    leaves the previous file, and workers of a multi-worker run saving the same model at once
    cannot interleave their bytes."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
