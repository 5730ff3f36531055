"""Every bad input of `bad_inputs.cases` gets the documented exception with a message."""

import pytest

from . import bad_inputs

pytest.importorskip("torch")

#: Exception types that mean "failed deep inside numpy/torch", never acceptable.
FORBIDDEN = (IndexError, KeyError, ZeroDivisionError, AttributeError, FloatingPointError)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_inputs")


def _ids():
    with bad_inputs.in_temporary_directory():
        return [c.what for c in bad_inputs.cases()]


@pytest.mark.parametrize("index", range(len(_ids())), ids=_ids())
def test_bad_input_gets_a_clear_error(index, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    case = bad_inputs.cases()[index]
    kind, message = bad_inputs.outcome(case)
    assert kind is not None, f"{case.what}: accepted silently"
    assert not issubclass(kind, FORBIDDEN), f"{case.what}: {kind.__name__}: {message}"
    assert issubclass(kind, case.expect), (
        f"{case.what}: expected {[e.__name__ for e in case.expect]}, got "
        f"{kind.__name__}: {message}")
    assert len(message) > 20, f"{case.what}: message too short to help: {message!r}"
    assert case.mentions in message, f"{case.what}: the message does not name " \
        f"{case.mentions!r}: {message}"
