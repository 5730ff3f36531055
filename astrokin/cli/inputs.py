"""Turning command-line inputs (files, globs, catalogues, cubes) into galaxies to fit.

A command gets FITS files: moment maps in pairs (``a_mom0.fits a_mom1.fits``),
data cubes (3D, or 4D with a Stokes axis), shell patterns, or a catalogue
table. Map pairs are matched by name when every 2D file name contains
``mom0`` or ``mom1`` (so ``'maps/*_mom0.fits'`` finds each ``_mom1`` partner
on disk); otherwise they are taken two by two, mom0 first.
"""

import glob
import os
import pathlib
from dataclasses import dataclass, field

__all__ = ["Galaxy", "collect_galaxies", "read_catalogue"]


@dataclass
class Galaxy:
    """One galaxy to fit: its name and where its maps come from."""

    name: str
    mom0_file: str = ""
    mom1_file: str = ""
    cube_file: str = ""
    mom2_file: str = ""
    distance: object = None
    extra: dict = field(default_factory=dict)

    def load(self, rest_value=None, errors=False, moment2=False, window=False):
        """``(mom0_hdu, mom1_hdu)``, read into memory (the files are closed again).

        With ``errors=True``, a cube's moments come with their noise maps:
        ``(mom0, mom1, mom0_err, mom1_err)``. With ``moment2=True`` the
        second moment follows mom1 (a cube's, or ``mom2_file``; None
        without one), and its noise map follows the others; with ``window``
        too, a cube's mask ranges (``v_low``, ``v_high``) come last.
        """
        if self.cube_file:
            try:
                from astrokin.cubes import moment_maps
            except ImportError as err:
                raise ImportError(
                    "fitting a data cube needs astrokin.cubes, which this installation "
                    "lacks; make moment maps first and give those"
                ) from err
            kwargs = {} if rest_value is None else {"rest_value": rest_value}
            return moment_maps(self.cube_file, errors=errors, moment2=moment2,
                               window=window and moment2, **kwargs)
        maps = [_read_map(self.mom0_file), _read_map(self.mom1_file)]
        if moment2:
            maps.append(_read_map(self.mom2_file) if self.mom2_file else None)
        return tuple(maps)


def _read_map(path):
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            if getattr(hdu, "data", None) is not None and hdu.data.ndim >= 2:
                return fits.PrimaryHDU(data=hdu.data.copy(), header=hdu.header.copy())
    raise ValueError(f"{path} has no image HDU")


