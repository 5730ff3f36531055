"""Fitting catalogues of FITS moment maps, on one machine or on any Dask cluster.

`fit_catalogue` splits a catalogue into batches of consecutive galaxies and
fits them blind with a trained network
(`~astrokin.fitting.NeuralKinematicFitter`), either in this process or as
tasks of a `dask.distributed` cluster (a `~distributed.LocalCluster`, a
dask-jobqueue or Kubernetes cluster: anything a `~distributed.Client`
connects to). Each worker process loads the network once and keeps it for
all its batches; only file names travel to the workers, which read the FITS
files themselves. Results come back batch by batch and are written to part
files at once, with a bounded number of batches in flight, and merged into
one table sorted by catalogue index at the end; a rerun skips the galaxies
already in the parts or in the output table.

With a fixed ``seed`` the MC-dropout masks of catalogue galaxy ``i`` come
from the random stream ``(seed, i)`` whatever batch it falls in, so results
do not depend on the batch size, on the number of workers, or on which
galaxies a rerun skipped.
"""

import contextlib
import os
import uuid
from itertools import islice
from pathlib import Path

import numpy as np

from astrokin.survey.results import done_indices, merge_tables, parts_directory, write_table

__all__ = ["catalogue_lock", "fit_catalogue", "load_maps", "read_catalogue"]

#: Fitters cached per worker process, keyed by (network, device, mc_samples, seed, threads).
_FITTERS = {}


def read_catalogue(catalogue):
    """A catalogue of moment-map files as a table with ``index``, ``id``, ``mom0``, ``mom1``.

    Parameters
    ----------
    catalogue : list of (str, str), `~astropy.table.Table`, str or path-like
        ``(mom0_path, mom1_path)`` pairs; a table with columns ``mom0`` and
        ``mom1`` (file names) and optionally ``id``; or the path of such a
        table in any format `~astropy.table.Table.read` reads (ECSV, CSV,
        FITS). Relative file names in a catalogue file are relative to the
        catalogue's directory.

    Returns
    -------
    table : `~astropy.table.Table`
        ``index`` (0-based position, the ``galaxy`` column of the results),
        ``id`` (the catalogue's ``id`` column, else the mom0 file's name
        without ``.fits``), ``mom0`` and ``mom1`` (file names as str). The
        input is not modified.

    Examples
    --------
    >>> from astrokin.survey import read_catalogue
    >>> cat = read_catalogue([("a_mom0.fits", "a_mom1.fits"), ("b_mom0.fits", "b_mom1.fits")])
    >>> cat["id"].tolist(), cat["index"].tolist()
    (['a_mom0', 'b_mom0'], [0, 1])
    """
    from astropy.table import Table

    base = None
    if isinstance(catalogue, (str, Path)):
        path = Path(catalogue)
        if not path.is_file():
            raise FileNotFoundError(f"Catalogue {path} does not exist.")
        fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv"}.get(path.suffix.lower())
        catalogue = Table.read(path, format=fmt) if fmt else Table.read(path)
        base = path.parent
    if isinstance(catalogue, Table):
        missing = [c for c in ("mom0", "mom1") if c not in catalogue.colnames]
        if missing:
            raise ValueError(f"The catalogue needs columns 'mom0' and 'mom1' (file names); "
                             f"missing {missing}.")
        mom0 = [str(v) for v in catalogue["mom0"]]
        mom1 = [str(v) for v in catalogue["mom1"]]
        ids = [str(v) for v in catalogue["id"]] if "id" in catalogue.colnames else None
    else:
        try:
            pairs = [tuple(p) for p in catalogue]
        except TypeError as err:
            raise TypeError("catalogue must be a list of (mom0, mom1) file pairs, a Table with "
                            "'mom0' and 'mom1' columns, or the path of such a table.") from err
        if any(len(p) != 2 for p in pairs):
            raise ValueError("Each catalogue entry must be a (mom0, mom1) pair of file names.")
        mom0 = [str(p[0]) for p in pairs]
        mom1 = [str(p[1]) for p in pairs]
        ids = None
    if not mom0:
        raise ValueError("The catalogue is empty.")
    if base is not None:
        mom0 = [str(base / p) if not Path(p).is_absolute() else p for p in mom0]
        mom1 = [str(base / p) if not Path(p).is_absolute() else p for p in mom1]
    if ids is None:
        ids = [_stem(p) for p in mom0]
    out = Table()
    out["index"] = np.arange(len(mom0), dtype=np.int64)
    out["id"] = ids
    out["mom0"] = mom0
    out["mom1"] = mom1
    return out


