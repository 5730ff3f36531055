"""The fitter's value objects: fitting frames, prepared batches, trained networks.

Also the behaviour that goes with them: ``inplace=``, a fitter built on a
network trained elsewhere, and a network file that keeps its provenance
when it is loaded and saved again.
"""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.batch import PreparedBatch, TensorBatch
from astrokin.fitting.frames import FittingFrame, framed_fixed
from astrokin.fitting.parameters import fixed_values
from astrokin.fitting.preprocessing import Observation, parse_maps, prepare_batch, prepare_maps
from astrokin.fitting.trained import TrainedNetwork
from astrokin.models import ExponentialArctanDisk

from .conftest import BEAM, PIXEL_SCALE, TRUTHS, disk

torch = pytest.importorskip("torch")


def _off_centre_maps(shape=(50, 90), pa=120.0):
    """A small disc off the centre of a wide map: cut out, padded, and (with a WCS) mirrored."""
    truth = disk(inclination=50.0, pa=pa, r_scale=2.0, r_turn=1.0, v_max=200.0, v_sys=0.0,
                 x_0=6.0, y_0=-3.0)
    mom0, mom1 = truth.render(shape, PIXEL_SCALE, beam=BEAM)
    m0 = mom0.value.copy()
    m1 = mom1.value.copy()
    m1[m0 < 0.02 * m0.max()] = np.nan  # a clipped map, so the cut-out is small
    return m0, m1


