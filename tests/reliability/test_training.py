"""Training that goes wrong: NaN, exploding losses and Ctrl-C leave a usable fitter.

Real training throughout. The failures come from a disc model whose rotation
curve breaks after a set number of evaluations (one per optimiser step): it
turns NaN, explodes, or raises KeyboardInterrupt as Ctrl-C would, from
inside the training loop.
"""

import numpy as np
import pytest
from astropy import units as u

from astrokin.exceptions import TrainingDivergedError
from astrokin.fitting import NeuralKinematicFitter
from astrokin.models import ExponentialArctanDisk

from .helpers import BEAM, PIXEL_SCALE, finite_weights

torch = pytest.importorskip("torch")


class FlakyDisk(ExponentialArctanDisk):
    """An ExponentialArctanDisk whose rotation curve fails after ``break_after`` calls."""

    calls = 0
    break_after = None
    failure = "nan"

    @staticmethod
    def rotation_velocity(xp, r, r_turn, v_max):
        v = ExponentialArctanDisk.rotation_velocity(xp, r, r_turn, v_max)
        FlakyDisk.calls += 1
        if FlakyDisk.break_after is not None and FlakyDisk.calls > FlakyDisk.break_after:
            if FlakyDisk.failure == "interrupt":
                raise KeyboardInterrupt
            if FlakyDisk.failure == "explode":
                return v * 1e15
            return v * float("nan")
        return v


@pytest.fixture
def flaky():
    FlakyDisk.calls, FlakyDisk.break_after, FlakyDisk.failure = 0, None, "nan"
    yield FlakyDisk
    FlakyDisk.calls, FlakyDisk.break_after, FlakyDisk.failure = 0, None, "nan"


def _fitter(**kw):
    opts = dict(mode="blind", epochs=6, learning_rate=1e-3, mc_samples=8, seed=5,
                progress=False)
    opts.update(kw)
    return NeuralKinematicFitter(**opts)


