"""How much the renderer's aliased orders change the errors a fit's Jacobian gives.

Beams under 2 pixels are fitted with the renderer's aliased (folded)
frequencies, ``alias_order=1``, 9 times dearer than ``alias_order=0``.
Refinement takes the Jacobian of its polish (and of its errors) from the
renders without them where every beam of a problem is at least
`astrokin.fitting.refinement.COARSE_DERIVATIVES_BEAM` wide. This script
measures what that costs in the errors: for exponential discs of 64 x 64
pixels over inclinations, scale lengths and beams, it prints how much the
maps differ between the two orders (relative to mom0's peak) and the ratio
of the 1-sigma errors, ``sqrt(diag((J^T J)^-1))``, from the order-0 and the
order-1 Jacobians (`DiskRenderer.linearize`), for mom0 noise at 2% of its
peak and mom1 noise of 5 km/s over the pixels above 3% of the peak.

Run: ``python benchmarks/aliased_derivatives.py``.
"""

import argparse

import numpy as np
from machine import cpu_name  # benchmarks/machine.py, beside this script

WRT = ["x_0", "y_0", "inclination", "pa", "v_sys", "r_scale", "r_turn", "v_max"]


def errors(renderer, params, beam):
    """mom0 and the 1-sigma errors ``(P,)`` of one disc from ``renderer``'s Jacobian."""
    import torch

    m0, _, d0, d1 = renderer.linearize(params, torch.ones(1, dtype=torch.float64), beam,
                                       wrt=WRT)
    fit = m0[0] > 3e-2 * m0[0].max()
    jac = torch.cat([d0[0][:, fit] / (0.02 * m0[0].max()), d1[0][:, fit] / 5.0], dim=1).T
    return m0, torch.sqrt(torch.diagonal(torch.linalg.inv(jac.T @ jac)))


def main(argv=None):
    """Measure and print the table."""
    import torch

    from astrokin.fitting.refinement import COARSE_DERIVATIVES_BEAM
    from astrokin.models import ExponentialArctanDisk as Model
    from astrokin.rendering import DiskRenderer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64)
    args = parser.parse_args(argv)
    shape = (args.side, args.side)
    coarse, aliased = (DiskRenderer(Model, shape, dtype=torch.float64, alias_order=k)
                       for k in (0, 1))
    print(f"# errors from order-0 against order-1 Jacobians: {cpu_name()}, torch "
          f"{torch.__version__}; {args.side}^2 maps, beam major = 1.5 x minor, PA 20 deg; "
          f"refinement uses order 0 from minor >= {COARSE_DERIVATIVES_BEAM} px")
    header = (f"{'inc':>4s} {'r_scale':>7s} {'minor':>6s} {'map diff':>9s} "
              f"{'worst ratio':>11s}  " + " ".join(f"{n:>11s}" for n in WRT))
    print(header)
    print("-" * len(header))
    for inc in (30.0, 60.0, 80.0):
        for r_scale in (3.0, 8.0):
            for minor in (None, 0.5, 1.0, 1.5, 1.9):
                params = {n: torch.tensor([float(getattr(Model, n).default)],
                                          dtype=torch.float64) for n in Model.param_names}
                params.update(inclination=torch.tensor([inc], dtype=torch.float64),
                              r_scale=torch.tensor([r_scale], dtype=torch.float64),
                              r_turn=torch.tensor([2.0], dtype=torch.float64),
                              pa=torch.tensor([37.0], dtype=torch.float64))
                beam = None if minor is None else torch.tensor([[1.5 * minor, minor, 20.0]],
                                                               dtype=torch.float64)
                m0a, sa = errors(coarse, params, beam)
                m0b, sb = errors(aliased, params, beam)
                ratio = (sa / sb).numpy()
                diff = float((m0a - m0b).abs().max() / m0b.abs().max())
                worst = ratio[np.argmax(np.abs(ratio - 1.0))]
                label = "none" if minor is None else f"{minor:.1f}"
                print(f"{inc:4.0f} {r_scale:7.1f} {label:>6s} {diff:9.1e} {worst:11.4f}  "
                      + " ".join(f"{v:11.4f}" for v in ratio), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
