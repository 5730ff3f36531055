"""Fixtures shared by all of astrokin's tests."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run torch on one intra-op thread.

    On a small shared CPU, torch's threads spin against other processes and slow
    these tiny networks down many times; one thread is both faster and
    deterministic.
    """
    try:
        import torch
    except ImportError:  # tests that need torch skip themselves
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