def load_maps(mom0_paths, mom1_paths):
    """Read FITS moment maps into in-memory HDUs (no file is left open).

    Parameters
    ----------
    mom0_paths, mom1_paths : list of str or path-like
        FITS files; the first HDU with data of each is read.

    Returns
    -------
    mom0, mom1 : list of `~astropy.io.fits.PrimaryHDU`
        Copies of the data with their headers (WCS, ``BMAJ``..., ``BUNIT``).

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a file is not a readable FITS image, or the lists differ in length.

    Examples
    --------
    >>> from importlib import resources
    >>> from astrokin.survey import load_maps
    >>> base = resources.files("astrokin") / "data" / "examples"
    >>> mom0, mom1 = load_maps([base / "example_mom0.fits"], [base / "example_mom1.fits"])
    >>> mom1[0].header["BUNIT"], mom0[0].data.shape
    ('km/s', (64, 64))
    """
    from astropy.io import fits

    def read(path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"Moment map {path} does not exist.")
        try:
            data, header = fits.getdata(path, header=True, memmap=False)
        except (OSError, ValueError, TypeError, IndexError) as err:
            raise ValueError(f"Moment map {path} is not a readable FITS image (truncated, "
                             f"corrupt, or not FITS: {err}).") from None
        return fits.PrimaryHDU(np.array(data, copy=True), header.copy())

    if len(mom0_paths) != len(mom1_paths):
        raise ValueError(f"{len(mom0_paths)} mom0 files but {len(mom1_paths)} mom1 files.")
    return [read(p) for p in mom0_paths], [read(p) for p in mom1_paths]


