#!/usr/bin/env bash
# Run every benchmark and keep its printed tables in benchmarks/results/, which
# the documentation includes (docs/benchmarks.rst). Needs the test extra plus
# pybbarolo for the 2DFIT peer (see benchmarks/README.md). About 45 minutes on
# 2 CPU cores; the KinMS sets are generated (and cached) on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
run() {  # run NAME COMMAND...: print and keep the output
    local name=$1; shift
    echo "::: $name: $*"
    { echo "\$ $*"; "$@"; } 2>&1 | tee "$out/$name.txt"
}
python benchmarks/kinms_sets.py both --n 1000
run renderer_speed python benchmarks/renderer_speed.py --threads 2
run renderer_accuracy python benchmarks/renderer_accuracy.py
run fitting_speed python benchmarks/fitting_speed.py --threads 1
run blind_speed python benchmarks/blind_speed.py --threads 2 --no-barolo
run cleaning_speed python benchmarks/cleaning_speed.py
run paper_blind python benchmarks/accuracy.py --set paper --mode blind --network pretrained --threads 2
run hard_blind python benchmarks/accuracy.py --set hard --mode blind --network pretrained --threads 2
# Error bars calibrated on other KinMS galaxies (seed 2), and the network
# specialised to the paper set's set-up (10 minutes of training on 2 cores).
cal="${ASTROKIN_BENCHMARK_CACHE:-$HOME/.cache/astrokin-benchmarks}/calibration"
python benchmarks/kinms_sets.py both --n 1000 --seed 2 --out "$cal"
run paper_blind_calibrated python benchmarks/accuracy.py --set paper --mode blind \
    --network pretrained --threads 2 --calibrate-on "$cal/kinms_paper.npz"
run hard_blind_calibrated python benchmarks/accuracy.py --set hard --mode blind \
    --network pretrained --threads 2 --calibrate-on "$cal/kinms_hard.npz"
run paper_blind_specialised bash -c "python -m astrokin.fitting.pretraining \
    --recipe benchmarks/recipes/paper_setup.json --out '$cal/paper_setup.pt' --overwrite \
    --threads 2 --no-progress && python benchmarks/accuracy.py --set paper --mode blind \
    --network '$cal/paper_setup.pt' --threads 2 --calibrate-on '$cal/kinms_paper.npz'"
run paper_solo python benchmarks/accuracy.py --set paper --mode solo --n 200 --epochs 300 \
    --learning-rate 1e-3 --threads 2
# Refinement to each galaxy's own maps (the fitter's default).
run paper_refine python benchmarks/accuracy.py --set paper --mode blind --network pretrained \
    --threads 2 --refine
run hard_refine python benchmarks/accuracy.py --set hard --mode blind --network pretrained \
    --threads 2 --refine
run paper_solo_refine python benchmarks/accuracy.py --set paper --mode solo --n 100 \
    --epochs 100 --learning-rate 1e-3 --threads 2 --refine
run refinement_speed python benchmarks/refinement_speed.py --n 256 --threads 2
run aliased_derivatives python benchmarks/aliased_derivatives.py
run memory python benchmarks/memory.py
run paper_2dfit python benchmarks/peer_2dfit.py --set paper --timeout 5
run hard_2dfit python benchmarks/peer_2dfit.py --set hard --timeout 5
# Realistic mocks (rings, holes, clumps, arms, bars, warps, low S/N) against 2DFIT and
# 3DFIT, and the real galaxies with the ring model (about 1.5 hours on 2 cores).
python benchmarks/realistic_mocks.py --n 500 --cubes 50
python benchmarks/realistic.py 3dfit
python benchmarks/realistic.py 2dfit
python benchmarks/realistic.py astrokin
run realistic python benchmarks/realistic.py report
run real_data_rings python benchmarks/real_data.py --threads 1 --modes blind+refine,rings+refine
