"""The memory allocator of Dask worker processes, set for refinement.

Dask's nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), so that glibc gives freed memory
back to the operating system. Setting any of glibc's thresholds fixes the
others too: the mmap threshold then stays at its 128 kB default instead of
growing with the program's allocations, and every array above it is mapped
and unmapped afresh, its pages faulted in again at each use. Refinement
allocates many arrays of a few MB per iteration, and ran 2.5 times slower in
such a process (4.2 against 10.6 galaxies per second on one thread,
``MALLOC_TRIM_THRESHOLD_=65536 python benchmarks/refinement_speed.py``).
`raise_mmap_threshold` puts the threshold back to 32 MiB, the ceiling of
glibc's own dynamic threshold, and leaves the trim threshold as Dask set it:
memory still goes back to the system from the top of the heap.
"""

import ctypes
import os
import sys

__all__ = ["MMAP_THRESHOLD", "raise_mmap_threshold"]

#: Allocations below this many bytes come from the heap once the threshold is raised
#: (glibc's largest dynamic mmap threshold on 64-bit systems).
MMAP_THRESHOLD = 32 * 2**20

#: ``M_MMAP_THRESHOLD`` of glibc's ``malloc.h``.
_M_MMAP_THRESHOLD = -3


def raise_mmap_threshold(environ=None):
    """Raise glibc's mmap threshold where a fixed trim threshold pinned it low.

    Does something only on Linux with glibc, where ``MALLOC_TRIM_THRESHOLD_``
    is set (as Dask sets it in its workers) and ``MALLOC_MMAP_THRESHOLD_``
    is not (a threshold chosen by the user is kept).

    Parameters
    ----------
    environ : mapping, optional
        The environment the process was started with (default
        `os.environ`).

    Returns
    -------
    raised : bool
        Whether the threshold was set to `MMAP_THRESHOLD`.

    Examples
    --------
    Outside a Dask worker (no trim threshold in the environment) nothing
    changes:

    >>> from astrokin.survey.allocator import raise_mmap_threshold
    >>> raise_mmap_threshold({})
    False
    """
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in env \
            or "MALLOC_MMAP_THRESHOLD_" in env:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False
