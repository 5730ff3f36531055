"""Catalogue fitting: Dask LocalCluster against one process, resuming, failures, bad input."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable, Table

from astrokin.survey import fit_catalogue, load_maps, read_catalogue

from .conftest import N_GALAXIES, numeric_columns

#: Few MC samples keep the tests fast; the code path is the same for 1000.
FIT = dict(mc_samples=100, seed=0)


def assert_tables_equal(a, b, rows=None):
    rows = slice(None) if rows is None else rows
    assert a.colnames == b.colnames
    for col in numeric_columns(a):
        np.testing.assert_array_equal(np.asarray(a[col])[rows], np.asarray(b[col])[rows],
                                      err_msg=col)
    assert list(a["id"][rows]) == list(b["id"][rows])


def assert_same_fits(table, reference, rows=None):
    """The fits of other batches: the same to rounding, or within 1% of an error bar.

    Refinement's stopping tests can turn a rounding difference (batched
    products of other sizes) into one step more or less: a few galaxies
    then differ by a small fraction of their errors (measured: 0.003 sigma
    at most, 1e-3 deg for a disc inclined by 89.4 deg), the others by
    rounding only.
    """
    rows = slice(None) if rows is None else rows
    off = np.zeros(len(table), dtype=bool)
    for col in ("inclination", "pa", "vsini", "x_0"):
        ours, theirs = np.asarray(table[col]), np.asarray(reference[col])[rows]
        gap = ours - theirs
        if col == "pa":
            gap = (gap + 180.0) % 360.0 - 180.0
        std = np.asarray(reference[f"{col}_std"])[rows]
        assert np.all(np.abs(gap) <= 0.01 * std), col
        off |= np.abs(gap) > 1e-5 + 1e-6 * np.abs(theirs)
    np.testing.assert_allclose(np.asarray(table["inclination_std"]),
                               np.asarray(reference["inclination_std"])[rows], rtol=0.01)
    assert off.mean() <= 0.02, np.flatnonzero(off)


@pytest.fixture(scope="module")
def reference(catalogue, tmp_path_factory):
    """The whole catalogue fitted in this process (no Dask), batches of 64."""
    out = tmp_path_factory.mktemp("ref") / "fits.ecsv"
    return fit_catalogue(catalogue, out, batch_size=64, **FIT)


def test_reference_table(reference, catalogue):
    assert len(reference) == N_GALAXIES
    assert reference["galaxy"].tolist() == list(range(N_GALAXIES))
    assert reference["id"][7] == "G0007"
    assert reference["inclination"].unit == "deg"
    # every map has a WCS: the centre is on the sky, near the map centre given in the header
    assert np.all(np.isfinite(reference["ra"].value))
    assert np.all(np.abs(reference["ra"].value - (150.0 + 0.01 * reference["galaxy"])) < 10 / 3600)
    assert QTable.read(catalogue).colnames == ["id", "mom0", "mom1"]  # input untouched


def test_two_worker_local_cluster_matches_one_process_exactly(reference, catalogue, tmp_path):
    """A 2-worker LocalCluster gives bit-identical rows to the in-process run."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        table = fit_catalogue(catalogue, tmp_path / "dask.ecsv", client=client, batch_size=64,
                              max_in_flight=3, **FIT)
        # each worker process loaded the network once and kept it
        cached = client.run(lambda: len(__import__("astrokin.survey.catalogue",
                                                   fromlist=["_FITTERS"])._FITTERS))
    assert sorted(cached.values()) == [1, 1]
    assert_tables_equal(reference, table)
    assert not (tmp_path / "dask.ecsv.parts").exists()


def test_batch_size_changes_results_by_rounding_only(reference, catalogue, tmp_path):
    """Galaxy i's dropout masks come from stream (seed, i) whatever its batch.

    Other batch sizes give the same numbers up to float32 rounding of the
    network on different batch shapes, which refinement's stopping tests
    can turn into a step more or less (`assert_same_fits`).
    """
    table = fit_catalogue(catalogue, tmp_path / "b50.ecsv", batch_size=50, **FIT)
    assert_same_fits(table, reference)


def test_rerun_resumes_after_a_failure(reference, catalogue, tmp_path):
    cat = read_catalogue(catalogue)
    broken = cat.copy()
    files = list(broken["mom1"])
    files[150] = str(tmp_path / "missing_mom1.fits")
    broken["mom1"] = files
    out = tmp_path / "fits.ecsv"
    lines = []
    with pytest.raises(FileNotFoundError, match="missing_mom1"):
        fit_catalogue(broken, out, batch_size=64, log=lines.append, **FIT)
    assert not out.exists()
    parts = sorted(p.name for p in (tmp_path / "fits.ecsv.parts").iterdir())
    assert parts == ["part-000000000000-000000000063.ecsv", "part-000000000064-000000000127.ecsv"]
    # the file is back: the rerun fits only what is missing, and the table is as in one go
    table = fit_catalogue(cat, out, batch_size=64, log=lines.append, **FIT)
    assert f"{N_GALAXIES} galaxies in the catalogue, 128 done before, 172 to fit" in lines
    assert_tables_equal(reference, table)
    # a third run has nothing to do and keeps the file
    mtime = out.stat().st_mtime_ns
    fit_catalogue(cat, out, batch_size=64, log=lines.append, **FIT)
    n = N_GALAXIES
    assert lines[-1] == f"{n} galaxies in the catalogue, {n} done before, 0 to fit"
    assert out.stat().st_mtime_ns == mtime


