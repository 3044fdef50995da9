#!/usr/bin/env python3
"""Expected log-growth per canary request of test R's components.

For each regression shape of the judgement bench (benches/judgement.rs) and
each candidate component (a score shape and a bet size), computes

    E[ln factor] per request / w

from the exact bin masses: stable's 15 bins have their nominal masses (p10
... p99.9), the canary's follow from its latency multiplier, divided by
1 + tolerance. It also gives the best bet any monotone score can make (the
isotonic regression of the log likelihood ratio, an oracle that knows the
shape), and the canary requests a component alone would need to reach the
threshold ln(267) (plus ln K for a mixture of K). No randomness; stdlib only.

Run: python3 benches/rank_growth.py [sigma] [tolerance]
"""
import math
import sys
from statistics import NormalDist

N = NormalDist()
LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
Z95, Z99 = 1.6448536, 2.3263479
W = 0.1  # canary weight
THRESHOLD = math.log(2 / 0.01 / 0.75)  # K = 2 tests, alpha 1 %, 3/4 on the revision's start


def factor(shape, z):
    """Canary's latency multiplier at standard-normal quantile z (as the bench)."""
    if shape == "x1.5":
        return 1.5
    if shape == "x1.2":
        return 1.2
    if shape == "median+20%":
        return 1.2 - 0.2 * min(1, max(0, (z - 0.841621) / (Z95 - 0.841621)))
    if shape == "sigma wider":
        return math.exp(math.log(1.5) / Z99 * z)
    if shape == "top 5%":
        return 1 + 0.5 * min(1, max(0, (z - Z95) / (Z99 - Z95)))
    return 1.0


def canary_masses(shape, sigma, tol, steps=100_000):
    edges = [N.inv_cdf(level) for level in LEVELS]
    m = [0.0] * 15
    for i in range(steps):
        z = N.inv_cdf((i + 0.5) / steps)
        zr = z + math.log(factor(shape, z) / (1 + tol)) / sigma
        m[sum(1 for e in edges if zr > e)] += 1 / steps
    return m


STABLE = [LEVELS[0]] + [LEVELS[i] - LEVELS[i - 1] for i in range(1, 14)] + [1 - LEVELS[-1]]
MID = [(([0] + LEVELS)[b] + (LEVELS + [1])[b]) / 2 for b in range(15)]


def wilcoxon(u):
    return u - 0.5


def tail(q):
    return lambda u: max(0.0, math.log(q / (1 - u))) - q


def growth(pc, tilts):
    """Per canary request: E over a request of ln(factor), divided by w."""
    g = 0.0
    for b in range(15):
        p = W * pc[b] + (1 - W) * STABLE[b]
        if p == 0:
            continue
        pi = W * pc[b] / p
        wp = W * math.exp(tilts[b]) / (1 - W + W * math.exp(tilts[b]))
        g += p * (pi * math.log(wp / W) + (1 - pi) * math.log((1 - wp) / (1 - W)))
    return g / W


def isotonic(values, weights):
    blocks = []
    for v, w in zip(values, weights):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [v for v, _, n in blocks for _ in range(n)]


COMPONENTS = [("Wilcoxon", wilcoxon, lam) for lam in (0.5, 1, 2, 4)] + [
    (f"p{round(100 * (1 - q))} tail", tail(q), lam) for q in (0.05, 0.01) for lam in (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
]
SHAPES = ["x1.5", "x1.2", "median+20%", "sigma wider", "top 5%"]


def main():
    sigma = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8
    tol = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    masses = {s: canary_masses(s, sigma, tol) for s in SHAPES}
    print(f"sigma {sigma}, tolerance {tol}, canary weight {W}: log-growth per canary request x 1e-3")
    print("| component | " + " | ".join(SHAPES) + " |")
    print("|---|" + "---|" * len(SHAPES))
    for name, score, lam in COMPONENTS:
        row = [growth(masses[s], [lam * score(u) for u in MID]) * 1e3 for s in SHAPES]
        print(f"| {name} λ {lam} | " + " | ".join(f"{g:.1f}" for g in row) + " |")
    best = []
    for s in SHAPES:
        pc = masses[s]
        llr = [math.log(pc[b] / STABLE[b]) if pc[b] > 0 else -20.0 for b in range(15)]
        best.append(growth(pc, isotonic(llr, STABLE)) * 1e3)
    print("| best monotone bet (oracle) | " + " | ".join(f"{g:.1f}" for g in best) + " |")
    print()
    print(f"canary requests for the oracle alone to reach ln {math.exp(THRESHOLD):.0f}: "
          + ", ".join(f"{s} {THRESHOLD / (g / 1e3):.0f}" for s, g in zip(SHAPES, best)))


if __name__ == "__main__":
    main()
