"""Options shared by the ``astrokin`` commands, and the parsing of their values."""

import argparse

from astropy import units as u

__all__ = ["add_common_options", "add_map_options", "make_fitter_model", "parse_beam",
           "parse_fix", "parse_quantity"]

MODELS = ("ExponentialArctanDisk", "GaussianRingDisk", "TiltedRingDisk")


def parse_quantity(text, default_unit, what):
    """A Quantity from ``'16.5'`` (in ``default_unit``) or ``'16.5 Mpc'``."""
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        try:
            q = u.Quantity(text)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(
                f"{what}: cannot read {text!r} as a number with a unit (e.g. '1.5 arcsec')"
            ) from err
        if not q.unit.is_equivalent(default_unit):
            raise argparse.ArgumentTypeError(
                f"{what}: {text!r} is not in units of {default_unit.physical_type}"
            ) from None
        return q
    return value * default_unit


def parse_beam(text):
    """A beam from ``'2.5'`` (round, arcsec) or ``'3,2,30'`` (bmaj, bmin arcsec; bpa deg)."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    if len(parts) == 1:
        return parse_quantity(parts[0], u.arcsec, "--beam")
    if len(parts) == 3:
        return (parse_quantity(parts[0], u.arcsec, "--beam"),
                parse_quantity(parts[1], u.arcsec, "--beam"),
                parse_quantity(parts[2], u.deg, "--beam"))
    raise argparse.ArgumentTypeError(
        f"--beam: give one FWHM ('2.5') or 'BMAJ,BMIN,BPA' ('3,2,30'); got {text!r}"
    )


def parse_fix(text):
    """``(name, value)`` from ``'pa=120'`` or ``'v_sys=1500 km/s'``."""
    name, sep, value = str(text).partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(
            f"--fix: write NAME=VALUE, e.g. 'pa=120' or 'v_sys=1500 km/s'; got {text!r}"
        )
    try:
        return name, float(value)
    except ValueError:
        try:
            return name, u.Quantity(value)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(
                f"--fix: cannot read the value of {name!r}: {value!r}"
            ) from err


def add_map_options(parser):
    """Options describing the input maps: pixel scale, beam, mask, cube rest value."""
    group = parser.add_argument_group("input maps")
    group.add_argument(
        "--pixel-scale", metavar="ANGLE",
        type=lambda s: parse_quantity(s, u.arcsec, "--pixel-scale"),
        help="pixel size, for maps without a celestial WCS (arcsec, or e.g. '0.1 arcsec')",
    )
    group.add_argument(
        "--beam", metavar="FWHM", type=parse_beam,
        help="restoring beam, for maps without BMAJ/BMIN/BPA keywords: one FWHM for a "
             "round beam ('2.5', arcsec) or 'BMAJ,BMIN,BPA' ('3,2,30': arcsec, arcsec, "
             "degrees East of North)",
    )
    group.add_argument(
        "--mask", metavar="REGIONFILE",
        help="DS9 (.reg) or CASA (.crtf) region file: only pixels inside its regions are "
             "fitted (sky regions use the maps' WCS)",
    )
    group.add_argument(
        "--rest-value", metavar="FREQ",
        type=lambda s: parse_quantity(s, u.GHz, "--rest-value"),
        help="rest frequency (GHz, or e.g. '230.538 GHz') of the line in a data cube, "
             "when its header has none; only used for cube inputs",
    )


def add_common_options(parser):
    """Options every fitting/training command has: model, fixes, device, seed, quiet."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", choices=MODELS, default=None,
        help="disc model to fit (default: the network's model, ExponentialArctanDisk for "
             "the bundled one); TiltedRingDisk fits a rotation curve ring by ring, started "
             "from the network's model, and writes the rings to TABLE_rings",
    )
    group.add_argument(
        "--rings", type=int, metavar="N", default=None,
        help="number of rings of a TiltedRingDisk (default: 10); the outermost follows the "
             "emission unless fixed with --fix 'r_outer=...'",
    )
    group.add_argument(
        "--fix", metavar="NAME=VALUE", type=parse_fix, action="append", default=[],
        help="hold a parameter fixed, e.g. --fix pa=120 --fix 'v_sys=1500 km/s' (plain "
             "numbers are in deg, arcsec or km/s as the parameter has; repeatable)",
    )
    run = parser.add_argument_group("computation")
    run.add_argument("--device", default="auto",
                     help="'cpu', 'cuda', 'cuda:1'... (default: auto, a GPU when there is one)")
    run.add_argument("--seed", type=int, default=0,
                     help="random seed: results are reproducible on a CPU (default: 0)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars, no summary on screen")
    run.add_argument("--debug", action="store_true",
                     help="show the full Python traceback of an error")


def make_fitter_model(name, fixes, default_class=None, n_rings=None):
    """An astrokin model instance with ``fixes`` applied (``n_rings`` for a ring disc)."""
    from astrokin import models

    if name is not None:
        cls = getattr(models, name)
    else:
        cls = default_class or models.ExponentialArctanDisk
    if issubclass(cls, models.TiltedRingDisk):
        model = cls(n_rings=n_rings) if n_rings is not None else cls()
    elif n_rings is not None:
        raise ValueError(f"--rings is for --model TiltedRingDisk, not {cls.__name__}")
    else:
        model = cls()
    cls = type(model)
    names = [pname for pname, _ in fixes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--fix gives {', '.join(twice)} more than once; give each parameter "
                         "one value")
    for pname, value in fixes:
        if pname not in model.param_names:
            raise ValueError(
                f"--fix: {cls.__name__} has no parameter {pname!r}; its parameters are "
                f"{', '.join(model.param_names)}"
            )
        unit = cls.canonical_unit(pname)
        if isinstance(value, u.Quantity):
            if unit is None:
                value = value.to_value(u.one)
            elif not value.unit.is_equivalent(unit):
                raise u.UnitsError(f"--fix {pname}: {value} is not in units of {unit}")
        elif unit is not None:
            value = value * unit
        setattr(model, pname, value)
        getattr(model, pname).fixed = True
    return model
