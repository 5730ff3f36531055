"""Independent pieces of work shared among the CPU's threads.

Many of astrokin's batched operations are small: a refinement problem of
thirty 64x64 maps is a few hundred torch operations on arrays of a few
hundred kB each, too small for torch's own (intra-op) threads to share
well. Independent pieces of such work (the problems of a refinement, the
stacks of maps of the spurious-pixel rejection) are then faster run side by
side, one piece per thread, each operation on one thread: torch and numpy
release the GIL while they compute.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

__all__ = ["cpu_workers", "thread_map"]


def cpu_workers(device, n_items):
    """How many threads `thread_map` should use for ``n_items`` pieces of work on ``device``.

    ``torch.get_num_threads()`` on a CPU (at most one per piece), 1 on an
    accelerator (its kernels are queued in order: threads would only
    contend for the queue).

    Examples
    --------
    >>> from astrokin.fitting.threads import cpu_workers
    >>> cpu_workers("cuda", 10)
    1
    >>> cpu_workers("cpu", 1)
    1
    """
    import torch

    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), int(n_items)))


@contextlib.contextmanager
def _one_thread_per_operation(workers):
    """The intra-op threads of torch set to 1 while ``workers`` threads share the work."""
    import torch

    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if workers > 1:
            torch.set_num_threads(before)


def thread_map(func, items, workers):
    """``[func(item) for item in items]``, the items shared among ``workers`` threads.

    With more than one worker, torch runs each operation on one thread
    meanwhile (``torch.set_num_threads(1)``, restored afterwards) so that
    the workers do not oversubscribe the cores. Results are in the order of
    ``items``; the first exception raised by ``func`` is raised here.

    Parameters
    ----------
    func : callable
        Of one item; must not depend on the other items' results.
    items : sequence
        Best ordered from the largest piece of work to the smallest, so
        that the threads finish together.
    workers : int
        Threads (`cpu_workers`); 1 runs the items in turn, in this thread.

    Returns
    -------
    results : list

    Examples
    --------
    >>> from astrokin.fitting.threads import thread_map
    >>> thread_map(lambda x: x * x, [3, 2, 1], workers=2)
    [9, 4, 1]
    """
    items = list(items)
    workers = max(1, min(int(workers), len(items)))
    if workers == 1:
        return [func(item) for item in items]
    with _one_thread_per_operation(workers), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(func, items))