def fit_catalogue(catalogue, output, *, model=None, network=None, client=None, scheduler=None,
                  n_workers=None, batch_size=256, mc_samples=1000, seed=0, pixel_scale=None,
                  beam=None, device="cpu", threads_per_worker=1, max_in_flight=None,
                  resume=True, overwrite=False, on_error="raise", keep_parts=False,
                  return_table=True, log=None, refine=True):
    """Fit every galaxy of a catalogue of FITS moment maps blind, optionally with Dask.

    Parameters
    ----------
    catalogue
        See `read_catalogue`: ``(mom0, mom1)`` file pairs, a table with
        ``mom0``, ``mom1`` (and optionally ``id``) columns, or its path.
    output : str or path-like
        The result table (ECSV). Batches are written to part files in
        ``<output>.parts/`` as they finish, and merged into ``output`` at the
        end (the parts are then removed unless ``keep_parts``).
    model : `~astrokin.models.KinematicDiskModel`, optional
        The model to fit (its fixed values, ties and bounds apply); default:
        the network's model class with default values.
    network : str or path-like, optional
        A network saved with `~astrokin.fitting.NeuralKinematicFitter.save`,
        readable by every worker; default: the bundled network.
    client : `distributed.Client`, optional
        Run the batches on this Dask cluster.
    scheduler : str, optional
        Address of a running Dask scheduler (e.g. ``'tcp://10.0.0.1:8786'``)
        to connect to, instead of ``client``.
    n_workers : int, optional
        Without ``client`` or ``scheduler``: start a
        `~distributed.LocalCluster` of this many worker processes (each
        with ``threads_per_worker`` threads) for this call. With none of
        the three, the batches run one after another in this process.
    batch_size : int, optional
        Galaxies per task.
    mc_samples : int, optional
        MC-dropout samples per galaxy.
    seed : int or None, optional
        Seeds the dropout masks: galaxy ``i`` uses stream ``(seed, i)``, so
        results do not depend on batching, workers or resumption. None: not
        reproducible.
    refine : bool, optional
        Refine each galaxy's fit to its own maps (`astrokin.fitting.refinement`;
        the fitter's default); False: the network's prediction alone, 10-50
        times faster.
    pixel_scale, beam
        For maps whose headers lack a WCS or beam (as for the fitter).
    device : str, optional
        Torch device of the workers (``'auto'`` takes CUDA where present).
    threads_per_worker : int, optional
        Torch threads per worker process (and threads of a LocalCluster
        worker started here).
    max_in_flight : int, optional
        Batches submitted but not yet written back (default: twice the
        cluster's threads); bounds the memory of this process.
    resume : bool, optional
        Skip galaxies already in the parts or in ``output`` (rows are checked
        against the catalogue's ids, and the fit settings against the
        file's); ``output`` is then rewritten with old and new rows together.
    overwrite : bool, optional
        Discard earlier results (``output`` and its parts) and start again.
    on_error : {'raise', 'skip'}, optional
        ``'raise'``: a galaxy that cannot be fitted (unreadable file, bad
        header) stops the run (finished batches stay in the parts, so a
        rerun resumes). ``'skip'``: its batch is refitted galaxy by galaxy;
        the failures are left out of the table and listed, with the error,
        in ``<output>.failed.ecsv``; a rerun retries them.
    keep_parts : bool, optional
        Keep the part files after merging.
    return_table : bool, optional
        Read and return the merged table (set False for catalogues too large
        to hold in memory; the path is returned instead).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    table : `~astropy.table.QTable` or `pathlib.Path`
        One row per fitted galaxy, sorted by ``galaxy`` (the catalogue
        index), with ``id``, every parameter and ``<name>_std``, ``vsini``,
        the centre in input pixels and, for maps with a celestial WCS,
        ``ra``/``dec`` (ICRS, deg; NaN without a WCS); ``output`` when
        ``return_table`` is False.

    Raises
    ------
    TypeError, ValueError, astropy.units.UnitsError
        For an option of the wrong type or value (checked before anything is
        read or written: the boolean options ``resume``, ``overwrite``,
        ``keep_parts``, ``return_table`` and ``refine`` must be True or
        False), or a catalogue that is malformed.
    FileNotFoundError
        If the catalogue, a map, ``network`` or the directory of
        ``output`` does not exist.
    FileExistsError
        If ``output`` or its parts exist and neither ``resume`` nor
        ``overwrite`` is given.
    astrokin.exceptions.CatalogueLockedError
        If another run is writing ``output``.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.io import fits
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.survey import fit_catalogue
    >>> from astrokin.synthetic import make_galaxies
    >>> tmp = getfixture("tmp_path")
    >>> gals = make_galaxies(ExponentialArctanDisk(), 3, seed=1, beam=2 * u.arcsec)
    >>> pairs = []
    >>> for i in range(3):
    ...     header = fits.Header({"BMAJ": 2 / 3600, "BMIN": 2 / 3600, "BPA": 0.0})
    ...     fits.writeto(tmp / f"g{i}_mom0.fits", gals.mom0[i], header)
    ...     fits.writeto(tmp / f"g{i}_mom1.fits", gals.mom1[i], header)
    ...     pairs.append((tmp / f"g{i}_mom0.fits", tmp / f"g{i}_mom1.fits"))
    >>> table = fit_catalogue(pairs, tmp / "fits.ecsv", pixel_scale=1 * u.arcsec,
    ...                       mc_samples=50, batch_size=2)
    >>> table["galaxy"].tolist(), table["id"].tolist()
    ([0, 1, 2], ['g0_mom0', 'g1_mom0', 'g2_mom0'])

    With two local worker processes (or ``scheduler='tcp://host:8786'``
    for a running cluster), the same numbers:

    >>> again = fit_catalogue(pairs, tmp / "fits2.ecsv", n_workers=2,
    ...                       pixel_scale=1 * u.arcsec, mc_samples=50,
    ...                       batch_size=2)  # doctest: +SKIP
    """
    _check_options(on_error=on_error, batch_size=batch_size, mc_samples=mc_samples,
                   threads_per_worker=threads_per_worker, n_workers=n_workers,
                   max_in_flight=max_in_flight, seed=seed, client=client, scheduler=scheduler,
                   model=model, device=device, pixel_scale=pixel_scale, beam=beam, log=log,
                   output=output, network=network, resume=resume, overwrite=overwrite,
                   keep_parts=keep_parts, return_table=return_table, refine=refine)
    log = log or (lambda line: None)
    table = read_catalogue(catalogue)
    output = Path(output)
    if output.suffix.lower() != ".ecsv":
        raise ValueError(f"output must be an .ecsv file; got {output}.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"The directory of {output} does not exist.")
    network = None if network is None else str(Path(network).resolve())
    settings = {"network": network or "bundled", "mc_samples": int(mc_samples),
                "seed": None if seed is None else int(seed), "refine": bool(refine),
                "model": None if model is None else type(model).__name__}
    with catalogue_lock(output):
        parts = parts_directory(output)
        failed_path = output.with_name(output.stem + ".failed.ecsv")
        _start_or_resume(output, parts, failed_path, table, settings, resume, overwrite)
        sources = sorted(parts.glob("part-*.ecsv"))
        previous = [output] if output.exists() else []
        done = done_indices(previous + sources)
        todo = np.setdiff1d(table["index"], done, assume_unique=True)
        log(f"{len(table)} galaxies in the catalogue, {len(done)} done before, {len(todo)} to fit")
        spec = {"network": network, "model": model, "mc_samples": int(mc_samples),
                "seed": settings["seed"], "pixel_scale": pixel_scale, "beam": beam,
                "device": device, "threads": int(threads_per_worker), "on_error": on_error,
                "meta": settings, "refine": bool(refine)}
        tasks = (dict(spec, index=table["index"][sl].tolist(), id=table["id"][sl].tolist(),
                      mom0=table["mom0"][sl].tolist(), mom1=table["mom1"][sl].tolist())
                 for sl in _batches(todo, int(batch_size)))
        failures = []

        def write_result(result):
            rows, failed = result
            failures.extend(failed)
            if rows is not None and len(rows):
                first, last = int(rows["galaxy"][0]), int(rows["galaxy"][-1])
                write_table(rows, parts / f"part-{first:012d}-{last:012d}.ecsv", overwrite=True)
            last = rows["galaxy"][-1] if rows is not None and len(rows) else "-"
            log(f"fitted galaxies up to {last} ({len(failed)} failed)")

        if len(todo):
            if client is None and scheduler is None and n_workers is None:
                for task in tasks:
                    write_result(_fit_batch(task))
            else:
                _run_on_dask(tasks, write_result, client, scheduler, n_workers,
                             int(threads_per_worker), max_in_flight)
        if failures:
            from astropy.table import Table

            write_table(Table(rows=failures, names=("galaxy", "id", "mom0", "mom1", "error"),
                              dtype=(np.int64, str, str, str, str)), failed_path, overwrite=True)
            log(f"{len(failures)} galaxies failed; listed in {failed_path}")
        elif failed_path.exists():
            failed_path.unlink()
        sources = sorted(parts.glob("part-*.ecsv"))
        if sources:
            merge_tables(previous + sources, output, overwrite=True)
            if not keep_parts:
                for s in sources:
                    s.unlink()
        if parts.exists() and not keep_parts and not any(parts.iterdir()):
            parts.rmdir()
        if not output.exists():
            raise RuntimeError(f"No galaxy of the catalogue could be fitted; see {failed_path}.")
        _check_complete(output, done, todo, failures)
    if not return_table:
        return output
    from astropy.table import QTable

    return QTable.read(output, format="ascii.ecsv")


def _check_options(*, on_error, batch_size, mc_samples, threads_per_worker, n_workers,
                   max_in_flight, seed, client, scheduler, model, device, pixel_scale, beam,
                   log, output, network, resume, overwrite, keep_parts, return_table, refine):
    """Check `fit_catalogue`'s options before anything is read, locked or written."""
    from astrokin._validation import check_bool, check_integer, pixel_scale_arcsec
    from astrokin.beams import to_beam
    from astrokin.fitting.devices import resolve_device
    from astrokin.fitting.fitter import MAX_MC_SAMPLES
    from astrokin.fitting.parameters import check_model

    for name, value in (("resume", resume), ("overwrite", overwrite),
                        ("keep_parts", keep_parts), ("return_table", return_table),
                        ("refine", refine)):
        check_bool(name, value)  # resume='no' must not resume
    if not isinstance(on_error, str) or on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}.")
    for name, value, minimum in (("batch_size", batch_size, 1), ("mc_samples", mc_samples, 2),
                                 ("threads_per_worker", threads_per_worker, 1)):
        check_integer(name, value, minimum)
    if mc_samples > MAX_MC_SAMPLES:
        raise ValueError(f"mc_samples must be at most {MAX_MC_SAMPLES:,}; got {mc_samples:,}.")
    for name, value, minimum in (("n_workers", n_workers, 1),
                                 ("max_in_flight", max_in_flight, 1), ("seed", seed, 0)):
        if value is not None:
            check_integer(name, value, minimum)
    if sum(x is not None for x in (client, scheduler, n_workers)) > 1:
        raise ValueError("Give at most one of client=, scheduler= and n_workers=.")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be the address of a Dask scheduler, a str such as "
                        f"'tcp://10.0.0.1:8786'; got {type(scheduler).__name__} {scheduler!r}.")
    for name, value in (("output", output), ("network", network)):
        if (value is not None or name == "output") and (
                isinstance(value, bool) or not isinstance(value, (str, os.PathLike))):
            raise TypeError(f"{name} must be a file name (a str or path-like); got "
                            f"{type(value).__name__} {value!r}.")
    if network is not None and not Path(network).is_file():
        raise FileNotFoundError(f"network: no network file {network}.")
    if model is not None:
        check_model(model)
    resolve_device(device)
    if pixel_scale is not None:
        pixel_scale_arcsec(pixel_scale)
    if beam is not None:
        to_beam(beam)
    if log is not None and not callable(log):
        raise TypeError(f"log must be a callable taking one line of text, or None; got "
                        f"{type(log).__name__} {log!r}.")


