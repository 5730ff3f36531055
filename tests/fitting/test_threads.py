"""`astrokin.fitting.threads`: work shared among threads, one torch thread per operation."""

import threading

import pytest

torch = pytest.importorskip("torch")

from astrokin.fitting.threads import cpu_workers, thread_map  # noqa: E402


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_items_run_in_worker_threads_with_one_torch_thread_each(two_torch_threads):
    barrier = threading.Barrier(2, timeout=30)

    def work(x):
        barrier.wait()  # both items at once: they cannot be run one after the other
        return x, threading.get_ident(), torch.get_num_threads(), float(torch.ones(x).sum())

    out = thread_map(work, [5, 3], workers=2)
    assert [o[0] for o in out] == [5, 3] and [o[3] for o in out] == [5.0, 3.0]
    assert len({o[1] for o in out}) == 2 and threading.get_ident() not in {o[1] for o in out}
    assert [o[2] for o in out] == [1, 1]
    assert torch.get_num_threads() == 2  # restored


def test_one_worker_runs_in_this_thread_and_leaves_torch_as_it_is(two_torch_threads):
    out = thread_map(lambda x: (threading.get_ident(), torch.get_num_threads()), [1, 2],
                     workers=1)
    assert out == [(threading.get_ident(), 2)] * 2


def test_an_exception_is_raised_and_the_threads_are_restored(two_torch_threads):
    def work(x):
        if x == 2:
            raise ValueError("galaxy 2 failed")
        return x

    with pytest.raises(ValueError, match="galaxy 2 failed"):
        thread_map(work, [1, 2, 3], workers=2)
    assert torch.get_num_threads() == 2


def test_workers_follow_torch_threads_on_a_cpu_only(two_torch_threads):
    assert cpu_workers("cpu", 10) == 2
    assert cpu_workers("cpu", 1) == 1
    assert cpu_workers(torch.device("cpu"), 0) == 1
    torch.set_num_threads(1)
    assert cpu_workers("cpu", 10) == 1
    torch.set_num_threads(2)
    assert cpu_workers("meta", 10) == 1
