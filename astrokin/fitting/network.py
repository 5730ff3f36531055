"""The physics-aware semantic auto-encoder: two encoders and a rendering decoder.

`KinematicAutoencoder` reads a batch of normalised 64x64 moment maps (see
`astrokin.fitting.preprocessing`), predicts the free parameters of a disc
model with two `~astrokin.fitting.encoders.Encoder` subnets, turns them into
values of every model parameter with a `~astrokin.fitting.parameters.ParameterLayout`,
and renders model maps with `astrokin.rendering.DiskRenderer`, each galaxy at
its own pixel scale and with its own restoring beam (the decoder of Dawson et
al. 2021, section 2.4, plus the beam smearing the paper proposed). The
rendered maps are normalised exactly like the inputs, and `reconstruction_loss`
compares them over valid pixels only.
"""

import torch
from torch import nn

from astrokin.fitting.batch import TensorBatch
from astrokin.fitting.encoders import IMAGE_SIZE, Encoder

__all__ = ["KinematicAutoencoder", "galaxy_losses", "masked_mse", "reconstruction_loss"]

#: FWHM (in pixels of the 64x64 grid) standing in for "no beam" when a batch
#: mixes galaxies with and without beams: its Gaussian factor is 1 to 1e-12.
_NO_BEAM_PIXELS = 1e-6


class KinematicAutoencoder(nn.Module):
    """Encoders + rendering decoder for one disc model class.

    Parameters
    ----------
    layout : `~astrokin.fitting.parameters.ParameterLayout`
        Which parameters each encoder predicts, and their ranges.
    dropout : float, optional
        Dropout probability of both encoders (paper: 0.1).
    device : str or `torch.device`, optional

    Examples
    --------
    >>> import torch
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.fitting.network import KinematicAutoencoder, reconstruction_loss
    >>> from astrokin.fitting.parameters import ParameterLayout
    >>> net = KinematicAutoencoder(ParameterLayout(ExponentialArctanDisk()))
    >>> batch = {"mom0": torch.rand(2, 1, 64, 64), "mom1": torch.rand(2, 1, 64, 64) - 0.5,
    ...          "mask0": torch.ones(2, 64, 64), "mask1": torch.ones(2, 64, 64),
    ...          "pixel_scale": torch.ones(2), "half_width": torch.full((2,), 32.0),
    ...          "v_ref": torch.zeros(2), "v_half": torch.full((2,), 200.0),
    ...          "beam": torch.tensor([[2.0, 2.0, 0.0]] * 2)}
    >>> fixed = {"amplitude": 1.0, "z_scale": 0.0}
    >>> params, mom0, mom1 = net(batch, fixed)
    >>> mom0.shape, float(reconstruction_loss(mom0, mom1, batch).detach()) > 0
    (torch.Size([2, 64, 64]), True)
    """

    def __init__(self, layout, dropout=0.1, device="cpu"):
        super().__init__()
        from astrokin.rendering import DiskRenderer

        self.layout = layout
        self.intensity_encoder = Encoder(layout.n_outputs["intensity"], dropout)
        self.velocity_encoder = Encoder(layout.n_outputs["velocity"], dropout)
        self.renderer = DiskRenderer(layout.model_class, (IMAGE_SIZE, IMAGE_SIZE), device=device)
        self.to(device)

    @property
    def encoders(self):
        """``(intensity_encoder, velocity_encoder)``: the mom0 and mom1 encoders."""
        return (self.intensity_encoder, self.velocity_encoder)

    def encode(self, mom0, mom1):
        """Encoder outputs in [-1, 1]: ``{'intensity': (B, n_i), 'velocity': (B, n_v)}``."""
        return {"intensity": self.intensity_encoder(mom0), "velocity": self.velocity_encoder(mom1)}

    def render(self, params, batch):
        """Model maps of ``params`` in physical units (before normalisation).

        Galaxies without a beam (NaN rows of ``batch.beam``) are rendered
        with a beam far below a pixel when others in the batch have one.

        Parameters
        ----------
        params : dict of `torch.Tensor`
            Every model parameter ``(B,)`` in canonical units.
        batch : `~astrokin.fitting.batch.TensorBatch` or dict
            Gives ``pixel_scale`` and ``beam``.

        Returns
        -------
        mom0, mom1 : `torch.Tensor`
            ``(B, 64, 64)``.
        """
        batch = TensorBatch.from_mapping(batch)
        beam = batch.beam
        ps = batch.pixel_scale
        if beam is not None:
            none = torch.isnan(beam).any(dim=1)
            if bool(none.all()):
                beam = None
            elif bool(none.any()):
                tiny = (_NO_BEAM_PIXELS * ps)[:, None] * torch.tensor([1.0, 1.0, 0.0],
                                                                      dtype=ps.dtype,
                                                                      device=ps.device)
                beam = torch.where(none[:, None], tiny, beam)
        return self.renderer(params, ps, beam)

    def decode(self, params, batch):
        """Rendered maps normalised like the inputs: ``(mom0 / peak, (mom1 - v_ref) / v_half)``.

        ``batch.beam`` is ``(B, 3)`` with NaN rows for galaxies without a
        beam, or None.
        """
        batch = TensorBatch.from_mapping(batch)
        mom0, mom1 = self.render(params, batch)
        mask0 = batch.mask0 > 0
        peak = torch.where(mask0, mom0, torch.full_like(mom0, -torch.inf)).amax(dim=(-2, -1))
        peak = torch.clamp(peak, min=torch.finfo(mom0.dtype).tiny)
        norm0 = mom0 / peak[:, None, None]
        norm1 = (mom1 - batch.v_ref[:, None, None]) / batch.v_half[:, None, None]
        return norm0, norm1

    def forward(self, batch, fixed_values, ties=None, overrides=()):
        """Encode, map to parameters, render.

        Parameters
        ----------
        batch : `~astrokin.fitting.batch.TensorBatch` or dict of `torch.Tensor`
            ``mom0``, ``mom1`` ``(B, 1, 64, 64)``; ``mask0``, ``mask1``
            ``(B, 64, 64)``; ``pixel_scale``, ``half_width``, ``v_ref``,
            ``v_half`` ``(B,)``; ``beam`` ``(B, 3)`` or None.
        fixed_values : dict
            Values of the parameters that are not predicted.
        ties : dict, optional
            Tie callables (default: the layout's).
        overrides : sequence of str, optional
            Predicted parameters replaced by their ``fixed_values``.

        Returns
        -------
        params : dict of `torch.Tensor`
            Every model parameter ``(B,)`` in canonical units.
        mom0, mom1 : `torch.Tensor`
            ``(B, 64, 64)`` normalised rendered maps.
        """
        batch = TensorBatch.from_mapping(batch)
        outputs = self.encode(batch.mom0, batch.mom1)
        params = self.layout.to_parameters(outputs, batch.context, fixed_values, ties, overrides)
        mom0, mom1 = self.decode(params, batch)
        return params, mom0, mom1