# ----------------------------------------------------------------------
@contextlib.contextmanager
def catalogue_lock(output):
    """Hold ``<output>.lock`` while a run writes ``output`` and its parts.

    The lock file holds the host and process id of its holder; a lock left by
    a process of this host that no longer runs is taken over.

    Raises
    ------
    astrokin.exceptions.CatalogueLockedError
        If another live run holds it.
    """
    import socket

    from astrokin.exceptions import CatalogueLockedError

    lock = Path(str(output) + ".lock")
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text().strip() if lock.exists() else ""
            host, _, pid = holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # left by a run that died
                continue
            raise CatalogueLockedError(
                f"{output} is being written by another run (process {pid or '?'} on "
                f"{host or '?'}, {lock}); wait for it to finish, or remove {lock} if it has "
                "died.") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield lock
    finally:
        if lock.exists() and lock.read_text().strip() == me:
            lock.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_complete(output, done, todo, failures):
    """The merged table must hold every galaxy fitted before and now (not failed)."""
    from astropy.table import Table

    have = set(np.asarray(Table.read(output, format="ascii.ecsv")["galaxy"], dtype=np.int64))
    failed = {int(f[0]) for f in failures}
    want = set(np.asarray(done, dtype=np.int64).tolist()) | (set(np.asarray(
        todo, dtype=np.int64).tolist()) - failed)
    missing = sorted(want - have)
    if missing:
        raise RuntimeError(f"{output} lacks {len(missing)} of the galaxies fitted (e.g. "
                           f"{missing[:5]}); their parts were lost. Run again with "
                           "resume=True to fit them.")


