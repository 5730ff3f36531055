"""The allocator of Dask worker processes: large arrays back on the heap."""

import json
import os
import subprocess
import sys

import pytest

from astrokin.survey.allocator import raise_mmap_threshold

# In a child started with Dask's worker environment: how many chunks glibc
# has mapped (mallinfo2's hblks) while a 1 MB array is alive, before and after.
_CHILD = """
import ctypes, json, numpy as np
from astrokin.survey.allocator import raise_mmap_threshold

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped_while_alive():
    before = libc.mallinfo2().hblks
    a = np.ones(2**17)  # 1 MB
    during = libc.mallinfo2().hblks
    del a
    return during - before

out = {"before": mapped_while_alive(), "raised": raise_mmap_threshold()}
out["after"] = mapped_while_alive()
print(json.dumps(out))
"""


def _glibc_with_mallinfo2():
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_with_mallinfo2(),
                    reason="needs glibc 2.33 or later")
def test_dask_worker_environment_maps_large_arrays_until_the_threshold_is_raised():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_TRIM_THRESHOLD_"] = "65536"  # as distributed's nanny starts its workers
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"before": 1, "raised": True, "after": 0}


def test_nothing_changes_without_a_trim_threshold_or_with_the_users_own_mmap_threshold():
    assert raise_mmap_threshold({}) is False
    assert raise_mmap_threshold({"MALLOC_TRIM_THRESHOLD_": "65536",
                                 "MALLOC_MMAP_THRESHOLD_": "1048576"}) is False
