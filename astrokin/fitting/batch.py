"""Batches of prepared maps: what the network reads, as named fields.

`~astrokin.fitting.preprocessing.prepare_batch` turns observations into a
`PreparedBatch` (numpy arrays, one row per galaxy); ``batch.to(device)``
gives the `TensorBatch` the network, the training loop and MC dropout work
on. Both are small typed containers; for code written against the
dictionaries that earlier versions returned, their fields can also be read by
name (``batch["mom0"]``).
"""

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["PreparedBatch", "TensorBatch"]


class _ByName:
    """Read access to a dataclass's fields by name, as the dictionaries it replaces had."""

    def __getitem__(self, key):
        if not isinstance(key, str) or key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        """The field ``key``, or ``default`` when there is no such field or it is None."""
        value = getattr(self, key, None) if key in self.keys() else None
        return default if value is None else value

    @classmethod
    def keys(cls):
        """The field names."""
        return tuple(f.name for f in fields(cls))


@dataclass(eq=False)
class PreparedBatch(_ByName):
    """Network inputs, masks and per-galaxy context of ``N`` galaxies (numpy).

    Attributes
    ----------
    mom0, mom1 : `numpy.ndarray`
        ``(N, size, size)`` normalised maps, 0 where masked: mom0 divided by
        its peak, mom1 as ``(mom1 - v_ref) / v_half``.
    mask0, mask1 : `numpy.ndarray`
        ``(N, size, size)`` boolean validity of the maps.
    pixel_scale : `numpy.ndarray`
        ``(N,)`` arcsec per pixel of the ``size`` grid.
    half_width : `numpy.ndarray`
        ``(N,)`` half the side of the fitted square, arcsec.
    v_ref, v_half : `numpy.ndarray`
        ``(N,)`` the velocity normalisation, km/s.
    peak : `numpy.ndarray`
        ``(N,)`` mom0 peak in input units.
    beam : `numpy.ndarray`
        ``(N, 3)`` ``(bmaj, bmin, bpa)`` in arcsec, arcsec, deg (pixel
        frame); rows of NaN where there is none.
    side, pad_y, pad_x : `numpy.ndarray` or None
        ``(N,)`` padding bookkeeping: the side of the padded square and the
        rows and columns added before the map (None for batches read from
        training shards, which keep no frame).

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting.preprocessing import parse_maps, prepare_batch
    >>> y, x = np.mgrid[:40, :40]
    >>> batch = prepare_batch(parse_maps(np.exp(-np.hypot(x - 20, y - 20) / 8), 5.0 * (x - 20),
    ...                                  pixel_scale=1 * u.arcsec))
    >>> len(batch), batch.mom0.shape, batch.to("cpu").mom0.shape
    (1, (1, 64, 64), torch.Size([1, 1, 64, 64]))
    """

    mom0: np.ndarray
    mom1: np.ndarray
    mask0: np.ndarray
    mask1: np.ndarray
    pixel_scale: np.ndarray
    half_width: np.ndarray
    v_ref: np.ndarray
    v_half: np.ndarray
    peak: np.ndarray
    beam: np.ndarray
    side: np.ndarray | None = None
    pad_y: np.ndarray | None = None
    pad_x: np.ndarray | None = None

    def __len__(self):
        return len(self.mom0)

    def select(self, index):
        """The galaxies ``index`` (an index array or slice) as a new batch."""
        return PreparedBatch(**{k: (None if v is None else v[index])
                                for k, v in self._items()})

    @classmethod
    def concatenate(cls, batches):
        """One batch of the galaxies of ``batches``, in order."""
        batches = list(batches)
        out = {}
        for name in cls.keys():
            parts = [getattr(b, name) for b in batches]
            out[name] = None if any(p is None for p in parts) else np.concatenate(parts)
        return cls(**out)

    def to(self, device):
        """The batch as float32 tensors on ``device`` (a `TensorBatch`).

        The maps gain a channel axis, ``(N, 1, size, size)``; the beam is
        None when no galaxy has one.
        """
        import torch

        def tensor(values):
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        beam = np.asarray(self.beam, dtype=float)
        return TensorBatch(
            mom0=tensor(self.mom0)[:, None], mom1=tensor(self.mom1)[:, None],
            mask0=tensor(self.mask0), mask1=tensor(self.mask1),
            pixel_scale=tensor(self.pixel_scale), half_width=tensor(self.half_width),
            v_ref=tensor(self.v_ref), v_half=tensor(self.v_half), peak=tensor(self.peak),
            beam=None if np.isnan(beam).all() else tensor(beam),
        )

    def _items(self):
        return ((f.name, getattr(self, f.name)) for f in fields(self))


@dataclass(eq=False)
class TensorBatch(_ByName):
    """A batch of prepared maps as torch tensors: what the network reads.

    Attributes
    ----------
    mom0, mom1 : `torch.Tensor`
        ``(B, 1, size, size)`` normalised maps.
    mask0, mask1 : `torch.Tensor`
        ``(B, size, size)``, 1 where valid.
    pixel_scale, half_width, v_ref, v_half : `torch.Tensor`
        ``(B,)``, as in `PreparedBatch`.
    peak : `torch.Tensor` or None
        ``(B,)`` mom0 peak in input units.
    beam : `torch.Tensor` or None
        ``(B, 3)``, NaN rows for galaxies without a beam; None when none has
        one.
    """

    mom0: object
    mom1: object
    mask0: object
    mask1: object
    pixel_scale: object
    half_width: object
    v_ref: object
    v_half: object
    peak: object = None
    beam: object = None

    def __len__(self):
        return int(self.mom0.shape[0])

    @classmethod
    def from_mapping(cls, batch):
        """A `TensorBatch` from a mapping with the same keys (``peak`` and ``beam`` optional)."""
        if isinstance(batch, cls):
            return batch
        return cls(**{k: batch.get(k) for k in cls.keys()})

    @property
    def context(self):
        """The per-galaxy context of the parameter ranges: ``half_width``, ``v_ref``, ``v_half``."""
        return {"half_width": self.half_width, "v_ref": self.v_ref, "v_half": self.v_half}

    def select(self, index):
        """The galaxies ``index`` (an index tensor or slice) as a new batch."""
        return TensorBatch(**{f.name: (None if getattr(self, f.name) is None
                                       else getattr(self, f.name)[index])
                              for f in fields(self)})
