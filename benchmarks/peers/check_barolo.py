"""Check the 3D-Barolo 2DFIT peer (benchmarks/peers/barolo.py) on KinMS discs.

Makes velocity fields with KinMS (64x64 px at 1"/px, 2" round beam,
exponential disc with scale 6.4", arctan rotation curve v_max = 200 km/s,
r_turn = 3", v_sys = 25 km/s) for inclinations 30/50/70 deg and receding PAs
0/120/250 deg (North through East), fits them with 2DFIT from user-like
first guesses (inclination and PA 10 deg off, v_sys 15 km/s off, flat
v_rot = 150 km/s, centre from the mom0 centroid, held fixed) and prints true
vs fitted values.

Run: python benchmarks/peers/check_barolo.py [--clouds N] [--free "VROT INC PA VSYS"]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from barolo import fit_2dfit  # noqa: E402

N, CELL, BEAM = 64, 1.0, 2.0
R_SCALE, R_TURN, V_MAX, V_SYS = 0.2 * 32, 3.0, 200.0, 25.0
DV, GAS_SIGMA = 5.0, 5.0


def rotation_curve(r):
    return 2.0 / np.pi * V_MAX * np.arctan(r / R_TURN)


def kinms_mom1(inclination, pa, n_clouds, seed=1):
    """(mom0, mom1) of a KinMS disc, (ny, nx), North = +row, East = -column.

    KinMS returns (x, y, v) cubes with x along RA (East = -x): transposed to
    (v, y, x). The disc centre is at 0-based pixel (n/2, n/2); channel k is at
    velocity (k - nv/2) * dv.
    """
    from kinms import KinMS

    nv = int(np.ceil((2 * (V_MAX + 5 * GAS_SIGMA) + 2 * abs(V_SYS) + 40) / DV / 2)) * 2
    radius = np.arange(0.0, 2 * N * CELL, 0.02 * CELL)
    kin = KinMS(N * CELL, N * CELL, nv * DV, CELL, DV, [BEAM, BEAM, 0.0],
                nSamps=int(n_clouds), seed=seed)
    cube = kin.model_cube(inclination, pa, gasSigma=GAS_SIGMA, sbProf=np.exp(-radius / R_SCALE),
                          sbRad=radius, velProf=rotation_curve(radius), velRad=radius,
                          vOffset=V_SYS)
    cube = np.transpose(cube, (2, 1, 0))
    v = (np.arange(nv) - nv / 2) * DV
    mom0 = cube.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = (cube * v[:, None, None]).sum(axis=0) / mom0
    mom1[mom0 < 0.01 * mom0.max()] = np.nan
    return mom0, mom1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clouds", type=int, default=1_000_000)
    ap.add_argument("--free", default="VROT INC PA VSYS")
    args = ap.parse_args()

    print(f"2DFIT (pyBBarolo) on KinMS velocity fields; free = {args.free}; "
          f"ring width = beam = {BEAM}\"; true v_sys = {V_SYS}, centre = ({N / 2}, {N / 2}) px")
    hdr = (f"{'inc':>5} {'inc_fit':>7} {'pa':>5} {'pa_fit':>7} {'vsys_fit':>8} "
           f"{'x0,y0 guess':>12} {'dv_mean':>7} {'|dv|_mean':>9} {'|dv|_r>2b':>9} "
           f"{'rings':>6} {'t_fit[s]':>8} {'t_kinms[s]':>10}")
    print(hdr)
    print("-" * len(hdr))
    times = []
    for inc in (30.0, 50.0, 70.0):
        for pa in (0.0, 120.0, 250.0):
            t0 = time.perf_counter()
            mom0, mom1 = kinms_mom1(inc, pa, args.clouds)
            t_kinms = time.perf_counter() - t0
            yy, xx = np.mgrid[0:N, 0:N]
            m0 = np.where(np.isfinite(mom1), mom0, 0.0)
            xc, yc = (m0 * xx).sum() / m0.sum(), (m0 * yy).sum() / m0.sum()
            guess = dict(x_center_pix=xc, y_center_pix=yc, v_sys=V_SYS + 15.0,
                         inclination=inc + 10.0, pa=(pa + 10.0) % 360.0, v_rot=150.0)
            res = fit_2dfit(mom1, CELL, guess, ring_width_arcsec=BEAM, free=args.free,
                            beam_fwhm_arcsec=BEAM)
            times.append(res["wall_time_s"])
            dv = res["vrot"] - rotation_curve(res["radii"])
            outer = res["radii"] > 2 * BEAM
            print(f"{inc:5.0f} {res['inclination']:7.2f} {pa:5.0f} {res['pa']:7.2f} "
                  f"{res['v_sys']:8.2f} {f'{xc:.2f},{yc:.2f}':>12} {dv.mean():7.2f} "
                  f"{np.abs(dv).mean():9.2f} {np.abs(dv[outer]).mean():9.2f} "
                  f"{len(res['radii']):>3}/{res['n_rings']:<2} {res['wall_time_s']:8.3f} "
                  f"{t_kinms:10.2f}")
    print(f"2DFIT wall time per galaxy: median {np.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}), 1 thread")


if __name__ == "__main__":
    main()