def masked_mse(pred, target, mask):
    """Per-galaxy mean squared error over the pixels where ``mask`` is true.

    Parameters
    ----------
    pred, target : `torch.Tensor`
        ``(B, ny, nx)`` (a channel axis of size 1 in ``target`` is dropped).
    mask : `torch.Tensor`
        ``(B, ny, nx)``; nonzero where the data are valid.

    Returns
    -------
    mse : `torch.Tensor`
        ``(B,)``; 0 for a galaxy without valid pixels.

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.network import masked_mse
    >>> masked_mse(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), torch.tensor([[[1, 0], [0, 0]]]))
    tensor([1.])
    """
    if target.dim() == pred.dim() + 1:
        target = target[:, 0]
    m = (mask > 0).to(pred.dtype)
    sq = torch.where(m > 0, (pred - target) ** 2, torch.zeros_like(pred))
    return sq.sum(dim=(-2, -1)) / torch.clamp(m.sum(dim=(-2, -1)), min=1.0)


def galaxy_losses(mom0, mom1, batch):
    """Per-galaxy masked MSE of mom0 plus that of mom1 (paper eq. 5, on both maps).

    Parameters
    ----------
    mom0, mom1 : `torch.Tensor`
        ``(B, ny, nx)`` rendered, normalised maps.
    batch : `~astrokin.fitting.batch.TensorBatch` or dict
        The input maps and masks.

    Returns
    -------
    loss : `torch.Tensor`
        ``(B,)``.
    """
    return (masked_mse(mom0, batch["mom0"], batch["mask0"])
            + masked_mse(mom1, batch["mom1"], batch["mask1"]))


def reconstruction_loss(mom0, mom1, batch):
    """Batch-mean of the masked MSE of mom0 plus that of mom1 (paper eq. 5, on both maps)."""
    return galaxy_losses(mom0, mom1, batch).mean()
