"""Written by `python bench/priors.py write` (do not edit by hand): per choice, {candidate: [mean, spread]}
of its difference from the written default across the benchmarks (runner/infra/priors.py says how)."""

MEASURED: dict = {}
PRIORS: dict = {}
