"""Batched, differentiable moment-map renderer for disc models (torch)."""

import functools
import math

import numpy as np
import torch
from scipy import fft as sp_fft

from astrokin._validation import check_shape
from astrokin.beams import FWHM_TO_SIGMA

from .hankel import hankel_tables

__all__ = ["ACCELERATOR_RENDER_CELLS", "FOLDED_PARTS", "PROFILE_STEP", "RENDER_CELLS",
           "DiskRenderer"]

#: Most transform cells (galaxies x half-plane frequencies of the FFT grid)
#: rendered in one pass on a CPU, and `FOLDED_PARTS` times as many with the
#: folded orders counted; larger batches are rendered in parts. Parts of
#: 32 maps of 64 x 64 (128 x 65 cells each) stay in the CPU's caches and
#: render 1.4 times faster per map than 126 at a time; with the 9 folds of
#: order 1, parts of 14 are faster than of 3 (their backward pass most:
#: 1.5 times). The memory of rendering large maps stays bounded (500 x 500
#: maps render one at a time).
RENDER_CELLS = 262_144
#: See `RENDER_CELLS`.
FOLDED_PARTS = 4
#: The same on an accelerator (a training batch of 1024 64x64 maps is one pass).
ACCELERATOR_RENDER_CELLS = 67_108_864
#: Relative step of the central differences of the profiles in `DiskRenderer.linearize`.
PROFILE_STEP = 1e-5



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

        The FFT grid's frequencies are kept as ``kx`` ``(folds, nx_half, 1)``
        and ``ky`` ``(folds, 1, ny)``: every factor that is separable in them
        (the pixel box, the centre's phase ramp) is made on those and only
        multiplied out once. The spectra are laid out ``(.., kx, ky)``, so
        that the inverse transform's first pass (over ky) runs along
        contiguous memory: along strided memory it is 1.4 times slower.
        """
        if order in self._grids:
            return self._grids[order]
        py, px = self.fft_shape
        m = np.arange(-order, order + 1)
        mx, my = np.meshgrid(m, m, indexing="ij")
        kx = np.fft.rfftfreq(px)[None, :, None] + mx.ravel()[:, None, None]
        ky = np.fft.fftfreq(py)[None, None, :] + my.ravel()[:, None, None]
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
        p, ps, beam, weights = self._inputs(params, pixel_scale, beam, weights)

        def render(p, ps, beam, weights, order):
            return self._render(p, ps, beam, weights, weighted_mom0, moment2, order)

        return self._by_order(render, p, ps, beam, weights)

    def linearize(self, params, pixel_scale, beam=None, wrt=()):
        r"""Moment maps and their exact derivatives with respect to parameters.

        The derivatives of the rendered maps (those of `forward`, without
        data weights or the second moment) by the chain rule through the
        renderer's own analytic steps: a centre shifts the phase ramp, a
        profile parameter changes the Hankel tables (central differences of
        the profiles on the radial nodes, `PROFILE_STEP`), the
        inclination, PA and scale height move the disc's frequencies and
        thickness factor (through the slope of the tables' interpolant).
        The geometry is shared with the maps, so a column costs less than a
        render: a least-squares fit's Jacobian is exact, as fast as by
        finite differences without folded orders and faster with them. A
        float32 renderer's derivatives are float64's to within ~5e-4 of a
        column's largest value where mom0 is above 1% of its peak (the
        profiles' differences are taken in float64).

        Parameters
        ----------
        params, pixel_scale, beam
            As for `forward`.
        wrt : sequence of str
            Parameters of the model class to differentiate by (canonical
            units: deg, arcsec, km/s).

        Returns
        -------
        mom0, mom1 : `torch.Tensor`
            ``(B, ny, nx)``: the maps of `forward`.
        d_mom0, d_mom1 : `torch.Tensor`
            ``(B, len(wrt), ny, nx)``: their derivatives by each of ``wrt``
            (mom1's is 0 where mom1 is undefined).

        Examples
        --------
        >>> import torch
        >>> from astrokin.models import ExponentialArctanDisk
        >>> from astrokin.rendering import DiskRenderer
        >>> renderer = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64)
        >>> params = {name: torch.tensor([float(getattr(ExponentialArctanDisk, name).default)],
        ...                              dtype=torch.float64)
        ...           for name in ExponentialArctanDisk.param_names}
        >>> beam = torch.tensor([[3.0, 3.0, 0.0]], dtype=torch.float64)
        >>> mom0, mom1, d0, d1 = renderer.linearize(params, torch.ones(1), beam,
        ...                                         wrt=["x_0", "v_max"])
        >>> tuple(d0.shape)
        (1, 2, 32, 32)
        >>> float(d0[0, 1].abs().max())  # v_max does not change mom0
        0.0
        """
        mc = self.model_class
        wrt = list(wrt)
        unknown = [n for n in wrt if n not in mc.param_names]
        if unknown:
            raise ValueError(f"wrt names {unknown}, which are not parameters of "
                             f"{mc.__name__} (parameters: {mc.param_names}).")
        p, ps, beam, _ = self._inputs(params, pixel_scale, beam, None)

        def render(p, ps, beam, weights, order):
            return self._linearized(p, ps, beam, order, wrt)

        return self._by_order(render, p, ps, beam, None)

    def _inputs(self, params, pixel_scale, beam, weights):
        """The inputs of `forward` checked and as tensors of the renderer's dtype."""
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
        return p, ps, beam, weights

    def _by_order(self, render, p, ps, beam, weights):
        """``render(p, ps, beam, weights, order)`` of a batch, in parts by alias order.

        With ``alias_order="auto"``, galaxies with a beam of 2 px or more
        need no folded orders: they are rendered apart from the others (each
        galaxy's maps then depend on its own beam only, not on the rest of
        its batch).
        """
        n_gal = ps.shape[0]
        if self.alias_order == "auto" and beam is not None and n_gal > 1:
            coarse = beam[:, 1] / ps >= 2.0
            if bool(coarse.any()) and not bool(coarse.all()):
                parts = [torch.nonzero(c).reshape(-1) for c in (coarse, ~coarse)]
                outs = [self._render_chunks(render, {n: v[i] for n, v in p.items()}, ps[i],
                                            beam[i], None if weights is None else weights[i],
                                            order)
                        for i, order in zip(parts, (0, 1), strict=True)]
                return tuple(
                    torch.empty((n_gal,) + a.shape[1:], dtype=a.dtype, device=a.device)
                    .index_copy(0, parts[0], a).index_copy(0, parts[1], b)
                    for a, b in zip(*outs, strict=True))
        return self._render_chunks(render, p, ps, beam, weights, self._order(beam, ps))

    def _render_chunks(self, render, p, ps, beam, weights, order):
        """``render`` a batch at most `RENDER_CELLS` transform cells at a time."""
        n_gal = ps.shape[0]
        py, px = self.fft_shape
        cells = py * (px // 2 + 1)
        folded = (2 * order + 1) ** 2 * cells
        if self.device.type == "cpu":
            step = max(1, min(RENDER_CELLS // cells, FOLDED_PARTS * RENDER_CELLS // folded))
        else:
            step = max(1, ACCELERATOR_RENDER_CELLS // folded)
        if n_gal <= step:
            return render(p, ps, beam, weights, order)
        step = -(-n_gal // -(-n_gal // step))  # parts of equal size (not 31 + 1)
        outs = []
        for i in range(0, n_gal, step):
            rows = slice(i, i + step)
            outs.append(render({n: v[rows] for n, v in p.items()}, ps[rows],
                               None if beam is None else beam[rows],
                               None if weights is None else weights[rows], order))
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))

    def _profiles(self, p, ps, g):
        """The surface brightness and rotation curve ``(B, n_r)`` on the radial nodes."""
        mc = self.model_class
        r_arc = g["radii"][None, :] * ps[:, None]
        sb = mc.surface_brightness(torch, r_arc, *[p[n][:, None] for n in mc.intensity_parameters])
        vel = mc.rotation_velocity(torch, r_arc, *[p[n][:, None] for n in mc.velocity_parameters])
        return sb, vel, r_arc

    def _geometry(self, p, ps, beam, g):
        r"""The factors of the transforms at every (folded) frequency, shared by the maps.

        Shapes broadcast to ``(B, folds, kx, ky)``. The quadratic forms in
        (kx, ky) of the disc's frequency, its thickness and the beam are sums
        of a column, a row and a column times a row. ``phase`` is the pixel
        box times the centre's phase ramp :math:`e^{-2\pi i k\cdot c}` (c in
        pixels from pixel (0, 0)), a column times a row.
        """
        def col(v):
            return v[:, None, None, None]

        kx, ky = g["kx"][None], g["ky"][None]
        kx2, ky2 = kx * kx, ky * ky

        def quadratic(xx, yy, xy, extra=0.0):
            """``xx kx^2 + yy ky^2 + xy kx ky + extra`` on the grid (per-galaxy coefficients)."""
            return torch.addcmul((col(xx) * kx2) + (col(yy) * ky2 + extra), col(xy) * kx, ky)

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
        # 3.-4. Thickness and beam: real factors common to both maps.
        t = (2.0 * math.pi * sin_i * p["z_scale"] / ps) ** 2
        intrinsic = torch.reciprocal(quadratic(t * cos_pa ** 2, t * sin_pa ** 2,
                                               2.0 * t * sin_pa * cos_pa, 1.0))
        common, beam_factor = intrinsic, None
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
        ny, nx = self.shape
        cx = col((nx - 1) / 2.0 + p["x_0"] / ps)
        cy = col((ny - 1) / 2.0 + p["y_0"] / ps)

        def ramp(box, angle):
            return box[None] * torch.polar(torch.ones_like(angle), angle)

        phase = ramp(g["box_x"], -2.0 * math.pi * kx * cx) * ramp(g["box_y"],
                                                                  -2.0 * math.pi * ky * cy)
        return dict(col=col, kx=kx, ky=ky, sin_i=sin_i, cos_i=cos_i, sin_pa=sin_pa,
                    cos_pa=cos_pa, t=t, k_disc=k_disc, k_maj=k_maj, intrinsic=intrinsic,
                    beam_factor=beam_factor, common=common, phase=phase)

    def _render(self, p, ps, beam, weights, weighted_mom0, moment2, order):
        """`forward` on validated tensors, with ``order`` folded alias orders."""
        mc = self.model_class
        n_gal = ps.shape[0]
        g = self._grid(order)

        # 1. Profiles on the radial nodes (arcsec), Hankel transforms (pixel units).
        sb, vel, r_arc = self._profiles(p, ps, g)
        tables = [sb @ g["w0"], (sb * vel) @ g["w1"]]
        if moment2:
            # I (sigma^2 + v_los^2), v_los = V sin i cos(phi): an order-0 transform
            # of Sigma (sigma^2 + V^2 sin^2 i / 2) and an order-2 one of
            # Sigma V^2 sin^2 i / 2 (the cos 2 phi part).
            half_sin2 = 0.5 * torch.sin(torch.deg2rad(p["inclination"]))[:, None] ** 2
            disp = mc.dispersion_profile(torch, r_arc, p)
            tables += [(sb * (disp * disp + half_sin2 * vel * vel)) @ g["w0"],
                       (sb * half_sin2 * vel * vel) @ g["w2"]]

        # 2.-4. Geometry, thickness, beam, pixel box and centre at every frequency:
        # F0 = a0 e^{-i theta}, F1 = -2 pi i sin(i) k_maj h1 e^{-i theta}.
        geo = self._geometry(p, ps, beam, g)
        col, kx, ky, k_maj = geo["col"], geo["kx"], geo["ky"], geo["k_maj"]
        transforms = _interp(geo["k_disc"], tables, g["dk"], g["n_k"])
        h0, h1 = transforms[:2]
        if moment2:
            # cos 2 psi of the face-on frequency (k_maj, k_min cos i), times k^2.
            k_min = torch.addcmul(col(geo["cos_pa"]) * kx, col(geo["sin_pa"]), ky)
            h2 = transforms[2] - 2.0 * math.pi * (k_maj ** 2 - (k_min * col(geo["cos_i"])) ** 2) \
                * transforms[3]
        intrinsic, beam_factor, common = geo["intrinsic"], geo["beam_factor"], geo["common"]
        phase = geo["phase"]
        phase1 = phase * col(-2.0j * math.pi * geo["sin_i"])
        amplitude = p["amplitude"][:, None, None]

        py, px = self.fft_shape
        ny, nx = self.shape
        sky = functools.partial(_to_sky, size=(py, px), shape=(ny, nx))
        mom0 = sky(_spectrum(common * h0, phase)) * amplitude
        if weights is not None and beam is not None:
            # The intensity and its velocity moment before the beam, weighted in
            # the sky, then smeared by the beam (its transfer on the FFT grid).
            def image(real, ramp):
                return torch.fft.irfft2(_spectrum(real, ramp).transpose(-1, -2), s=(py, px))

            def smeared(image):
                return sky(torch.fft.rfft2(image * w).transpose(-1, -2) * transfer) * amplitude

            i0 = image(intrinsic * h0, phase)
            i1 = image(intrinsic * k_maj * h1, phase1)
            w = torch.ones((n_gal, py, px), dtype=self.dtype, device=self.device)
            w[:, :ny, :nx] = weights
            transfer = beam_factor[:, beam_factor.shape[1] // 2]  # the unfolded frequencies
            num, den = smeared(i1), smeared(i0)
            if moment2:
                num2 = smeared(image(intrinsic * h2, phase))
        else:
            num = sky(_spectrum(common * k_maj * h1, phase1)) * amplitude
            den = mom0
            if moment2:
                num2 = sky(_spectrum(common * h2, phase)) * amplitude
        valid, mean = _velocity_mean(num, den, self.emission_threshold)
        mom1 = p["v_sys"][:, None, None] + mean
        out = (den if weighted_mom0 else mom0), mom1
        if not moment2:
            return out
        # sigma_obs^2 = B*[I (sigma^2 + v^2)] / B*I - mom1^2 (about v_sys, which
        # drops out); the small floor keeps the square root differentiable.
        zero = torch.zeros_like(num)
        variance = torch.where(valid, num2 / torch.where(valid, den, torch.ones_like(den))
                               - mean * mean, zero)
        mom2 = torch.where(valid, torch.sqrt(variance.clamp(min=0.0) + 1e-12), zero)
        return (*out, mom2)

    def _linearized(self, p, ps, beam, order, wrt):
        r"""`linearize` on validated tensors, with ``order`` folded alias orders.

        With :math:`P` the pixel box and phase ramp and :math:`Q = -iP`, the
        two transforms are :math:`S_0 = \sum A_0 P`, :math:`A_0 = c\,h_0`, and
        :math:`S_1 = \sum A_1 Q`, :math:`A_1 = 2\pi \sin i\, c\, k_{maj} h_1`
        (c: thickness times beam; sums over the folded orders), and every
        derivative is a real factor times :math:`P` or :math:`Q`.
        """
        mc = self.model_class
        g = self._grid(order)
        sb, vel, _ = self._profiles(p, ps, g)
        tables = [sb @ g["w0"], (sb * vel) @ g["w1"]]
        profile = [n for n in wrt if n in mc.intensity_parameters + mc.velocity_parameters]
        table_of = {}  # (parameter, 0 for the intensity's derivative or 1) -> its table
        if profile:
            # The profiles' derivatives on the nodes, by central differences of
            # all of them in one evaluation (to ~1e-10: the profiles are cheap
            # next to the transforms, which are then exact). In float64 for a
            # float32 renderer too: a difference of float32 profiles over a
            # step of 1e-5 would err by a percent.
            m, k = ps.shape[0], len(profile)
            wide = torch.float64
            moved = {n: v.to(wide).repeat(2 * k) for n, v in p.items()}
            steps = []
            for j, n in enumerate(profile):
                h = PROFILE_STEP * p[n].to(wide).abs().clamp(min=1e-3)
                moved[n] = moved[n].clone()
                moved[n][2 * j * m:(2 * j + 1) * m] += h
                moved[n][(2 * j + 1) * m:(2 * j + 2) * m] -= h
                steps.append(2.0 * h)
            sb_m, vel_m, _ = self._profiles(moved, ps.to(wide).repeat(2 * k),
                                            {"radii": g["radii"].to(wide)})
            step = torch.stack(steps)[:, :, None]
            sb_m = sb_m.reshape(k, 2, m, -1)
            sv_m = (sb_m * vel_m.reshape(k, 2, m, -1))
            # (A parameter of the rotation curve alone leaves the intensity, and so
            # mom0's transform, as it is: that derivative is zero, not transformed.)
            bright = [j for j, n in enumerate(profile) if n in mc.intensity_parameters]
            dsb = ((sb_m[bright, 0] - sb_m[bright, 1]) / step[bright]).to(self.dtype)
            dsb = dsb.reshape(len(bright) * m, sb_m.shape[-1]) @ g["w0"]
            dsv = ((sv_m[:, 0] - sv_m[:, 1]) / step).to(self.dtype).reshape(k * m, -1) @ g["w1"]
            for i, j in enumerate(bright):
                table_of[(profile[j], 0)] = len(tables)
                tables.append(dsb[i * m:(i + 1) * m])
            for j, n in enumerate(profile):
                table_of[(n, 1)] = len(tables)
                tables.append(dsv[j * m:(j + 1) * m])
        geo = self._geometry(p, ps, beam, g)
        col, kx, ky, k_maj, k_disc = (geo[k] for k in ("col", "kx", "ky", "k_maj", "k_disc"))
        values, slopes = _interp(k_disc, tables, g["dk"], g["n_k"], slopes=2)
        h0, h1 = values[:2]
        # (The amplitude is carried in the factor common to every transform.)
        amplitude = col(p["amplitude"])
        intrinsic = geo["intrinsic"]
        common = geo["common"] * amplitude
        beam_factor = amplitude if geo["beam_factor"] is None else geo["beam_factor"] * amplitude
        sin_i, cos_i = col(geo["sin_i"]), col(geo["cos_i"])
        two_pi_sin = 2.0 * math.pi * sin_i
        k_min = torch.addcmul(col(geo["cos_pa"]) * kx, col(geo["sin_pa"]), ky)
        t = col(geo["t"])
        a0 = common * h0
        m1 = common * k_maj * h1  # A_1 / (2 pi sin i)
        deg = math.pi / 180.0
        # Each quantity is (real factor, "P" or "Q"): the maps, then the derivatives.
        terms = [(a0, "P"), (two_pi_sin * m1, "Q")]
        for n in wrt:
            if n in ("x_0", "y_0"):
                # d/dc of e^{-2 pi i k c}, c = x_0 / ps: -2 pi i k / ps
                shift = 2.0 * math.pi * (kx if n == "x_0" else ky) / col(ps)
                terms += [(a0 * shift, "Q"), (-(two_pi_sin * m1) * shift, "P")]
            elif n in ("inclination", "pa", "z_scale"):
                if n == "inclination":
                    dk = -(cos_i * sin_i * deg) * k_min * k_min / k_disc
                    dt = 2.0 * (2.0 * math.pi * col(p["z_scale"] / ps)) ** 2 * sin_i * cos_i \
                        * deg
                    d_intr = -intrinsic * intrinsic * k_min * k_min * dt
                elif n == "pa":
                    dk = -(sin_i * sin_i * deg) * k_maj * k_min / k_disc
                    d_intr = -(2.0 * deg) * t * intrinsic * intrinsic * k_min * k_maj
                else:
                    dk = None
                    dt = 2.0 * (2.0 * math.pi * sin_i / col(ps)) ** 2 * col(p["z_scale"])
                    d_intr = -intrinsic * intrinsic * k_min * k_min * dt
                d_common = d_intr * beam_factor
                d0 = d_common * h0
                d1 = d_common * k_maj * h1
                if dk is not None:
                    d0 = d0 + common * slopes[0] * dk
                    d1 = d1 + common * k_maj * slopes[1] * dk
                if n == "pa":
                    d1 = d1 - (deg * common) * k_min * h1
                d1 = two_pi_sin * d1
                if n == "inclination":
                    d1 = d1 + (2.0 * math.pi * deg) * cos_i * m1
                terms += [(d0, "P"), (d1, "Q")]
            elif n in profile:
                j0, j1 = table_of.get((n, 0)), table_of[(n, 1)]
                terms += [(None if j0 is None else common * values[j0], "P"),
                          (two_pi_sin * common * k_maj * values[j1], "Q")]
            else:  # amplitude, v_sys, dispersion: not in the transforms' shapes
                terms += [(None, "P"), (None, "Q")]
        phase = geo["phase"]
        ramps = {"P": phase, "Q": torch.view_as_complex(
            torch.stack([torch.view_as_real(phase)[..., 1],
                         -torch.view_as_real(phase)[..., 0]], dim=-1))}
        py, px = self.fft_shape
        ny, nx = self.shape
        # (One transform at a time: a stack of them all would be far larger
        # than the CPU's caches, and than what the allocator keeps for reuse.)
        zero = torch.zeros((ps.shape[0], ny, nx), dtype=self.dtype, device=self.device)
        maps = torch.stack([zero if a is None else
                            _to_sky(_spectrum(a.expand(phase.shape), ramps[r]), size=(py, px),
                                    shape=(ny, nx)) for a, r in terms], dim=1)
        mom0, num = maps[:, 0], maps[:, 1]
        valid, mean = _velocity_mean(num, mom0, self.emission_threshold)
        mom1 = p["v_sys"][:, None, None] + mean
        d_mom0, d_num = maps[:, 2::2], maps[:, 3::2]
        safe = torch.where(valid, mom0, torch.ones_like(mom0))[:, None]
        d_mom1 = torch.where(valid[:, None], (d_num - mean[:, None] * d_mom0) / safe,
                             torch.zeros_like(d_num))
        for k, n in enumerate(wrt):
            if n == "amplitude":
                d_mom0[:, k] = mom0 / amplitude[:, 0]  # (mom1 does not depend on it)
            elif n == "v_sys":
                d_mom1[:, k] = 1.0
        return mom0, mom1, d_mom0, d_mom1


def _spectrum(real, ramp):
    """``real * ramp`` summed over the folds (real times complex, one pass)."""
    out = torch.view_as_complex(torch.view_as_real(ramp) * real[..., None])
    return out.sum(dim=1) if out.shape[1] > 1 else out[:, 0]


def _velocity_mean(num, den, threshold):
    """Where mom0 is above ``threshold`` of its peak, and ``num / den`` there (else 0)."""
    peak = den.detach().abs().amax(dim=(-2, -1), keepdim=True)
    valid = den > threshold * peak
    safe = torch.where(valid, den, torch.ones_like(den))
    return valid, torch.where(valid, num / safe, torch.zeros_like(num))


def _to_sky(spectrum, size, shape):
    """The ``shape`` corner of the real inverse transform (of ``size``) of a half-plane spectrum.

    The spectrum is laid out ``(..., kx, ky)``. The first pass (over ky,
    contiguous) is cut to the rows kept before the second (over kx), which
    saves a third of the work of ``irfft2``.
    """
    rows = torch.fft.ifft(spectrum, n=size[0], dim=-1)[..., :shape[0]]
    return torch.fft.irfft(rows.transpose(-1, -2), n=size[1], dim=-1)[..., :shape[1]]


def _interp(k, tables, dk, n_k, slopes=0):
    """Cubic (Catmull-Rom) interpolation of tables ``(B, n_k)`` at ``k`` (B, ...).

    The tables are even functions of k, so the point before k=0 mirrors k=dk.
    Cubic rather than linear interpolation keeps the error of the tabulation
    below 1e-4 of the peak at the table spacing used (see :doc:`/rendering`).
    Each table is first turned into the coefficients of its cubic on every
    interval, so that a frequency costs four gathers and Horner's rule.
    With ``slopes`` > 0, also returns the derivatives in ``k`` of the
    interpolants of the first ``slopes`` tables.
    """
    shape = k.shape
    flat = (k / dk).reshape(shape[0], -1)
    i = torch.clamp(flat.detach().floor(), 0, n_k - 3)
    t = flat - i
    i = i.long()
    out, derivatives = [], []
    for n, tab in enumerate(tables):
        y0 = torch.cat([tab[:, 1:2], tab[:, :n_k - 3]], dim=1)
        y1, y2, y3 = tab[:, :n_k - 2], tab[:, 1:n_k - 1], tab[:, 2:n_k]
        c1 = 0.5 * (y2 - y0)
        c2 = y0 - 2.5 * y1 + 2.0 * y2 - 0.5 * y3
        c3 = 0.5 * (y3 - y0) + 1.5 * (y1 - y2)
        g3, g2, g1 = (torch.gather(c, 1, i) for c in (c3, c2, c1))
        val = torch.addcmul(g2, g3, t)
        val = torch.addcmul(g1, val, t)
        val = torch.addcmul(torch.gather(y1, 1, i), val, t)
        out.append(val.reshape(shape))
        if n < slopes:
            slope = torch.addcmul(2.0 * g2, 3.0 * g3, t)
            slope = torch.addcmul(g1, slope, t)
            derivatives.append((slope / dk).reshape(shape))
    return (out, derivatives) if slopes else out