def _image_ndim(path):
    """Number of non-degenerate axes of the first image in a FITS file."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True) as hdul:
            for hdu in hdul:
                shape = getattr(hdu, "shape", None) if hdu.is_image else None
                if shape:
                    return sum(1 for n in shape if n > 1)
    except OSError as err:
        raise OSError(f"{path} is not a readable FITS file ({err})") from None
    raise ValueError(f"{path} has no image HDU")


def _expand(patterns):
    """Files named or matched by shell patterns, in order, without repeats."""
    files = []
    for pattern in patterns:
        if os.path.exists(pattern):
            matches = [pattern]
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"no file matches {pattern!r}")
        else:
            raise FileNotFoundError(f"no such file: {pattern}")
        for m in matches:
            if os.path.isdir(m):
                raise IsADirectoryError(f"{m} is a directory; give FITS files or a pattern")
            if m not in files:
                files.append(m)
    return files


def _stem(path):
    name = pathlib.Path(path).name
    for suffix in (".fits.gz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return pathlib.Path(path).stem


def _galaxy_name(path, token=None):
    stem = _stem(path)
    if token:
        stem = stem.replace(token, "").strip("_-. ")
    return stem or _stem(path)


def collect_galaxies(inputs, catalogue=None):
    """The galaxies named on the command line.

    Parameters
    ----------
    inputs : list of str
        File names and shell patterns (quoted patterns are expanded here).
    catalogue : str, optional
        A table file (see `read_catalogue`).

    Returns
    -------
    galaxies : list of `Galaxy`
    """
    galaxies = read_catalogue(catalogue) if catalogue else []
    files = _expand(inputs)
    maps = []
    for path in files:
        ndim = _image_ndim(path)
        if ndim >= 3:
            galaxies.append(Galaxy(_stem(path), cube_file=path))
        elif ndim == 2:
            maps.append(path)
        else:
            raise ValueError(f"{path} holds a {ndim}-dimensional image, not a map or a cube")
    galaxies.extend(_pair_maps(maps))
    if not galaxies:
        raise ValueError("nothing to fit: give MOM0 MOM1 files, cubes, or --catalogue")
    names = [g.name for g in galaxies]
    if len(set(names)) != len(names):  # keep names unique (they name output figures)
        seen = {}
        for g in galaxies:
            k = seen.get(g.name, 0)
            seen[g.name] = k + 1
            if names.count(g.name) > 1:
                g.name = f"{g.name}_{k}"
    return galaxies


def _pair_maps(maps):
    if not maps:
        return []
    named = all(("mom0" in pathlib.Path(p).name) != ("mom1" in pathlib.Path(p).name)
                for p in maps)
    if named:
        pairs = {}
        for p in maps:
            token = "mom0" if "mom0" in pathlib.Path(p).name else "mom1"
            key = os.path.join(os.path.dirname(p), pathlib.Path(p).name.replace(token, "{}"))
            pairs.setdefault(key, {})[token] = p
        out = []
        for key, pair in pairs.items():
            for token, other in (("mom0", "mom1"), ("mom1", "mom0")):
                if token not in pair:
                    partner = key.replace("{}", token)
                    if not os.path.exists(partner):
                        raise FileNotFoundError(
                            f"{pair[other]} has no {token} partner (looked for {partner})"
                        )
                    pair[token] = partner
            out.append(Galaxy(_galaxy_name(pair["mom0"], "mom0"), pair["mom0"], pair["mom1"]))
        return out
    if len(maps) % 2:
        raise ValueError(
            f"{len(maps)} 2D maps given: give them in pairs, MOM0 MOM1 for each galaxy "
            "(or name the files *mom0*/*mom1* so they pair by name)"
        )
    return [Galaxy(_galaxy_name(m0), m0, m1) for m0, m1 in zip(maps[::2], maps[1::2],
                                                                strict=True)]


def read_catalogue(path):
    """Galaxies from a catalogue table.

    The table (any format `astropy.table.Table.read` reads: ECSV, CSV,
    FITS, ...) has a row per galaxy with columns ``mom0`` and ``mom1`` (paths
    of the maps) or ``cube`` (path of a data cube), and optionally ``name``
    and ``distance`` (a length; plain numbers are Mpc). Relative paths are
    relative to the catalogue's directory.

    Parameters
    ----------
    path : str

    Returns
    -------
    galaxies : list of `Galaxy`
    """
    from astropy import units as u
    from astropy.table import Table

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such catalogue: {path}")
    try:
        table = Table.read(path, format="ascii.csv" if path.lower().endswith(".csv") else None)
    except Exception as err:  # astropy raises many types for unreadable tables
        raise ValueError(f"cannot read the catalogue {path}: {err}") from err
    cols = set(table.colnames)
    if not ({"mom0", "mom1"} <= cols or "cube" in cols):
        raise ValueError(
            f"the catalogue {path} needs columns 'mom0' and 'mom1' (or 'cube'); it has "
            f"{', '.join(table.colnames)}"
        )
    base = os.path.dirname(os.path.abspath(path))

    def resolve(value):
        value = str(value).strip()
        full = value if os.path.isabs(value) else os.path.join(base, value)
        if not os.path.exists(full):
            raise FileNotFoundError(f"catalogue {path}: no such file {value}")
        return full

    out = []
    for i, row in enumerate(table):
        cube = str(row["cube"]).strip() if "cube" in cols and row["cube"] else ""
        if cube and cube != "--":
            g = Galaxy(_stem(cube), cube_file=resolve(cube))
        else:
            g = Galaxy(_galaxy_name(str(row["mom0"]), "mom0"), resolve(row["mom0"]),
                       resolve(row["mom1"]))
        if "name" in cols:
            g.name = str(row["name"]).strip() or g.name
        if "distance" in cols:
            d = row["distance"]
            unit = getattr(table["distance"], "unit", None)
            g.distance = u.Quantity(d, unit if unit is not None else u.Mpc)
        g.extra["row"] = i
        out.append(g)
    return out
