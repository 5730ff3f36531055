"""The convolutional encoders of the semantic auto-encoder (Dawson et al. 2021, Table 1).

Each encoder reads one normalised 64x64 moment map and returns ``n`` numbers
in [-1, 1], later mapped onto physical parameters (see
`astrokin.fitting.parameters`). The layer stack is exactly the paper's Table 1
with ``padding=1`` convolutions (so the 3x3 convolutions keep the map size and
only the poolings halve it)::

    Conv(1->16)              MaxPool2    64 -> 32
    Conv(16->32)   ReLU      MaxPool2    32 -> 16
    Conv(32->64)   ReLU      MaxPool2    16 -> 8
    Conv(64->128)  ReLU      MaxPool2     8 -> 4
    flatten 128*4*4 = 2048 -> Linear(2048->256) ReLU Dropout(p=0.1)
    -> Linear(256->n) -> Hardtanh(-1, 1)

The first convolution has no activation, as in the paper's table.

The stack is split in two at the dropout layer: `Encoder.trunk` (everything up
to and including the ReLU after the first linear layer) and `Encoder.head`
(the last linear layer and the Hardtanh). Dropout sits between them, so Monte
Carlo dropout samples share the trunk: it is evaluated once per galaxy and only
the small head is re-evaluated per sample (`astrokin.fitting.mc_dropout`).
"""

import torch
from torch import nn

__all__ = ["IMAGE_SIZE", "Encoder"]

#: Side of the square maps the encoders read (paper section 2.3).
IMAGE_SIZE = 64

#: Width of the hidden layer between the two linear layers (paper Table 1).
HIDDEN_SIZE = 256


class Encoder(nn.Module):
    """One encoder subnet of Dawson et al. (2021), Table 1.

    Parameters
    ----------
    n_outputs : int
        Number of network outputs (one per predicted scalar; a position
        angle predicted as a (cos, sin) pair takes two).
    dropout : float, optional
        Dropout probability after the first linear layer (paper: 0.1).

    Notes
    -----
    The forward pass is exactly Table 1. While training, the Hardtanh's
    gradient is passed straight through where it clips (attribute
    ``straight_through``, default True; see `head`).

    Attributes
    ----------
    features : `torch.nn.Sequential`
        The convolutional part, ``(B, 1, 64, 64) -> (B, 128, 4, 4)``.
    hidden : `torch.nn.Sequential`
        ``Linear(2048->256)`` followed by a ReLU.
    dropout : `torch.nn.Dropout`
    last : `torch.nn.Linear`
        ``Linear(256->n_outputs)``.

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.encoders import Encoder
    >>> enc = Encoder(3).eval()
    >>> out = enc(torch.zeros(2, 1, 64, 64))
    >>> out.shape
    torch.Size([2, 3])
    >>> bool(out.abs().max() <= 1)
    True
    >>> enc.trunk(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 256])
    """

    def __init__(self, n_outputs, dropout=0.1):
        super().__init__()
        if int(n_outputs) < 1:
            raise ValueError(f"An encoder needs at least one output; got n_outputs={n_outputs}.")
        self.n_outputs = int(n_outputs)
        self.p = float(dropout)
        self.straight_through = True
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        n_flat = 128 * (IMAGE_SIZE // 16) ** 2
        self.hidden = nn.Sequential(nn.Linear(n_flat, HIDDEN_SIZE), nn.ReLU())
        self.dropout = nn.Dropout(self.p)
        self.last = nn.Linear(HIDDEN_SIZE, self.n_outputs)
        # Convolution weights and inputs in the channels-last memory format:
        # oneDNN runs the trunk two to three times as fast at inference, and
        # a training step a third faster, on a CPU (the values agree with
        # the default layout to float32 rounding). `load_state_dict` copies
        # into these tensors, keeping their layout.
        self.to(memory_format=torch.channels_last)

    def trunk(self, x):
        """Everything before the dropout layer: ``(B, 1, 64, 64) -> (B, 256)``, post-ReLU."""
        features = self.features(x.contiguous(memory_format=torch.channels_last))
        return self.hidden(torch.flatten(features.contiguous(), 1))

    def head(self, h):
        """The last linear layer and the Hardtanh, on (possibly dropped-out) hidden units.

        In training mode the Hardtanh's gradient is passed straight through
        where it clips (the forward value is unchanged): an output pushed
        past -1 or 1 would otherwise get no gradient at all and stay stuck
        at its bound for the rest of training, which short solo fits of a
        single galaxy were seen to do.
        """
        z = self.last(h)
        y = nn.functional.hardtanh(z)
        if self.training and self.straight_through and torch.is_grad_enabled():
            y = z + (y - z).detach()
        return y

    def forward(self, x):
        """Full pass; dropout is active in training mode only, as for any torch module."""
        return self.head(self.dropout(self.trunk(x)))