def _east_right_hdus(m0, m1):
    """The same maps with East along +column (CDELT1 > 0): columns mirrored."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(m0.shape[1] + 1) / 2, (m0.shape[0] + 1) / 2]
    s = PIXEL_SCALE.to_value(u.deg)
    w.wcs.cdelt = [s, s]
    header = w.to_header()
    return (fits.PrimaryHDU(m0[:, ::-1].copy(), header),
            fits.PrimaryHDU(m1[:, ::-1].copy(), header))


@pytest.mark.parametrize("mirrored", [False, True])
def test_frames_map_offsets_and_angles_there_and_back(mirrored):
    m0, m1 = _off_centre_maps()
    maps = _east_right_hdus(m0, m1) if mirrored else (m0, m1)
    obs, batch, frames = prepare_maps(*maps, pixel_scale=PIXEL_SCALE, beam=BEAM)
    (frame,) = frames
    assert frame.shape != frame.full_shape  # the galaxy was cut out
    assert frame.flipped is mirrored
    for name, value in (("x_0", 6.0), ("y_0", -3.0), ("pa", 120.0)):
        inside = frame.from_input(name, value)
        assert frame.to_input(name, inside) == pytest.approx(value, abs=1e-12)
    # The galaxy's centre, seen on the 64x64 grid, is at the input map's pixel of
    # (x_0, y_0) = (6, -3) arcsec: mirrored in column when East is to the right.
    step = frame.pixel_scale * frame.side / frame.size
    xg = (frame.size - 1) / 2 + frame.from_input("x_0", 6.0) / step
    yg = (frame.size - 1) / 2 + frame.from_input("y_0", -3.0) / step
    x, y = frame.grid_to_input_pixels(xg, yg)
    ny, nx = frame.full_shape
    x_expected = (nx - 1) / 2 + 6.0 / frame.pixel_scale
    assert float(x) == pytest.approx(x_expected, abs=1e-9)
    assert float(y) == pytest.approx((ny - 1) / 2 - 3.0 / frame.pixel_scale, abs=1e-9)


def test_grid_to_input_pixels_is_the_frame_s_inverse_mapping():
    # The closed form of the inverse resampling (align_corners=False), padding,
    # mirroring and cut-out, written out independently of FittingFrame.
    obs = Observation(np.zeros((40, 30)), np.zeros((40, 30)), 0.7, None, flipped=True,
                      full_shape=(100, 120), offset=(11, 23))
    frame = FittingFrame.of(obs, side=40, pad_y=0, pad_x=5)
    xg, yg = np.meshgrid(np.linspace(-0.5, 63.5, 9), np.linspace(-0.5, 63.5, 7))
    x, y = frame.grid_to_input_pixels(xg, yg)
    xs = (xg + 0.5) * 40 / 64 - 0.5 - 5
    ys = (yg + 0.5) * 40 / 64 - 0.5
    np.testing.assert_allclose(x, (30 - 1) - xs + 23, atol=1e-12)
    np.testing.assert_allclose(y, ys + 11, atol=1e-12)
    with pytest.raises(ValueError, match="only .* have one"):
        frame.affine("inclination")


def test_fixed_values_go_into_each_galaxy_s_frame():
    m0, m1 = _off_centre_maps()
    model = ExponentialArctanDisk(pa=120 * u.deg, x_0=6 * u.arcsec,
                                  fixed={"pa": True, "x_0": True})
    _, _, frames = prepare_maps([m0, m0[:, :70]], [m1, m1[:, :70]], pixel_scale=PIXEL_SCALE,
                                beam=BEAM)
    framed = framed_fixed(fixed_values(model), model, frames)
    assert framed["x_0"].shape == (2, 1) and framed["pa"].shape == (2, 1)
    assert framed["y_0"] == 0.0  # free: stays a scalar
    for g, frame in enumerate(frames):
        assert frame.to_input("x_0", framed["x_0"][g, 0]) == pytest.approx(6.0)


def test_prepared_batches_select_concatenate_and_move_to_tensors():
    mom0, mom1 = disk(**TRUTHS[0]).render((64, 64), PIXEL_SCALE, beam=BEAM)
    batch = prepare_batch(parse_maps([mom0.value] * 3, [mom1] * 3, pixel_scale=PIXEL_SCALE,
                                     beam=[BEAM, None, BEAM]))
    assert isinstance(batch, PreparedBatch) and len(batch) == 3
    assert batch["mom0"] is batch.mom0  # read by name, as the dictionaries were
    with pytest.raises(KeyError):
        batch["nonsense"]
    both = PreparedBatch.concatenate([batch, batch.select([2])])
    assert len(both) == 4 and np.array_equal(both.beam[3], batch.beam[2])
    tensors = batch.to("cpu")
    assert isinstance(tensors, TensorBatch) and tensors.mom0.shape == (3, 1, 64, 64)
    assert tensors.mom0.dtype == torch.float32 and tensors.mask0.dtype == torch.float32
    assert torch.isnan(tensors.beam[1]).all() and not torch.isnan(tensors.beam[0]).any()
    assert prepare_batch(parse_maps(mom0.value, mom1, pixel_scale=PIXEL_SCALE)).to(
        "cpu").beam is None  # no galaxy has a beam
    assert len(tensors.select(torch.tensor([0, 2]))) == 2
    assert set(tensors.context) == {"half_width", "v_ref", "v_half"}


def test_a_fitter_built_on_a_trained_network(trained_fitter, rendered_stack, tmp_path):
    mom0, mom1 = rendered_stack
    trained = trained_fitter.trained
    assert isinstance(trained, TrainedNetwork)
    assert trained_fitter.network is trained.network and trained_fitter.layout is trained.layout
    calibrated = TrainedNetwork(trained.network, trained.layout, trained.fixed_values,
                                calibration={"v_max": 2.0}, refined_calibration={"v_max": 3.0},
                                metadata={"note": "built by hand"})
    kw = dict(pixel_scale=PIXEL_SCALE, beam=BEAM)
    for refine, factor in ((False, 2.0), (True, 3.0)):
        plain = NeuralKinematicFitter(mode="blind", mc_samples=200, seed=3, refine=refine,
                                      trained=TrainedNetwork(trained.network, trained.layout,
                                                             trained.fixed_values))
        other = NeuralKinematicFitter(mode="blind", mc_samples=200, seed=3, refine=refine,
                                      trained=calibrated)
        assert other.std_scale == {"v_max": 2.0} and other.refined_std_scale == {"v_max": 3.0}
        a = plain(ExponentialArctanDisk(), mom0[0], mom1[0], **kw)
        b = other(ExponentialArctanDisk(), mom0[0], mom1[0], **kw)
        assert b.inclination.value == a.inclination.value  # the same network, seed and maps
        # Each kind of error bar takes its own factors.
        assert b.stds["v_max"] == pytest.approx(factor * a.stds["v_max"])
    # Its provenance is saved with it, and kept when the file is loaded and saved again.
    other.save(tmp_path / "a.pt")
    again = NeuralKinematicFitter.load(tmp_path / "a.pt")
    assert again.metadata["note"] == "built by hand"
    assert again.std_scale == {"v_max": 2.0} and again.refined_std_scale == {"v_max": 3.0}
    again.save(tmp_path / "b.pt")
    assert NeuralKinematicFitter.load(tmp_path / "b.pt").metadata["note"] == "built by hand"
    with pytest.raises(TypeError, match="TrainedNetwork"):
        NeuralKinematicFitter(mode="blind", trained=trained.network)


def test_mc_summary_of_a_batch_is_what_a_fit_summarises(trained_fitter, rendered_stack):
    mom0, mom1 = rendered_stack
    kw = dict(pixel_scale=PIXEL_SCALE, beam=BEAM, cutout=False, reject_spurious=False)
    trained_fitter(ExponentialArctanDisk(), mom0, mom1, **kw)
    batch = prepare_batch(parse_maps(mom0, mom1, **kw))
    summary, names = trained_fitter.mc_summary(batch)
    # Centred 64x64 maps: the fitting frame is the input frame.
    for name in ("inclination", "v_max", "vsini"):
        np.testing.assert_allclose(summary.mean[:, names.index(name)],
                                   trained_fitter.fit_info["table"][name].value, rtol=1e-12)
    with pytest.raises(ValueError, match="needs a trained network"):
        NeuralKinematicFitter().mc_summary(batch)


def test_inplace_sets_the_fit_on_the_model_given(trained_fitter, rendered_stack):
    mom0, mom1 = rendered_stack
    kw = dict(pixel_scale=PIXEL_SCALE, beam=BEAM)
    model = ExponentialArctanDisk(v_sys=1000 * u.km / u.s, fixed={"v_sys": True})
    copy = trained_fitter(model, mom0[0], mom1[0], **kw)
    assert copy is not model and model.inclination.value == 45.0  # untouched by default
    same = trained_fitter(model, mom0[0], mom1[0], inplace=True, **kw)
    assert same is model
    assert model.inclination.value == copy.inclination.value
    assert model.v_sys.value == 1000.0 and model.stds["v_max"] == copy.stds["v_max"]
    with pytest.raises(ValueError, match="inplace=True fits one galaxy"):
        trained_fitter(ExponentialArctanDisk(), mom0, mom1, inplace=True, **kw)
