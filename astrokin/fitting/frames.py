"""The fitting frame of a galaxy, and the way back to its input map.

The network sees each galaxy in its *fitting frame*: the map cut out around
the emission, mirrored (when its WCS has East along +column) so that East is
along -column, padded to a square of side ``S`` and resampled to the 64x64
grid (`astrokin.fitting.preprocessing`). Centre offsets there are measured
from the centre of that grid, and position angles on it are
``PA_sky + theta``, with ``theta`` the angle of North from +row.

`FittingFrame` holds that bookkeeping for one galaxy and is the one place
where the frame is undone: the affine maps of ``x_0``, ``y_0`` and ``pa``
between the fitting frame and the input map (`FittingFrame.to_input`,
`FittingFrame.from_input`), and positions on the 64x64 grid back to 0-based
pixels of the input map (`FittingFrame.grid_to_input_pixels`).
"""

from dataclasses import dataclass

import numpy as np

from astrokin.fitting.binning import Reduction
from astrokin.fitting.encoders import IMAGE_SIZE

__all__ = ["FRAMED_PARAMETERS", "FittingFrame", "fitting_frames", "framed_fixed"]

#: The parameters whose values depend on the frame.
FRAMED_PARAMETERS = ("x_0", "y_0", "pa")


@dataclass(frozen=True)
class FittingFrame:
    """How one galaxy's input map became the network's fitting frame.

    Attributes
    ----------
    pixel_scale : float
        Arcsec per pixel of the map as read (the input map's, times the
        ``reduction``'s binning).
    shape : tuple of int
        ``(ny, nx)`` of the cut-out that was fitted.
    full_shape : tuple of int
        ``(ny, nx)`` of the map as read.
    offset : tuple of int
        ``(row, column)`` of the cut-out's first pixel in the map as read.
    flipped : bool
        Whether the columns were mirrored.
    north_angle : float
        ``theta`` in degrees: ``PA_pixel = PA_sky + theta``.
    side, pad_y, pad_x : int
        The padded square's side, and the rows and columns added before the
        cut-out.
    size : int
        Side of the network's grid (64).
    reduction : `~astrokin.fitting.binning.Reduction` or None
        How the map as read was cut and binned from the input map (None:
        it is the input map).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.frames import FittingFrame
    >>> from astrokin.fitting.preprocessing import Observation
    >>> obs = Observation(np.zeros((48, 64)), np.zeros((48, 64)), 0.5, None)
    >>> frame = FittingFrame.of(obs, side=64, pad_y=8, pad_x=0)
    >>> frame.to_input("y_0", 0.0)  # the grid's centre is the map's centre
    0.0
    >>> [float(v) for v in frame.grid_to_input_pixels(31.5, 31.5)]
    [31.5, 23.5]
    """

    pixel_scale: float
    shape: tuple
    full_shape: tuple
    offset: tuple
    flipped: bool
    north_angle: float
    side: int
    pad_y: int
    pad_x: int
    size: int = IMAGE_SIZE
    reduction: Reduction | None = None

    def __post_init__(self):
        if self.reduction is None:
            object.__setattr__(self, "reduction", Reduction(input_shape=tuple(self.full_shape)))

    @classmethod
    def of(cls, obs, side, pad_y, pad_x, size=IMAGE_SIZE):
        """The frame of an `~astrokin.fitting.preprocessing.Observation` padded as given."""
        return cls(float(obs.pixel_scale), tuple(obs.shape), tuple(obs.full_shape),
                   tuple(obs.offset), bool(obs.flipped), float(obs.north_angle), int(side),
                   int(pad_y), int(pad_x), int(size), getattr(obs, "reduction", None))

    @property
    def input_pixel_scale(self):
        """Arcsec per pixel of the input map."""
        return self.pixel_scale / self.reduction.binning

    def grid_shift(self, name):
        """``s``: the map-frame value of ``name`` is its grid-frame value plus ``s``.

        The *map frame* is that of the cut-out maps as fitted
        (`~astrokin.fitting.preprocessing.Observation`): offsets from their
        centre, PA on their (mirrored) pixel grid. The grid frame (the
        network's 64x64 grid) differs from it by the padding only.
        """
        self._check(name)
        ny, nx = self.shape
        if name == "x_0":
            return self.pixel_scale * ((self.side - nx) / 2 - self.pad_x)
        if name == "y_0":
            return self.pixel_scale * ((self.side - ny) / 2 - self.pad_y)
        return 0.0

    def map_affine(self, name):
        """``(a, c)``: the input-map value of ``name`` is ``a * map-frame value + c``.

        Mirroring the columns turns the x offsets around but not the PA on
        the sky, which ``theta`` (measured on the mirrored grid) already
        accounts for.
        """
        self._check(name)
        if name == "pa":
            return 1.0, -self.north_angle
        ny, nx = self.shape
        # From the cut-out's centre to the input map's centre.
        x, y = self.reduction.to_input_pixels(self.offset[1] + (nx - 1) / 2,
                                              self.offset[0] + (ny - 1) / 2)
        fy, fx = self.reduction.input_shape
        if name == "x_0":
            return (-1.0 if self.flipped else 1.0), float(self.input_pixel_scale
                                                          * (x - (fx - 1) / 2))
        return 1.0, float(self.input_pixel_scale * (y - (fy - 1) / 2))

    def affine(self, name):
        """``(a, b)``: the input-map value of ``name`` is ``a * fitting-frame value + b``.

        ``name`` is ``'x_0'`` or ``'y_0'`` (arcsec offsets from the map
        centre) or ``'pa'`` (deg): the grid shift, then the map's affine map.
        """
        a, c = self.map_affine(name)
        return a, a * self.grid_shift(name) + c

    def _check(self, name):
        if name not in FRAMED_PARAMETERS:
            raise ValueError(f"No frame transform of {name!r}: only {FRAMED_PARAMETERS} have "
                             "one.")

    def to_input(self, name, value):
        """The input-map value of ``name`` from its fitting-frame ``value``."""
        a, b = self.affine(name)
        return a * value + b

    def from_input(self, name, value):
        """The fitting-frame value of ``name`` from its input-map ``value`` (PA in [0, 360))."""
        a, b = self.affine(name)
        v = (float(value) - b) / a
        return float(np.remainder(v, 360.0)) if name == "pa" else v

    def input_pixels(self, x_0, y_0):
        """0-based pixel coordinates in the input map of offsets ``x_0``, ``y_0`` (arcsec)."""
        ny, nx = self.reduction.input_shape
        ps = self.input_pixel_scale
        return (nx - 1) / 2 + x_0 / ps, (ny - 1) / 2 + y_0 / ps

    def grid_to_input_pixels(self, x_grid, y_grid):
        """0-based input-map pixel coordinates of points on the ``size`` x ``size`` grid.

        The grid pixel ``i`` covers ``[i, i + 1) * side / size - 0.5`` of the
        padded square (``align_corners=False`` resampling).
        """
        step = self.pixel_scale * self.side / self.size
        centre = (self.size - 1) / 2
        x_0 = self.to_input("x_0", (np.asarray(x_grid, dtype=float) - centre) * step)
        y_0 = self.to_input("y_0", (np.asarray(y_grid, dtype=float) - centre) * step)
        return self.input_pixels(x_0, y_0)