def test_on_error_skip_lists_failures(reference, catalogue, tmp_path):
    cat = read_catalogue(catalogue)[:40]
    bad = tmp_path / "bad_mom0.fits"
    fits.PrimaryHDU(np.zeros((3, 4, 5))).writeto(bad)  # a cube, not a map
    files = list(cat["mom0"])
    files[10] = str(bad)
    cat["mom0"] = files
    out = tmp_path / "fits.ecsv"
    table = fit_catalogue(cat, out, batch_size=16, on_error="skip", **FIT)
    assert 10 not in table["galaxy"] and len(table) == 39
    failed = Table.read(tmp_path / "fits.failed.ecsv")
    assert failed["galaxy"].tolist() == [10] and failed["id"][0] == "G0010"
    keep = [g for g in range(40) if g != 10]
    # the failing batch was refitted galaxy by galaxy: the same up to rounding
    assert_same_fits(table, reference, keep)


def test_existing_output_is_protected(catalogue, tmp_path):
    cat = read_catalogue(catalogue)[:8]
    out = tmp_path / "fits.ecsv"
    fit_catalogue(cat, out, batch_size=8, **FIT)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fit_catalogue(cat, out, resume=False, **FIT)
    with pytest.raises(ValueError, match="other settings"):
        fit_catalogue(cat, out, mc_samples=50, seed=0)
    other = cat.copy()
    other["id"][3] = "someone else"
    with pytest.raises(ValueError, match="do not match this catalogue"):
        fit_catalogue(other, out, **FIT)
    again = fit_catalogue(cat, out, overwrite=True, mc_samples=50, seed=0)
    assert len(again) == 8


@pytest.mark.parametrize("option", ["resume", "overwrite", "keep_parts", "return_table",
                                    "refine"])
def test_boolean_options_take_true_or_false_only(catalogue, tmp_path, option):
    # resume="no" would otherwise resume, overwrite="no" overwrite.
    out = tmp_path / "fits.ecsv"
    with pytest.raises(TypeError, match=f"^{option} must be True or False; got str 'no'.$"):
        fit_catalogue(read_catalogue(catalogue)[:2], out, **{option: "no"}, **FIT)
    assert not any(tmp_path.iterdir())  # refused before anything is read or written
    # numpy's bools are bools
    kw = {"mc_samples": 4, "seed": 0, "refine": np.False_, option: np.bool_(option == "resume")}
    fitted = fit_catalogue(read_catalogue(catalogue)[:1], out, **kw)
    assert len(QTable.read(out)) == 1
    assert fitted == out if option == "return_table" else len(fitted) == 1


def test_read_catalogue_inputs(catalogue, tmp_path):
    from_file = read_catalogue(catalogue)
    assert from_file["mom0"][0] == str(catalogue.parent / "gal0000_mom0.fits")
    pairs = read_catalogue([(r["mom0"], r["mom1"]) for r in from_file[:3]])
    assert pairs["id"].tolist() == ["gal0000_mom0", "gal0001_mom0", "gal0002_mom0"]
    with pytest.raises(ValueError, match="columns 'mom0' and 'mom1'"):
        read_catalogue(Table({"mom0": ["a.fits"]}))
    with pytest.raises(ValueError, match="empty"):
        read_catalogue([])
    with pytest.raises(ValueError, match="pair"):
        read_catalogue([("a.fits",)])
    with pytest.raises(FileNotFoundError):
        read_catalogue(tmp_path / "nope.ecsv")
    with pytest.raises(ValueError, match="n_workers"):
        fit_catalogue(from_file, tmp_path / "x.ecsv", n_workers=0)
    with pytest.raises(ValueError, match="at most one"):
        fit_catalogue(from_file, tmp_path / "x.ecsv", n_workers=2, scheduler="tcp://x:1")
    with pytest.raises(ValueError, match=".ecsv"):
        fit_catalogue(from_file, tmp_path / "x.fits")


def test_load_maps_copies_data(catalogue):
    cat = read_catalogue(catalogue)
    mom0, mom1 = load_maps(cat["mom0"][:2], cat["mom1"][:2])
    assert mom1[0].header["BUNIT"] == "km/s" and mom0[1].data.shape == (40, 40)
    assert isinstance(mom0[0].data, np.ndarray) and not isinstance(mom0[0].data, np.memmap)


def test_a_second_run_into_the_same_output_is_refused(catalogue, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from astrokin.exceptions import CatalogueLockedError

    cat = read_catalogue(catalogue)[:4]
    out = tmp_path / "fits.ecsv"
    lock = tmp_path / "fits.ecsv.lock"
    # A live run (this process) holds the output: refused, nothing written.
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")
    with pytest.raises(CatalogueLockedError, match="being written by another run"):
        fit_catalogue(cat, out, batch_size=4, **FIT)
    assert not out.exists() and lock.exists()
    # A lock left by a run that died is taken over, and released at the end.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    table = fit_catalogue(cat, out, batch_size=4, **FIT)
    assert len(table) == 4 and not lock.exists()


def test_two_concurrent_runs_never_report_success_with_rows_missing(catalogue, tmp_path):
    import threading

    from astrokin.exceptions import CatalogueLockedError

    cat = read_catalogue(catalogue)[:12]
    out = tmp_path / "both.ecsv"
    outcomes = []

    def run():
        try:
            outcomes.append(len(fit_catalogue(cat, out, batch_size=3, **FIT)))
        except CatalogueLockedError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # (Threads of one process share its id: the second is refused like another process.)
    assert 12 in outcomes
    assert any(isinstance(o, CatalogueLockedError) for o in outcomes)
    assert len(Table.read(out, format="ascii.ecsv")) == 12