def _start_or_resume(output, parts, failed_path, table, settings, resume, overwrite):
    """Clear old results (overwrite) or check that they belong to this fit (resume)."""
    import shutil

    if overwrite:
        if parts.exists():
            shutil.rmtree(parts)
        for p in (output, failed_path):
            if p.exists():
                p.unlink()
    elif (output.exists() or parts.exists()) and not resume:
        raise FileExistsError(f"{output} (or its parts) exists; pass resume=True to continue "
                              "that fit or overwrite=True to start again.")
    parts.mkdir(exist_ok=True)
    for path in [output] + sorted(parts.glob("part-*.ecsv")):
        if path.exists():
            _check_previous(path, table, settings)


def _check_previous(path, table, settings):
    from astropy.table import Table

    prev = Table.read(path, format="ascii.ecsv")
    if "galaxy" not in prev.colnames or "id" not in prev.colnames:
        raise ValueError(f"{path} is not a table written by fit_catalogue.")
    stored = prev.meta.get("astrokin_fit_catalogue")
    if stored != settings:
        raise ValueError(f"{path} was fitted with other settings ({stored}) than this call "
                         f"({settings}); pass overwrite=True to start again.")
    index = np.asarray(prev["galaxy"], dtype=np.int64)
    if index.size and (index.max() >= len(table)
                       or list(np.asarray(prev["id"], dtype=str))
                       != list(np.asarray(table["id"][index], dtype=str))):
        raise ValueError(f"The rows of {path} do not match this catalogue (different ids at "
                         "the same index); pass overwrite=True to start again.")


def _batches(todo, batch_size):
    """Slices of runs of consecutive catalogue indices, at most ``batch_size`` long."""
    if not len(todo):
        return
    breaks = np.nonzero(np.diff(todo) != 1)[0] + 1
    for run in np.split(todo, breaks):
        for start in range(0, len(run), batch_size):
            piece = run[start:start + batch_size]
            yield slice(int(piece[0]), int(piece[-1]) + 1)


