r"""Which model fits a galaxy best: the refined likelihood with a penalty for parameters.

A ring-by-ring disc always fits at least as well as a parametric one; whether
it fits *better than its extra parameters explain* is the Bayesian
information criterion (Schwarz 1978) of each refined fit,

.. math::

    {\rm BIC} = -2 \ln \hat L + k \ln n,

with :math:`k` the free parameters (and the fitted mom0 scale) and
:math:`n` the independent measurements. Neighbouring pixels share the beam,
so each map's pixels count as :math:`n_{\rm pix} / A_{\rm beam}` independent
measurements (:math:`A_{\rm beam}` in pixels, at least 1). With noise maps
:math:`-2\ln\hat L = \sum \chi^2 / A_{\rm beam}`; without, the noise of each
map is the maximum-likelihood one,
:math:`-2\ln\hat L = \sum_{\rm maps} n_{\rm eff} \ln({\rm RSS}/n_{\rm pix})`
(constants dropped: they are the same for every model of one galaxy). Only
differences between models of the same galaxy, fitted to the same pixels with
the same noise, mean anything; a difference above ~6 is strong evidence
(Kass & Raftery 1995).

`compare_models` fits several models and tabulates their criteria; a
`~astrokin.models.TiltedRingDisk` fit reports its start model's criterion
beside its own (``start_bic``, ``best_model``).
"""

import numpy as np
import torch
from astropy.table import QTable

__all__ = ["STRONG_EVIDENCE", "compare_models", "information_criterion"]

#: A BIC difference counted as strong evidence for the model with the lower one.
STRONG_EVIDENCE = 6.0


def information_criterion(res0, res1, fit0, fit1, n_free, beam_area, *, sigma0=None,
                          sigma1=None):
    """The BIC of refined fits (see the module notes).

    Parameters
    ----------
    res0, res1 : torch.Tensor
        ``(B, ny, nx)`` data less model of mom0 and mom1, in the data's units.
    fit0, fit1 : torch.Tensor
        ``(B, ny, nx)`` booleans: the pixels fitted in each map.
    n_free : int
        Free parameters of the fit, the mom0 scale included.
    beam_area : torch.Tensor
        ``(B,)`` beam areas in pixels (1 for no beam).
    sigma0, sigma1 : torch.Tensor, optional
        ``(B, ny, nx)`` given noise; without them the noise is the
        maximum-likelihood one of each map.

    Returns
    -------
    bic : torch.Tensor
        ``(B,)``

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.model_choice import information_criterion
    >>> res = torch.ones(1, 4, 4)
    >>> fit = torch.ones(1, 4, 4, dtype=torch.bool)
    >>> information_criterion(res, 2 * res, fit, fit, 3, torch.ones(1))
    tensor([...])
    """
    area = torch.clamp(beam_area.to(res0.dtype), min=1.0)
    n0 = fit0.sum(dim=(-2, -1)).to(res0.dtype)
    n1 = fit1.sum(dim=(-2, -1)).to(res0.dtype)
    zero = torch.zeros_like(res0)
    if sigma0 is not None:
        chi0 = torch.where(fit0, (res0 / sigma0) ** 2, zero).sum(dim=(-2, -1))
        chi1 = torch.where(fit1, (res1 / sigma1) ** 2, zero).sum(dim=(-2, -1))
        m2lnl = (chi0 + chi1) / area
    else:
        tiny = torch.finfo(res0.dtype).tiny
        rss0 = torch.where(fit0, res0 ** 2, zero).sum(dim=(-2, -1)).clamp(min=tiny)
        rss1 = torch.where(fit1, res1 ** 2, zero).sum(dim=(-2, -1)).clamp(min=tiny)
        m2lnl = (n0 * torch.log(rss0 / n0.clamp(min=1.0))
                 + n1 * torch.log(rss1 / n1.clamp(min=1.0))) / area
    n_eff = torch.clamp((n0 + n1) / area, min=2.0)
    return m2lnl + n_free * torch.log(n_eff)


def compare_models(fitter, models, mom0, mom1, **kwargs):
    """Fit several models to the same maps; tabulate their BIC and the best per galaxy.

    Parameters
    ----------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        A refining fitter (``refine=True``): the criterion is that of the
        refined fits.
    models : list of `~astrokin.models.KinematicDiskModel`
        The candidates, e.g. ``[ExponentialArctanDisk(), TiltedRingDisk()]``.
    mom0, mom1
        The maps, as the fitter takes them.
    **kwargs
        Passed to the fitter (``pixel_scale``, ``beam``, ``mask``...).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per galaxy: ``galaxy``, ``bic_<Model>`` for each model,
        ``best_model`` (lowest BIC), ``delta_bic`` (the runner-up's BIC less
        the best's) and ``strong`` (``delta_bic`` above `STRONG_EVIDENCE`).
    fits : dict
        Model class name to ``(fitted, fit_info)``.

    Raises
    ------
    ValueError
        If the fitter does not refine, or fewer than two models are given.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.fitting import NeuralKinematicFitter, compare_models
    >>> from astrokin.models import ExponentialArctanDisk, TiltedRingDisk
    >>> truth = ExponentialArctanDisk(inclination=55 * u.deg, pa=40 * u.deg,
    ...                               r_scale=5 * u.arcsec, r_turn=2 * u.arcsec)
    >>> mom0, mom1 = truth.render((48, 48), 1 * u.arcsec, beam=3 * u.arcsec)
    >>> fitter = NeuralKinematicFitter.pretrained(progress=False)
    >>> table, fits = compare_models(fitter, [ExponentialArctanDisk(),
    ...                                       TiltedRingDisk(n_rings=6)], mom0, mom1,
    ...                              pixel_scale=1 * u.arcsec, beam=3 * u.arcsec)
    >>> table.colnames[:3]
    ['galaxy', 'bic_ExponentialArctanDisk', 'bic_TiltedRingDisk6']
    """
    if not getattr(fitter, "refine", False):
        raise ValueError("compare_models needs a fitter with refine=True: the criterion is the "
                         "likelihood of the refined fits.")
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"compare_models needs at least two models; got {len(models)}.")
    names = [type(m).__name__ for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"compare_models needs models of different classes; got {names}.")
    fits = {}
    for name, model in zip(names, models, strict=True):
        fitted = fitter(model, mom0, mom1, **kwargs)
        fits[name] = (fitted, fitter.fit_info)
    bic = np.stack([np.asarray(fits[nm][1]["table"]["bic"], dtype=float) for nm in names],
                   axis=1)
    table = QTable()
    table["galaxy"] = np.arange(bic.shape[0])
    for j, nm in enumerate(names):
        table[f"bic_{nm}"] = bic[:, j]
    order = np.argsort(bic, axis=1)
    best = order[:, 0]
    rows = np.arange(bic.shape[0])
    table["best_model"] = np.array(names)[best]
    table["delta_bic"] = bic[rows, order[:, 1]] - bic[rows, best]
    table["strong"] = table["delta_bic"] > STRONG_EVIDENCE
    return table, fits
