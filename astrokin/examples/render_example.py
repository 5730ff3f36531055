"""Render and plot an example disc: ``python -m astrokin.examples.render_example``.

Writes ``astrokin_example.png`` (or the path given as the first argument):
moment-0 and moment-1 maps of an exponential disc with an arctan rotation
curve, smeared by an elliptical beam, with its rotation curve.
"""

import pathlib
import sys

import astropy.units as u
import numpy as np

from astrokin._io import atomic_path
from astrokin.models import ExponentialArctanDisk

__all__ = ["main"]


def main(path="astrokin_example.png"):
    """Render the example disc and save the figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    disk = ExponentialArctanDisk(inclination=60 * u.deg, pa=120 * u.deg, r_scale=6 * u.arcsec,
                                 r_turn=2.5 * u.arcsec, v_max=220 * u.km / u.s,
                                 v_sys=1500 * u.km / u.s)
    beam = (3.0 * u.arcsec, 2.0 * u.arcsec, 30 * u.deg)
    shape, pixel_scale = (64, 64), 1.0 * u.arcsec
    mom0, mom1 = disk.render(shape, pixel_scale, beam=beam)
    # Show the map as an observer would: only where the emission is above 1% of the peak.
    mom1 = np.where(mom0 > 0.01 * mom0.max(), mom1, np.nan * mom1.unit)

    half = (shape[1] - 1) / 2 * pixel_scale.value
    extent = [half, -half, -half, half]  # East to the left: x offsets grow to the West
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    im0 = axes[0].imshow(mom0.value, origin="lower", extent=extent, cmap="magma")
    fig.colorbar(im0, ax=axes[0], label="intensity (relative)")
    im1 = axes[1].imshow(mom1.to_value(u.km / u.s), origin="lower", extent=extent,
                         cmap="RdBu_r")
    fig.colorbar(im1, ax=axes[1], label="velocity (km/s)")
    for ax, title in zip(axes[:2], ("moment 0", "moment 1"), strict=True):
        ax.set_xlabel("RA offset (arcsec, East left)")
        ax.set_ylabel("Dec offset (arcsec)")
        ax.set_title(title)
        # The x axis is East-positive, so a PA (North through East) is a clockwise angle.
        ax.add_patch(Ellipse((0.8 * half, -0.8 * half), beam[1].value, beam[0].value,
                             angle=-beam[2].to_value(u.deg), fc="none", ec="k"))
    r = np.linspace(0, 30, 200) * u.arcsec
    axes[2].plot(r, disk.rotation_curve(r))
    axes[2].set_xlabel("radius (arcsec)")
    axes[2].set_ylabel("rotation speed (km/s)")
    axes[2].set_title("rotation curve")
    fig.suptitle("ExponentialArctanDisk: i = 60 deg, PA = 120 deg, beam 3\"x2\" at 30 deg")
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format=pathlib.Path(path).suffix[1:] or "png")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:2])