def _weights(fitter):
    return {k: v.clone() for k, v in fitter.network.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_from_the_first_step_raises_and_leaves_the_fitter_as_it_was(maps, flaky):
    mom0, mom1 = maps
    flaky.break_after = 0
    fitter = _fitter()
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/6, batch 1: the loss became nan"):
        fitter.train(flaky(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert fitter.network is None  # nothing good was learnt: the fitter is unchanged
    assert fitter.training_info["stopped"] == "diverged"
    assert fitter.training_info["epochs_completed"] == 0
    # Solo fits raise the same error instead of returning garbage.
    with pytest.raises(TrainingDivergedError):
        _fitter(mode="solo")(flaky(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)


def test_nan_mid_training_keeps_exactly_the_last_good_weights(maps, flaky):
    mom0, mom1 = maps
    model = flaky()
    # Reference: the same seeded training, stopped cleanly after 3 steps (one galaxy:
    # one step per epoch). Its weights are those that gave step 4 its (finite) loss.
    reference = _fitter(epochs=3).train(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    flaky.calls, flaky.break_after = 0, 4
    fitter = _fitter(epochs=6)
    with pytest.raises(TrainingDivergedError, match="epoch 5/6") as info:
        fitter.train(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert info.value.epoch == 4 and np.isnan(info.value.loss)
    assert isinstance(info.value, RuntimeError)  # catchable as the built-in type too
    # Step 5 hit NaN; the weights after step 4 were never evaluated, so the last good
    # weights are those after step 3, i.e. the reference's.
    assert _same(_weights(fitter), _weights(reference))
    assert len(fitter.loss_history) == 4 and np.all(np.isfinite(fitter.loss_history))
    assert fitter.training_info == {"epochs_requested": 6, "epochs_completed": 4,
                                    "stopped": "diverged",
                                    "message": str(info.value)}
    # The fitter is usable: blind fits give finite results, and it can be saved.
    flaky.break_after = None
    fitted = fitter(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert np.isfinite(fitted.inclination.value) and finite_weights(fitter.network)


def test_exploding_loss_is_detected(maps, flaky):
    mom0, mom1 = maps
    flaky.break_after, flaky.failure = 2, "explode"
    fitter = _fitter()
    with pytest.raises(TrainingDivergedError, match="exploded"):
        fitter.train(flaky(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert fitter.network is not None and finite_weights(fitter.network)
    assert fitter.training_info["stopped"] == "diverged"


def test_divergence_in_a_warm_start_restores_the_starting_network(maps, flaky, tmp_path):
    mom0, mom1 = maps
    model = flaky()
    fitter = _fitter(epochs=3).train(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    before = _weights(fitter)
    fitter.warm_start, fitter.mode = True, "solo"
    flaky.break_after = flaky.calls  # the very next step fails
    with pytest.raises(TrainingDivergedError):
        fitter(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert _same(_weights(fitter), before)
    fitter.save(tmp_path / "still_good.pt")


def test_keyboard_interrupt_keeps_last_good_weights_and_propagates(maps, flaky, tmp_path):
    mom0, mom1 = maps
    model = flaky()
    reference = _fitter(epochs=2).train(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    flaky.calls, flaky.break_after, flaky.failure = 0, 3, "interrupt"
    fitter = _fitter(epochs=50)
    with pytest.raises(KeyboardInterrupt):
        fitter.train(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    # Interrupted while evaluating step 4: the last weights with a finite loss are
    # those after step 2 (they gave step 3's loss).
    assert _same(_weights(fitter), _weights(reference))
    assert fitter.training_info["stopped"] == "interrupted"
    assert fitter.training_info["epochs_completed"] == 3 and len(fitter.loss_history) == 3
    assert not fitter.network.training  # left in eval mode, ready for MC dropout
    flaky.break_after = None
    fitted = fitter(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    assert np.isfinite(fitted.pa.value)
    fitter.save(tmp_path / "interrupted.pt")
    loaded = NeuralKinematicFitter.load(tmp_path / "interrupted.pt", progress=False)
    assert _same(_weights(loaded), _weights(fitter))


def test_training_options_are_checked():
    for kw, kind, pattern in [
        (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
        (dict(learning_rate=-1e-3), ValueError, "learning_rate"),
        (dict(learning_rate="fast"), TypeError, "learning_rate"),
        (dict(lr_decay=0), ValueError, "lr_decay"),
        (dict(batch_size=None), ValueError, "batch_size"),
        (dict(epochs=2.5), ValueError, "epochs"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(device="gpu"), ValueError, "Unknown device 'gpu'"),
        (dict(device=3.5), TypeError, "device must be"),
        (dict(device="meta"), ValueError, "Unsupported device"),
    ]:
        with pytest.raises(kind, match=pattern):
            NeuralKinematicFitter(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable CUDA device"):
        NeuralKinematicFitter(device="cuda")
    with pytest.raises(ValueError, match="no usable CUDA device"):
        NeuralKinematicFitter.pretrained(device="cuda:1")


def test_model_checks_at_the_top_of_fit_and_train(maps):
    mom0, mom1 = maps
    fitter = _fitter(mode="solo", epochs=1)
    kw = dict(pixel_scale=PIXEL_SCALE, beam=BEAM)
    everything_fixed = ExponentialArctanDisk(
        fixed={n: True for n in ExponentialArctanDisk.param_names})
    with pytest.raises(ValueError, match="no free parameters"):
        fitter(everything_fixed, mom0, mom1, **kw)
    with pytest.raises(ValueError, match="no free parameters"):
        fitter.train(everything_fixed, mom0, mom1, **kw)
    outside = ExponentialArctanDisk(inclination=5 * u.deg, fixed={"inclination": True})
    with pytest.raises(ValueError, match=r"'inclination' = 5.0 deg is outside its bounds"):
        fitter(outside, mom0, mom1, **kw)
    with pytest.raises(ValueError, match="must be finite"):
        fitter(ExponentialArctanDisk(v_sys=np.nan * u.km / u.s), mom0, mom1, **kw)
    with pytest.raises(TypeError, match="an instance"):
        fitter(ExponentialArctanDisk, mom0, mom1, **kw)
    with pytest.raises(TypeError, match="astrokin disc model"):
        fitter.train("ExponentialArctanDisk", mom0, mom1, **kw)
    assert fitter.network is None