def fitting_frames(observations, batch):
    """The `FittingFrame` of each observation of a prepared batch."""
    return [FittingFrame.of(o, batch.side[g], batch.pad_y[g], batch.pad_x[g],
                            size=batch.mom0.shape[-1])
            for g, o in enumerate(observations)]


#: Largest fixed centre offset from the fitting grid's centre, in half-widths.
MAX_FIXED_OFFSET = 2.0


def framed_fixed(fixed, model, frames):
    """Fixed values with the user's ``x_0``, ``y_0`` and ``pa`` in each galaxy's fitting frame.

    Parameters
    ----------
    fixed : dict
        Canonical values of every parameter
        (`~astrokin.fitting.parameters.fixed_values`).
    model : `~astrokin.models.KinematicDiskModel`
        Says which parameters are fixed.
    frames : list of `FittingFrame`

    Returns
    -------
    fixed : dict
        The fixed framed parameters become ``(N, 1)`` arrays (one value per
        galaxy); the others stay scalars.
    """
    out = dict(fixed)
    for name in FRAMED_PARAMETERS:
        if name not in fixed or not model.fixed[name]:
            continue
        values = [frame.from_input(name, fixed[name]) for frame in frames]
        if name in ("x_0", "y_0"):
            for g, (frame, value) in enumerate(zip(frames, values, strict=True)):
                # The fitting grid spans +-half its side; a centre far beyond it
                # leaves no disc on the maps.
                half = 0.5 * frame.side * frame.pixel_scale
                if abs(value) > MAX_FIXED_OFFSET * half:
                    which = f" of galaxy {g}" if len(frames) > 1 else ""
                    raise ValueError(
                        f"The fixed {name} = {fixed[name]:.6g} arcsec puts the centre"
                        f"{which} {abs(value) / (2 * half):.3g} map widths from the fitted "
                        "map's centre: the disc would not be on the maps. x_0 and y_0 are "
                        "offsets (arcsec) from the centre of the map as given.")
        out[name] = np.asarray(values, dtype=float)[:, None]
    return out