def _run_on_dask(tasks, write_result, client, scheduler, n_workers, threads, max_in_flight):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    own_client = client is None
    if client is None:
        if scheduler is not None:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=threads,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
    try:
        if max_in_flight is None:
            total = sum(client.nthreads().values()) or 1
            max_in_flight = 2 * total
        tasks = iter(tasks)
        first = [client.submit(_fit_batch, t, key=_key(t), pure=False)
                 for t in islice(tasks, int(max_in_flight))]
        pending = as_completed(first, with_results=True)
        for future, result in pending:
            write_result(result)
            future.release()
            nxt = next(tasks, None)
            if nxt is not None:
                pending.add(client.submit(_fit_batch, nxt, key=_key(nxt), pure=False))
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def _key(task):
    return f"astrokin-fit-{task['index'][0]}-{uuid.uuid4().hex[:8]}"


def _fitter(task):
    """The fitter of this process for the task's network and settings (loaded once)."""
    import torch

    key = (task["network"], task["device"], task["mc_samples"], task["seed"], task["threads"],
           task["refine"])
    if key not in _FITTERS:
        from astrokin.fitting import NeuralKinematicFitter
        from astrokin.survey.allocator import raise_mmap_threshold

        if _in_dask_worker():
            raise_mmap_threshold()  # (Dask's workers map every array over 128 kB afresh)
        torch.set_num_threads(task["threads"])
        kw = dict(mc_samples=task["mc_samples"], seed=task["seed"], device=task["device"],
                  refine=task["refine"],
                  progress=False, keep_samples=False)
        fitter = (NeuralKinematicFitter.pretrained(**kw) if task["network"] is None
                  else NeuralKinematicFitter.load(task["network"], **kw))
        _FITTERS.clear()  # one network per worker process at a time
        _FITTERS[key] = fitter
    return _FITTERS[key]


def _in_dask_worker():
    """Whether this code runs in a task of a Dask worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _fit_batch(task):
    """Fit one batch of consecutive catalogue galaxies; returns (rows or None, failures)."""
    fitter = _fitter(task)
    model = task["model"] if task["model"] is not None else fitter.layout.model_class()
    try:
        return _fit_rows(fitter, model, task, range(len(task["index"]))), []
    except Exception:
        if task["on_error"] == "raise":
            raise
    from astropy.table import vstack

    rows, failures = [], []
    for k in range(len(task["index"])):
        try:
            rows.append(_fit_rows(fitter, model, task, [k]))
        except Exception as err:  # noqa: BLE001 - reported in the failures table
            failures.append((task["index"][k], task["id"][k], task["mom0"][k], task["mom1"][k],
                             f"{type(err).__name__}: {err}"))
    return (vstack(rows, metadata_conflicts="silent") if rows else None), failures


def _fit_rows(fitter, model, task, which):
    from astropy import units as u

    which = list(which)
    mom0, mom1 = load_maps([task["mom0"][k] for k in which], [task["mom1"][k] for k in which])
    first = task["index"][which[0]]
    # Warnings name each galaxy by its catalogue id (else its mom1 file).
    names = [str(task["id"][k]) if task["id"][k] not in (None, "") else str(task["mom1"][k])
             for k in which]
    fitter(model, mom0, mom1, pixel_scale=task["pixel_scale"], beam=task["beam"],
           first_index=first, names=names)
    table = fitter.fit_info["table"]
    table["galaxy"] = np.asarray([task["index"][k] for k in which], dtype=np.int64)
    table.add_column([task["id"][k] for k in which], index=1, name="id")
    # A SkyCoord column only where every map has a WCS would give batches
    # different columns; plain ICRS ra/dec (NaN without a WCS) always exist.
    pos = table.colnames.index("pixel_scale")
    ra = np.full(len(table), np.nan) * u.deg
    dec = np.full(len(table), np.nan) * u.deg
    if "center" in table.colnames:
        icrs = table["center"].icrs
        ra, dec = icrs.ra.to(u.deg), icrs.dec.to(u.deg)
        table.remove_column("center")
        pos = table.colnames.index("pixel_scale")
    table.add_column(ra, index=pos, name="ra")
    table.add_column(dec, index=pos + 1, name="dec")
    table.meta = {"astrokin_fit_catalogue": dict(task["meta"])}
    return table


def _stem(path):
    name = Path(path).name
    for suffix in (".fits.gz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name

