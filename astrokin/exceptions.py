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

See :doc:`/reliability` for the bad inputs tried and what each gets.
"""

__all__ = ["AstrokinError", "CatalogueLockedError", "NetworkFormatError", "TrainingDivergedError"]


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
