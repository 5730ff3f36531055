"""Exceptions raised by astrokin.

Everything astrokin raises on bad input is one of the built-in exception types
(`ValueError`, `TypeError`, `FileNotFoundError`, `FileExistsError`) or
`astropy.units.UnitsError`, with a message saying what was expected and what
was given. The few failures that deserve a type of their own derive from both
`AstrokinError` and the built-in type a caller would otherwise catch, so
``except ValueError`` keeps working:

- `NetworkFormatError` (a `ValueError`): a file given to
  `NeuralKinematicFitter.load <astrokin.fitting.NeuralKinematicFitter.load>`
  is not a network astrokin can read: truncated or corrupt, not a saved
  network at all, written by a newer astrokin, or saved for another model.
- `TrainingDivergedError` (a `RuntimeError`): training produced a non-finite
  or exploding loss; the fitter keeps its last good weights.

Warnings form one family users can filter: `AstrokinWarning` (an
`~astropy.utils.exceptions.AstropyUserWarning`) with `DataQualityWarning`
(odd data: too few beams, no velocity gradient, a galaxy cut by the map
edge, more than one source, velocities that look like m/s, a hot mom0
pixel; each naming the galaxies) and `BoundWarning` (a result pinned at the
bounds of the model or of the network's range)::

    import warnings
    from astrokin.exceptions import DataQualityWarning
    warnings.simplefilter("ignore", DataQualityWarning)

See :doc:`/reliability` for the bad inputs tried and what each gets.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["AstrokinError", "AstrokinWarning", "BoundWarning", "CatalogueLockedError",
           "DataQualityWarning", "NetworkFormatError", "TrainingDivergedError"]


class AstrokinWarning(AstropyUserWarning):
    """Base class of astrokin's warnings.

    Examples
    --------
    >>> from astropy.utils.exceptions import AstropyUserWarning
    >>> from astrokin.exceptions import AstrokinWarning, DataQualityWarning
    >>> issubclass(DataQualityWarning, AstrokinWarning), issubclass(AstrokinWarning,
    ...                                                             AstropyUserWarning)
    (True, True)
    """


class DataQualityWarning(AstrokinWarning):
    """The maps of a galaxy are odd in a way that makes its fit doubtful.

    The message names each galaxy (its name where one was given, as
    `~astrokin.survey.fit_catalogue` gives its ids, else its index) and the
    problem; see `astrokin.fitting.data_quality`.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.exceptions import DataQualityWarning
    >>> from astrokin.fitting.preprocessing import parse_maps
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = parse_maps(np.ones((20, 20)), np.full((20, 20), 1500.0),
    ...                    pixel_scale=1 * u.arcsec, beam=2 * u.arcsec, names=["flat"])
    >>> [str(w.message).split(" (")[0] for w in caught if w.category is DataQualityWarning]
    ['No velocity gradient', 'Cut by the map edge']
    """


class BoundWarning(AstrokinWarning):
    """A fitted value sits at a bound: of the model given, or of the network's range.

    Examples
    --------
    >>> from astrokin.exceptions import BoundWarning, AstrokinWarning
    >>> issubclass(BoundWarning, AstrokinWarning)
    True
    """


class AstrokinError(Exception):
    """Base class of astrokin's own exceptions."""


class NetworkFormatError(AstrokinError, ValueError):
    """A saved network cannot be read: corrupt, truncated, foreign, or from a newer format.

    Examples
    --------
    >>> from astrokin.exceptions import NetworkFormatError
    >>> issubclass(NetworkFormatError, ValueError)
    True
    """


class CatalogueLockedError(AstrokinError, RuntimeError):
    """Another run is writing the same catalogue output (`~astrokin.survey.fit_catalogue`).

    Two runs into one output would each merge the other's unfinished parts:
    the second is refused, naming the first's process and the lock file.

    Examples
    --------
    >>> from astrokin.exceptions import CatalogueLockedError
    >>> issubclass(CatalogueLockedError, RuntimeError)
    True
    """


class TrainingDivergedError(AstrokinError, RuntimeError):
    """Training met a non-finite (NaN, inf) or exploding loss, or non-finite gradients.

    Training stops at the first such step. The fitter keeps the last weights
    that gave a finite loss (``fitter.network``), so it stays usable; the
    message says at which epoch and batch, and what to try.

    Attributes
    ----------
    epoch : int
        0-based epoch in which training stopped.
    loss : float
        The offending loss (NaN when the gradients were the problem).
    """

    def __init__(self, message, *, epoch=None, loss=None):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss
