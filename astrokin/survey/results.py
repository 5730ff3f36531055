"""Result tables of catalogue fits on disk: part files, resuming, streaming merge.

`~astrokin.survey.fit_catalogue` writes the rows of every finished batch of
galaxies to a part file (ECSV, written to a temporary name and renamed into
place) as soon as it arrives, and merges the parts into the output table at
the end. The merge streams text lines in catalogue order (a k-way merge on
the ``galaxy`` column, the first of every row), so neither step holds more
than a batch of rows in memory, whatever the size of the catalogue.
"""

import heapq
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["done_indices", "merge_tables", "parts_directory", "write_table"]


def parts_directory(output):
    """The directory holding the part files of the fit written to ``output``.

    Parameters
    ----------
    output : str or path-like
        The final table's path.

    Returns
    -------
    path : `pathlib.Path`
        ``<output>.parts`` beside it.

    Examples
    --------
    >>> from astrokin.survey.results import parts_directory
    >>> parts_directory("fits/wallaby.ecsv").name
    'wallaby.ecsv.parts'
    """
    output = Path(output)
    return output.with_name(output.name + ".parts")


def write_table(table, path, *, overwrite=False):
    """Write an ECSV table atomically: to a temporary file, then renamed into place.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The table.
    path : str or path-like
        Destination (``.ecsv``).
    overwrite : bool, optional
        Replace an existing file.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astrokin.survey.results import write_table
    >>> write_table(Table({"galaxy": [0, 1]}), getfixture("tmp_path") / "t.ecsv")
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".ecsv", dir=path.parent)
    os.close(fd)
    try:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def done_indices(paths):
    """Catalogue indices (the ``galaxy`` column) present in result tables.

    Parameters
    ----------
    paths : iterable of str or path-like
        ECSV result tables (parts or a merged output).

    Returns
    -------
    indices : numpy.ndarray
        Sorted, unique ``int64`` indices.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astrokin.survey.results import done_indices, write_table
    >>> path = getfixture("tmp_path") / "t.ecsv"
    >>> write_table(Table({"galaxy": [3, 1], "x": [0.5, 0.2]}), path)
    >>> done_indices([path]).tolist()
    [1, 3]
    """
    found = [np.empty(0, dtype=np.int64)]
    for path in paths:
        for line in _data_lines(path):
            found.append(np.array([_row_index(line)], dtype=np.int64))
    return np.unique(np.concatenate(found))


def merge_tables(sources, output, *, overwrite=False):
    """Merge ECSV result tables with identical columns into one, sorted by ``galaxy``.

    Every source must be sorted by its first column, ``galaxy``; the merge
    reads all sources line by line (a k-way merge), so memory does not grow
    with their size. Rows whose ``galaxy`` appears in more than one source
    are written once (the first source's row).

    Parameters
    ----------
    sources : list of str or path-like
        ECSV tables written by astropy with the same header.
    output : str or path-like
        The merged table, written atomically.
    overwrite : bool, optional
        Replace an existing ``output``.

    Returns
    -------
    n_rows : int
        Rows written.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astrokin.survey.results import merge_tables, write_table
    >>> tmp = getfixture("tmp_path")
    >>> write_table(Table({"galaxy": [0, 2], "x": [1.0, 3.0]}), tmp / "a.ecsv")
    >>> write_table(Table({"galaxy": [1], "x": [2.0]}), tmp / "b.ecsv")
    >>> merge_tables([tmp / "a.ecsv", tmp / "b.ecsv"], tmp / "all.ecsv")
    3
    >>> Table.read(tmp / "all.ecsv")["x"].tolist()
    [1.0, 2.0, 3.0]
    """
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("No tables to merge.")
    output = Path(output)
    if output.exists() and not overwrite and output not in sources:
        raise FileExistsError(f"{output} exists; pass overwrite=True to replace it.")
    header = _header(sources[0])
    for s in sources[1:]:
        other = _header(s)
        if other != header:
            diff = sorted(set(other) ^ set(header))[:4]
            raise ValueError(f"{s} does not have the columns and metadata of {sources[0]} "
                             f"(differing header lines: {diff}); it cannot be merged.")
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}-", suffix=".ecsv", dir=output.parent)
    n = 0
    try:
        with os.fdopen(fd, "w") as out:
            out.writelines(header)
            streams = [((_row_index(line), k, line) for line in _data_lines(s))
                       for k, s in enumerate(sources)]
            last = None
            for index, _, line in heapq.merge(*streams):
                if index == last:
                    continue
                out.write(line)
                last = index
                n += 1
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


def _header(path):
    """Comment lines plus the column-name line of an ECSV file."""
    lines = []
    with open(path) as f:
        for line in f:
            lines.append(line)
            if not line.startswith("#"):
                break
    return lines


def _data_lines(path):
    with open(path) as f:
        seen_names = False
        for line in f:
            if line.startswith("#"):
                continue
            if not seen_names:
                seen_names = True
                continue
            if line.strip():
                yield line if line.endswith("\n") else line + "\n"


def _row_index(line):
    return int(line.split(" ", 1)[0])
