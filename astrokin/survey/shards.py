"""Training shards on disk: prepared 64x64 maps, written once, read by many processes.

A shard directory holds the network's inputs already parsed, resampled and
normalised (`astrokin.fitting.preprocessing.prepare_batch`), so that training
processes do no FITS reading or resampling and can read any galaxy without
loading the rest::

    shards/
        index.json            format, image size, shard names and sizes
        shard-00000/mom0.npy  (n, 64, 64) float32
        shard-00000/mom1.npy  (n, 64, 64) float32
        shard-00000/mask0.npy (n, 64, 64) bool
        ...                   mask1, pixel_scale, half_width, v_ref, v_half, peak, beam

Shards are written one at a time, so writing a catalogue of any size needs
memory for one shard only; each shard directory is written under a temporary
name and renamed into place, and ``index.json`` is written last, so a
directory with an index is complete. `ShardDataset` memory-maps the arrays:
a training process reads (pages in) only the galaxies it is given.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from astrokin._io import atomic_path

__all__ = ["SHARD_KEYS", "ShardDataset", "catalogue_to_shards", "write_shards"]

_FORMAT = "astrokin-training-shards"
_FORMAT_VERSION = 1
#: The arrays of a shard, as written by `write_shards` and read by `ShardDataset`.
SHARD_KEYS = ("mom0", "mom1", "mask0", "mask1", "pixel_scale", "half_width", "v_ref",
              "v_half", "peak", "beam")
_DTYPES = {"mask0": np.bool_, "mask1": np.bool_}


class _ShardWriter:
    """Appends prepared batches to a new shard directory, one shard at a time."""

    def __init__(self, directory, shard_size, overwrite):
        from astrokin._validation import check_bool, check_integer

        check_integer("shard_size", shard_size, 1)
        check_bool("overwrite", overwrite)
        self.directory = Path(directory)
        self.shard_size = int(shard_size)
        _prepare_directory(self.directory, overwrite)
        self.pending = []
        self.n_pending = 0
        self.shards = []
        self.image_size = None

    def add(self, batch):
        batch = {k: np.asarray(getattr(batch, k), dtype=_DTYPES.get(k, np.float32))
                 for k in SHARD_KEYS}
        self.image_size = int(batch["mom0"].shape[-1])
        self.pending.append(batch)
        self.n_pending += len(batch["mom0"])
        while self.n_pending >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n):
        joined = {k: np.concatenate([b[k] for b in self.pending]) for k in SHARD_KEYS}
        head = {k: v[:n] for k, v in joined.items()}
        rest = {k: v[n:] for k, v in joined.items()}
        self.pending = [rest] if len(rest["mom0"]) else []
        self.n_pending = len(rest["mom0"])
        name = f"shard-{len(self.shards):05d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.directory))
        try:
            for k, v in head.items():
                np.save(tmp / f"{k}.npy", v)
            os.replace(tmp, self.directory / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.shards.append({"name": name, "size": int(n)})

    def close(self):
        if self.n_pending:
            self._flush(self.n_pending)
        if not self.shards:
            raise ValueError("No galaxies to write.")
        index = {"format": _FORMAT, "format_version": _FORMAT_VERSION,
                 "image_size": self.image_size,
                 "total": int(sum(s["size"] for s in self.shards)), "shards": self.shards}
        with atomic_path(self.directory / "index.json", overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(index, indent=1))
        return ShardDataset(self.directory)


def write_shards(mom0, mom1, directory, *, pixel_scale=None, beam=None, shard_size=1024,
                 overwrite=False):
    """Write moment maps held in memory as training shards.

    Parameters
    ----------
    mom0, mom1
        Maps as `~astrokin.fitting.NeuralKinematicFitter` takes them: a
        ``(N, ny, nx)`` stack, a list of maps, HDUs, Quantities.
    directory : str or path-like
        The shard directory to create.
    pixel_scale, beam
        As for the fitter, when the maps carry no WCS or beam.
    shard_size : int, optional
        Galaxies per shard.
    overwrite : bool, optional
        Replace an existing shard directory (a directory with anything but
        shards in it is never replaced).

    Returns
    -------
    dataset : `ShardDataset`

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.survey import write_shards
    >>> from astrokin.synthetic import make_galaxies
    >>> gals = make_galaxies(ExponentialArctanDisk(), 5, seed=0)
    >>> data = write_shards(gals.mom0, gals.mom1 * u.km / u.s, getfixture("tmp_path") / "s",
    ...                     pixel_scale=gals.pixel_scale, beam=2 * u.arcsec, shard_size=2)
    >>> len(data), data.shard_sizes
    (5, [2, 2, 1])
    """
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch

    # The maps are in memory already; parsing keeps references to them, and
    # only one shard of prepared (resampled) maps exists at a time.
    obs = parse_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam)
    writer = _ShardWriter(directory, shard_size, overwrite)
    for start in range(0, len(obs), writer.shard_size):
        writer.add(prepare_batch(obs[start:start + writer.shard_size]))
    return writer.close()


def catalogue_to_shards(catalogue, directory, *, pixel_scale=None, beam=None, shard_size=1024,
                        overwrite=False):
    """Stream a catalogue of FITS moment maps into training shards.

    Files are read ``shard_size`` galaxies at a time, so memory does not
    grow with the catalogue.

    Parameters
    ----------
    catalogue
        Anything `astrokin.survey.read_catalogue` takes: a list of
        ``(mom0_path, mom1_path)`` pairs, a table with ``mom0`` and ``mom1``
        columns, or the path of such a table (ECSV, CSV, FITS).
    directory : str or path-like
        The shard directory to create.
    pixel_scale, beam
        For files whose headers lack a WCS or a beam.
    shard_size : int, optional
        Galaxies per shard.
    overwrite : bool, optional
        Replace an existing shard directory.

    Returns
    -------
    dataset : `ShardDataset`

    Examples
    --------
    >>> from importlib import resources
    >>> from astrokin.survey import catalogue_to_shards
    >>> base = resources.files("astrokin") / "data" / "examples"
    >>> pair = (str(base / "example_mom0.fits"), str(base / "example_mom1.fits"))
    >>> data = catalogue_to_shards([pair, pair, pair], getfixture("tmp_path") / "s",
    ...                            shard_size=2)
    >>> data.shard_sizes
    [2, 1]
    """
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch
    from astrokin.survey.catalogue import load_maps, read_catalogue

    table = read_catalogue(catalogue)
    writer = _ShardWriter(directory, shard_size, overwrite)
    for start in range(0, len(table), writer.shard_size):
        rows = table[start:start + writer.shard_size]
        mom0, mom1 = load_maps(rows["mom0"], rows["mom1"])
        obs = parse_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam)
        writer.add(prepare_batch(obs))
    return writer.close()


class ShardDataset:
    """Read-only, memory-mapped view of a shard directory.

    Parameters
    ----------
    directory : str or path-like
        A directory written by `write_shards` or `catalogue_to_shards`.

    Attributes
    ----------
    shard_sizes : list of int
        Galaxies in each shard, in order; galaxy ``i`` of the dataset is the
        ``i``-th of their concatenation.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.survey import ShardDataset, write_shards
    >>> from astrokin.synthetic import make_galaxies
    >>> gals = make_galaxies(ExponentialArctanDisk(), 3, seed=0)
    >>> path = getfixture("tmp_path") / "s"
    >>> _ = write_shards(gals.mom0, gals.mom1 * u.km / u.s, path, pixel_scale=1 * u.arcsec)
    >>> batch = ShardDataset(path).read([2, 0])
    >>> batch["mom0"].shape, batch["mom0"].dtype
    ((2, 64, 64), dtype('float32'))
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{self.directory} is not a shard directory (no index.json); write one with "
                "astrokin.survey.write_shards or catalogue_to_shards.")
        index = json.loads(index_path.read_text())
        if index.get("format") != _FORMAT:
            raise ValueError(f"{index_path} does not describe astrokin training shards.")
        if index.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(f"{index_path} has format version {index['format_version']}; "
                             f"this astrokin reads up to {_FORMAT_VERSION}.")
        self.index = index
        self.shard_names = [s["name"] for s in index["shards"]]
        self.shard_sizes = [int(s["size"]) for s in index["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)]).astype(np.int64)
        self._arrays = {}

    def __len__(self):
        return int(self.offsets[-1])

    def __repr__(self):
        return (f"<ShardDataset {str(self.directory)!r}: {len(self)} galaxies in "
                f"{len(self.shard_sizes)} shards>")

    def _shard(self, s):
        if s not in self._arrays:
            d = self.directory / self.shard_names[s]
            self._arrays[s] = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in SHARD_KEYS}
        return self._arrays[s]

    def read(self, indices):
        """The prepared batch (numpy arrays, copies) of galaxies ``indices``, in that order.

        Parameters
        ----------
        indices : array-like of int
            Dataset positions, ``0 <= i < len(self)``.

        Returns
        -------
        batch : `~astrokin.fitting.batch.PreparedBatch`
            The fields `SHARD_KEYS`, first axis along ``indices`` (no
            padding bookkeeping: shards keep no fitting frame).
        """
        from astrokin.fitting.batch import PreparedBatch

        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"Galaxy indices must be in [0, {len(self)}).")
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out = {}
        for k in SHARD_KEYS:
            first = self._shard(0)[k]
            out[k] = np.empty((idx.size,) + first.shape[1:], dtype=first.dtype)
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            local = idx[sel] - self.offsets[s]
            arrays = self._shard(int(s))
            for k in SHARD_KEYS:
                out[k][sel] = arrays[k][local]
        return PreparedBatch(**out)


def _prepare_directory(directory, overwrite):
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a directory.")
        entries = list(directory.iterdir())
        if entries:
            if not overwrite:
                raise FileExistsError(f"{directory} is not empty; pass overwrite=True to "
                                      "replace the shards in it.")
            if not (directory / "index.json").is_file():
                raise FileExistsError(f"{directory} is not empty and holds no shards; it is "
                                      "not replaced even with overwrite=True.")
            for entry in entries:
                if entry.is_dir() and (entry.name.startswith("shard-")
                                       or entry.name.startswith(".shard-")):
                    shutil.rmtree(entry)
                elif entry.name == "index.json":
                    entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
