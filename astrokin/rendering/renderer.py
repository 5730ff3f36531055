"""Batched, differentiable moment-map renderer for disc models (torch)."""

import functools
import math

import numpy as np
import torch
from scipy import fft as sp_fft

from astrokin._validation import check_shape
from astrokin.beams import FWHM_TO_SIGMA

from .hankel import hankel_tables

__all__ = ["ACCELERATOR_RENDER_CELLS", "RENDER_CELLS", "DiskRenderer"]

#: Most transform cells (galaxies x folded orders x half-plane frequencies of
#: the FFT grid) rendered in one pass on a CPU, about 400 MB in float64;
#: larger batches are rendered in parts, which bounds the memory of rendering
#: large maps (a Jacobian of 500 x 500 maps renders 4 at a time).
RENDER_CELLS = 1_048_576
#: The same on an accelerator (a training batch of 1024 64x64 maps is one pass).
ACCELERATOR_RENDER_CELLS = 67_108_864



class DiskRenderer(torch.nn.Module):
    r"""Render moment maps of many discs at once, differentiably, in torch.

    The renderer is the decoder of astrokin's neural fitter. Given the
    parameters of ``B`` discs of one model class, it returns their moment-0
    and moment-1 maps of shape ``(B, ny, nx)`` as a telescope records them:
    averaged over each pixel and smeared by each galaxy's restoring beam.

    Parameters
    ----------
    model_class : type
        A `~astrokin.models.KinematicDiskModel` subclass; its
        ``surface_brightness`` and ``rotation_velocity`` are evaluated with
        ``xp=torch``.
    shape : tuple of int
        ``(ny, nx)`` of the maps.
    alias_order : int or "auto", optional
        How many orders of spatial frequencies beyond the Nyquist limit are
        folded back (aliased) into the pixel grid. 0 is enough when every
        beam is at least ~2 pixels FWHM; maps without a beam, with sharp
        features (small ``r_turn``, an edge-on thin disc) need 1. ``"auto"``
        (default) picks per galaxy: 0 where its beam's minor axis is at
        least 2 pixels, else 1, the two groups of a batch rendered apart
        (see :doc:`/rendering` for the measured errors).
    pad_factor : float, optional
        The FFT grid is this many times larger than the map, so that emission
        beyond the map edge does not wrap around into it. Default 2.
    dtype : torch.dtype, optional
        ``torch.float32`` (default) or ``torch.float64``.
    device : str or torch.device, optional
        Where to compute, e.g. ``"cpu"`` or ``"cuda"``.

    Notes
    -----
    Everything except the radial profiles is analytic in Fourier space, which
    makes the renderer exact for any inclination (including edge-on), disc
    thickness and beam, and cheap: ``O(B N^2 log N)``.

    1. The profiles are evaluated on fixed radial quadrature nodes and turned
       into Hankel transforms of order 0 (intensity) and 1 (intensity times
       velocity) by matrix products with cached tables
       (`astrokin.rendering.hankel`).
    2. A thin disc inclined by :math:`i` is its face-on image squeezed by
       :math:`\cos i` along the minor axis, so its transform at sky frequency
       :math:`(k_{maj}, k_{min})` is the face-on one at
       :math:`(k_{maj}, k_{min}\cos i)`; the PA is a rotation of frequencies.
    3. A disc of exponential scale height :math:`h` is the thin disc
       convolved along the minor axis with the projected vertical profile,
       a factor :math:`1/(1 + (2\pi h \sin i\, k_{min})^2)`.
    4. The pixel average is a factor :math:`\mathrm{sinc}(k_x)\mathrm{sinc}(k_y)`,
       the beam a Gaussian factor, the centre a phase ramp. Moments of a
       beam-smeared cube are ``B*mom0`` and ``B*(mom0 mom1) / B*mom0``, so
       both maps come from the same two transforms. The second moment
       (``moment2=True``) adds the order-0 transform of
       :math:`\Sigma(\sigma^2 + V^2\sin^2 i/2)` and the order-2 one of
       :math:`\Sigma V^2 \sin^2 i/2` (the :math:`\cos 2\phi` part of
       :math:`v_{\rm los}^2`): ``B*[mom0 (sigma^2 + v^2)] / B*mom0 - mom1^2``.
    5. The transform is sampled on the FFT grid with ``alias_order`` orders
       folded in (Poisson summation: sampling in space is periodising in
       frequency) and inverted with one ``irfft2``.

    Examples
    --------
    >>> import torch
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.rendering import DiskRenderer
    >>> renderer = DiskRenderer(ExponentialArctanDisk, (64, 64))
    >>> B = 8
    >>> params = {name: torch.full((B,), float(getattr(ExponentialArctanDisk, name).default))
    ...           for name in ExponentialArctanDisk.param_names}
    >>> params["inclination"] = torch.linspace(20.0, 90.0, B)
    >>> mom0, mom1 = renderer(params, pixel_scale=torch.ones(B),
    ...                       beam=torch.tensor([[2.0, 2.0, 0.0]]).expand(B, 3))
    >>> tuple(mom0.shape)
    (8, 64, 64)
    """

    def __init__(self, model_class, shape, *, alias_order="auto", pad_factor=2.0,
                 dtype=torch.float32, device="cpu"):
        super().__init__()
        shape = check_shape(shape)
        if isinstance(pad_factor, bool) or not isinstance(pad_factor, (int, float)) \
                or not math.isfinite(pad_factor) or pad_factor < 1:
            raise ValueError(f"pad_factor must be a finite number >= 1; got {pad_factor!r}.")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
        if alias_order != "auto" and (int(alias_order) != alias_order or alias_order < 0):
            raise ValueError(f"alias_order must be a non-negative integer or 'auto'; "
                             f"got {alias_order!r}.")
        self.model_class = model_class
        self.shape = shape
        self.alias_order = alias_order
        self.dtype = dtype
        self.device = torch.device(device)
        ny, nx = self.shape
        self.fft_shape = (sp_fft.next_fast_len(int(math.ceil(pad_factor * ny)), real=True),
                          sp_fft.next_fast_len(int(math.ceil(pad_factor * nx)), real=True))
        #: Relative mom0 level below which mom1 is undefined (set to v_sys here,
        #: NaN in `~astrokin.models.KinematicDiskModel.render`).
        self.emission_threshold = 1e-5 if dtype == torch.float32 else 1e-9
        self._grids = {}

    def _grid(self, order):
        """Frequencies, pixel-box factors and Hankel tables for one alias order.

        The FFT grid's frequencies are kept as a column ``kx`` ``(folds, 1,
        nx_half)`` and a row ``ky`` ``(folds, ny, 1)``: every factor that is
        separable in them (the pixel box, the centre's phase ramp) is made
        on those and only multiplied out once.
        """
        if order in self._grids:
            return self._grids[order]
        py, px = self.fft_shape
        m = np.arange(-order, order + 1)
        mx, my = np.meshgrid(m, m, indexing="ij")
        kx = np.fft.rfftfreq(px)[None, None, :] + mx.ravel()[:, None, None]
        ky = np.fft.fftfreq(py)[None, :, None] + my.ravel()[:, None, None]
        k_max = float(np.hypot(np.abs(kx).max(), np.abs(ky).max())) * 1.001
        r_max = 0.5 * math.hypot(py, px)
        tables = hankel_tables(round(r_max, 6), round(k_max, 6), 1.0 / (4.0 * max(py, px)))
        radii, w0, w1, w2 = tables.tensors(self.dtype, self.device)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype,  # noqa: E731
                                         device=self.device)
        grid = {"kx": as_t(kx), "ky": as_t(ky), "box_x": as_t(np.sinc(kx)),
                "box_y": as_t(np.sinc(ky)), "radii": radii, "w0": w0, "w1": w1, "w2": w2,
                "dk": tables.dk, "n_k": tables.n_k}
        self._grids[order] = grid
        return grid

    def _order(self, beam, pixel_scale):
        if self.alias_order != "auto":
            return int(self.alias_order)
        if beam is None:
            return 1
        bmin_px = torch.min(beam[:, 1] / pixel_scale).item()
        return 0 if bmin_px >= 2.0 else 1

    def forward(self, params, pixel_scale, beam=None, weights=None, weighted_mom0=False,
                moment2=False):
        """Render moment maps.

        Parameters
        ----------
        params : dict of str to `torch.Tensor`
            Every parameter of the model class, each of shape ``(B,)``, in
            canonical units (`~astrokin.models.KinematicDiskModel.canonical_unit`:
            arcsec, deg, km/s).
        pixel_scale : `torch.Tensor`
            ``(B,)`` pixel sizes in arcsec.
        beam : `torch.Tensor` or None
            ``(B, 3)``: FWHM major and minor axes (arcsec) and position angle
            (deg, North through East) of each galaxy's beam; None for none.
        weights : `torch.Tensor`, optional
            ``(B, ny, nx)`` positive factors on the intensity of each pixel
            *for the velocity map only* (data-weighted beam smearing): mom1 is
            then :math:`B * (w I v) / B * (w I)`, with :math:`I` the model's
            pixel-averaged intensity before the beam, as a clumpy disc whose
            intensity is :math:`w I` would give it. mom0 stays the model's
            own. Needs a beam; ignored without one (there is no smearing).
        weighted_mom0 : bool, optional
            With ``weights``, return :math:`B * (w I)` as mom0 (e.g. to
            iterate the weights until it matches an observed map).
        moment2 : bool, optional
            Also return the second moment (the line width): the intrinsic
            dispersion of the model (``velocity_dispersion``; 0 for models
            without one) added in quadrature to the spread of line-of-sight
            velocities within the beam and the pixel (see the notes).

        Returns
        -------
        mom0 : `torch.Tensor`
            ``(B, ny, nx)`` pixel-averaged, beam-convolved intensity (in the
            unit of ``amplitude``).
        mom1 : `torch.Tensor`
            ``(B, ny, nx)`` line-of-sight velocity in km/s; ``v_sys`` where
            the intensity is below ``emission_threshold`` times the peak.
        mom2 : `torch.Tensor`
            With ``moment2=True``: ``(B, ny, nx)`` the intensity-weighted
            velocity dispersion in km/s; 0 where mom1 is ``v_sys``.
        """
        mc = self.model_class
        missing = [n for n in mc.param_names if n not in params]
        if missing:
            raise KeyError(f"Missing parameters for {mc.__name__}: {missing}.")
        p = {n: torch.as_tensor(params[n], dtype=self.dtype, device=self.device).reshape(-1)
             for n in mc.param_names}
        ps = torch.as_tensor(pixel_scale, dtype=self.dtype, device=self.device).reshape(-1)
        n_gal = ps.shape[0]
        if n_gal == 0:
            raise ValueError("pixel_scale is empty: give one pixel size (arcsec) per galaxy.")
        if not bool(torch.all(torch.isfinite(ps) & (ps > 0))):
            raise ValueError(
                "pixel_scale must be finite and positive (arcsec per pixel); got "
                f"{ps.detach().cpu().numpy().tolist()}."
            )
        bad = [n for n, v in p.items() if v.shape[0] not in (1, n_gal)]
        if bad:
            raise ValueError(
                f"Parameters {bad} have {[p[n].shape[0] for n in bad]} values for "
                f"{n_gal} galaxies (pixel_scale has {n_gal}); give 1 or {n_gal} each."
            )
        p = {n: v.expand(n_gal) for n, v in p.items()}
        if beam is not None:
            beam = torch.as_tensor(beam, dtype=self.dtype, device=self.device)
            if beam.ndim not in (1, 2) or beam.shape[-1] != 3 \
                    or (beam.ndim == 2 and beam.shape[0] not in (1, n_gal)):
                raise ValueError(
                    f"beam must be (3,) or (B, 3) with B = {n_gal}: FWHM major, minor "
                    f"(arcsec), position angle (deg); got shape {tuple(beam.shape)}."
                )
            beam = beam.reshape(-1, 3).expand(n_gal, 3)
            if not bool(torch.all(torch.isfinite(beam))
                        and torch.all(beam[:, :2] > 0)):
                raise ValueError(
                    "beam axes must be finite and positive and its position angle finite; "
                    f"got {beam.detach().cpu().numpy().tolist()[:3]}"
                    f"{' ...' if n_gal > 3 else ''}."
                )
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=self.dtype, device=self.device)
        if self.alias_order == "auto" and beam is not None and n_gal > 1:
            coarse = beam[:, 1] / ps >= 2.0
            if bool(coarse.any()) and not bool(coarse.all()):
                # Galaxies with a beam of 2 px or more need no folded orders:
                # render them apart from the others (each galaxy's map then
                # depends on its own beam only, not on the rest of its batch).
                parts = [torch.nonzero(c).reshape(-1) for c in (coarse, ~coarse)]
                outs = [self._render_chunks({n: v[i] for n, v in p.items()}, ps[i], beam[i],
                                            None if weights is None else weights[i],
                                            weighted_mom0, moment2, order)
                        for i, order in zip(parts, (0, 1), strict=True)]
                return tuple(
                    torch.empty((n_gal,) + a.shape[1:], dtype=a.dtype, device=a.device)
                    .index_copy(0, parts[0], a).index_copy(0, parts[1], b)
                    for a, b in zip(*outs, strict=True))
        return self._render_chunks(p, ps, beam, weights, weighted_mom0, moment2,
                                   self._order(beam, ps))

    def _render_chunks(self, p, ps, beam, weights, weighted_mom0, moment2, order):
        """`_render` a batch at most `RENDER_CELLS` transform cells at a time."""
        n_gal = ps.shape[0]
        py, px = self.fft_shape
        budget = RENDER_CELLS if self.device.type == "cpu" else ACCELERATOR_RENDER_CELLS
        step = max(1, budget // ((2 * order + 1) ** 2 * py * (px // 2 + 1)))
        if n_gal <= step:
            return self._render(p, ps, beam, weights, weighted_mom0, moment2, order)
        outs = []
        for i in range(0, n_gal, step):
            rows = slice(i, i + step)
            outs.append(self._render({n: v[rows] for n, v in p.items()}, ps[rows],
                                     None if beam is None else beam[rows],
                                     None if weights is None else weights[rows],
                                     weighted_mom0, moment2, order))
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))

    def _render(self, p, ps, beam, weights, weighted_mom0, moment2, order):
        """`forward` on validated tensors, with ``order`` folded alias orders."""
        mc = self.model_class
        n_gal = ps.shape[0]
        g = self._grid(order)

        # 1. Profiles on the radial nodes (arcsec), Hankel transforms (pixel units).
        r_arc = g["radii"][None, :] * ps[:, None]
        sb = mc.surface_brightness(torch, r_arc, *[p[n][:, None] for n in mc.intensity_parameters])
        vel = mc.rotation_velocity(torch, r_arc, *[p[n][:, None] for n in mc.velocity_parameters])
        t0 = sb @ g["w0"]
        t1 = (sb * vel) @ g["w1"]
        tables = [t0, t1]
        if moment2:
            # I (sigma^2 + v_los^2), v_los = V sin i cos(phi): an order-0 transform
            # of Sigma (sigma^2 + V^2 sin^2 i / 2) and an order-2 one of
            # Sigma V^2 sin^2 i / 2 (the cos 2 phi part).
            half_sin2 = 0.5 * torch.sin(torch.deg2rad(p["inclination"]))[:, None] ** 2
            disp = mc.dispersion_profile(torch, r_arc, p)
            tables += [(sb * (disp * disp + half_sin2 * vel * vel)) @ g["w0"],
                       (sb * half_sin2 * vel * vel) @ g["w2"]]

        # 2. Geometry at every (folded) frequency. Shapes: (B, folds, ky, kx). The
        # quadratic forms in (kx, ky) of the disc's frequency, its thickness and
        # the beam are sums of a column, a row and a column times a row.
        def col(v):
            return v[:, None, None, None]

        def quadratic(xx, yy, xy, extra=0.0):
            """``xx kx^2 + yy ky^2 + xy kx ky + extra`` on the grid (per-galaxy coefficients)."""
            return torch.addcmul((col(xx) * kx2) + (col(yy) * ky2 + extra), col(xy) * kx, ky)

        kx, ky = g["kx"][None], g["ky"][None]
        kx2, ky2 = kx * kx, ky * ky
        inc = torch.deg2rad(p["inclination"])
        pa = torch.deg2rad(p["pa"])
        sin_i, cos_i = torch.sin(inc), torch.cos(inc)
        sin_pa, cos_pa = torch.sin(pa), torch.cos(pa)
        cos2_i = cos_i * cos_i
        # |(k_maj, k_min cos i)|, k_maj = -kx sin pa + ky cos pa, k_min = kx cos pa + ky sin pa;
        # the floor keeps the gradient of sqrt finite at k = 0 (and the square
        # positive where rounding would take an edge-on disc's below 0).
        k_disc = torch.sqrt(quadratic(sin_pa ** 2 + cos2_i * cos_pa ** 2,
                                      cos_pa ** 2 + cos2_i * sin_pa ** 2,
                                      2.0 * sin_pa * cos_pa * (cos2_i - 1.0)).clamp(min=1e-20))
        k_maj = torch.addcmul(col(-sin_pa) * kx, col(cos_pa), ky)
        transforms = _interp(k_disc, tables, g["dk"], g["n_k"])
        h0, h1 = transforms[:2]
        if moment2:
            # cos 2 psi of the face-on frequency (k_maj, k_min cos i), times k^2.
            k_min = torch.addcmul(col(cos_pa) * kx, col(sin_pa), ky)
            h2 = transforms[2] - 2.0 * math.pi * (k_maj ** 2 - (k_min * col(cos_i)) ** 2) \
                * transforms[3]

        # 3.-4. Thickness and beam: real factors common to both maps.
        t = (2.0 * math.pi * sin_i * p["z_scale"] / ps) ** 2
        intrinsic = torch.reciprocal(quadratic(t * cos_pa ** 2, t * sin_pa ** 2,
                                               2.0 * t * sin_pa * cos_pa, 1.0))
        common = intrinsic
        if beam is not None:
            s_maj = (beam[:, 0] / ps * FWHM_TO_SIGMA) ** 2
            s_min = (beam[:, 1] / ps * FWHM_TO_SIGMA) ** 2
            bpa = torch.deg2rad(beam[:, 2])
            sb_pa, cb_pa = torch.sin(bpa), torch.cos(bpa)
            c = -2.0 * math.pi ** 2
            beam_factor = torch.exp(quadratic(c * (s_maj * sb_pa ** 2 + s_min * cb_pa ** 2),
                                              c * (s_maj * cb_pa ** 2 + s_min * sb_pa ** 2),
                                              2.0 * c * sb_pa * cb_pa * (s_min - s_maj)))
            common = common * beam_factor

        # The pixel box, the amplitude and the centre's phase ramp exp(-2 pi i k.c)
        # (c in pixels from pixel (0, 0)) as a column times a row:
        # F0 = a0 e^{-i theta}, F1 = -2 pi i sin(i) k_maj h1 e^{-i theta}.
        ny, nx = self.shape
        cx = col((nx - 1) / 2.0 + p["x_0"] / ps)
        cy = col((ny - 1) / 2.0 + p["y_0"] / ps)
        def ramp(box, angle):
            return box[None] * torch.polar(torch.ones_like(angle), angle)

        ramp_x = ramp(g["box_x"], -2.0 * math.pi * kx * cx) * col(p["amplitude"])
        ramp_y = ramp(g["box_y"], -2.0 * math.pi * ky * cy)
        phase = ramp_x * ramp_y
        phase1 = (ramp_x * col(-2.0j * math.pi * sin_i)) * ramp_y

        def spectrum(real, ramp):
            """``real * ramp`` summed over the folds (real times complex, one pass)."""
            out = torch.view_as_complex(torch.view_as_real(ramp) * real[..., None])
            return out.sum(dim=1) if out.shape[1] > 1 else out[:, 0]

        py, px = self.fft_shape
        sky = functools.partial(_to_sky, size=(py, px), shape=(ny, nx))
        mom0 = sky(spectrum(common * h0, phase))
        if weights is not None and beam is not None:
            # The intensity and its velocity moment before the beam, weighted in
            # the sky, then smeared by the beam (its transfer on the FFT grid).
            i0 = torch.fft.irfft2(spectrum(intrinsic * h0, phase), s=(py, px))
            i1 = torch.fft.irfft2(spectrum(intrinsic * k_maj * h1, phase1), s=(py, px))
            w = torch.ones((n_gal, py, px), dtype=self.dtype, device=self.device)
            w[:, :ny, :nx] = weights
            transfer = beam_factor[:, beam_factor.shape[1] // 2]  # the unfolded frequencies
            num = sky(torch.fft.rfft2(i1 * w) * transfer)
            den = sky(torch.fft.rfft2(i0 * w) * transfer)
            if moment2:
                i2 = torch.fft.irfft2(spectrum(intrinsic * h2, phase), s=(py, px))
                num2 = sky(torch.fft.rfft2(i2 * w) * transfer)
        else:
            num = sky(spectrum(common * k_maj * h1, phase1))
            den = mom0
            if moment2:
                num2 = sky(spectrum(common * h2, phase))
        peak = den.detach().abs().amax(dim=(-2, -1), keepdim=True)
        valid = den > self.emission_threshold * peak
        safe = torch.where(valid, den, torch.ones_like(den))
        zero = torch.zeros_like(num)
        mean = torch.where(valid, num / safe, zero)
        mom1 = p["v_sys"][:, None, None] + mean
        out = (den if weighted_mom0 else mom0), mom1
        if not moment2:
            return out
        # sigma_obs^2 = B*[I (sigma^2 + v^2)] / B*I - mom1^2 (about v_sys, which
        # drops out); the small floor keeps the square root differentiable.
        variance = torch.where(valid, num2 / safe - mean * mean, zero)
        mom2 = torch.where(valid, torch.sqrt(variance.clamp(min=0.0) + 1e-12), zero)
        return (*out, mom2)


def _to_sky(spectrum, size, shape):
    """The ``shape`` corner of the real inverse transform (of ``size``) of a half-plane spectrum.

    The first pass (over rows) is cut to the rows kept before the second
    (over columns), which saves a third of the work of ``irfft2``.
    """
    rows = torch.fft.ifft(spectrum, n=size[0], dim=-2)[..., :shape[0], :]
    return torch.fft.irfft(rows, n=size[1], dim=-1)[..., :shape[1]]


def _interp(k, tables, dk, n_k):
    """Cubic (Catmull-Rom) interpolation of tables ``(B, n_k)`` at ``k`` (B, ...).

    The tables are even functions of k, so the point before k=0 mirrors k=dk.
    Cubic rather than linear interpolation keeps the error of the tabulation
    below 1e-4 of the peak at the table spacing used (see :doc:`/rendering`).
    Each table is first turned into the coefficients of its cubic on every
    interval, so that a frequency costs four gathers and Horner's rule.
    """
    shape = k.shape
    flat = (k / dk).reshape(shape[0], -1)
    i = torch.clamp(flat.detach().floor(), 0, n_k - 3)
    t = flat - i
    i = i.long()
    out = []
    for tab in tables:
        y0 = torch.cat([tab[:, 1:2], tab[:, :n_k - 3]], dim=1)
        y1, y2, y3 = tab[:, :n_k - 2], tab[:, 1:n_k - 1], tab[:, 2:n_k]
        c1 = 0.5 * (y2 - y0)
        c2 = y0 - 2.5 * y1 + 2.0 * y2 - 0.5 * y3
        c3 = 0.5 * (y3 - y0) + 1.5 * (y1 - y2)
        val = torch.gather(c3, 1, i)
        for c in (c2, c1, y1):
            val = torch.addcmul(torch.gather(c, 1, i), val, t)
        out.append(val.reshape(shape))
    return out
