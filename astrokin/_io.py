"""Safe file output: atomic writes that never overwrite by accident.

`atomic_path` hands a writer a temporary file in the destination's directory
and moves it into place with a single rename (`os.replace`) only once the
writer has finished, so a crash, a full disc or Ctrl-C mid-write never
leaves a truncated file under the final name, and an existing file is
replaced only when ``overwrite=True``.
"""

import contextlib
import os
import secrets

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path, *, overwrite=False):
    """Context manager: a temporary path to write, renamed to ``path`` on success.

    Parameters
    ----------
    path : str or path-like
        The final file name.
    overwrite : bool, optional
        Replace ``path`` if it exists. If False (the default) an existing
        ``path`` raises `FileExistsError`, before anything is written and
        again at the rename (so a file that appeared meanwhile is kept).

    Yields
    ------
    tmp : str
        A new, empty file in the same directory as ``path`` with the same
        suffix (so writers that pick a format from the name still can),
        created with the permissions a plain ``open`` would give. The writer
        may replace or rewrite it. It is removed if the block raises.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the directory of ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from astrokin._io import atomic_path
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = pathlib.Path(tmp).write_text("hello")
    >>> out.read_text()
    'hello'
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write to {path}: it is a directory.")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Cannot write {path}: the directory {os.path.dirname(path)} does not exist.")
    base = os.path.basename(path)
    stem, dot, suffix = base.rpartition(".")
    if not stem:  # no suffix, or a dot-file without one
        stem, dot, suffix = base, "", ""
    tmp = os.path.join(directory, f".{stem}.{secrets.token_hex(6)}.tmp{dot}{suffix}")
    # O_EXCL reserves the name; mode 0o666 lets the umask decide, as open() does.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_no_clobber(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _fsync(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rename_no_clobber(tmp, path):
    """Move ``tmp`` to ``path`` unless ``path`` exists (atomically where links work)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists (it appeared while writing); pass overwrite=True to "
            "replace it."
        ) from None
    except OSError:
        # No hard links here (some network or FAT file systems): check, then rename.
        if os.path.lexists(path):
            raise FileExistsError(
                f"{path} already exists; pass overwrite=True to replace it."
            ) from None
        os.replace(tmp, path)
        return
    os.remove(tmp)
