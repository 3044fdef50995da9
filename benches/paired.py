"""Round-by-round comparison of proxies from a bench script's TSV rows.

  python3 benches/paired.py ROWS.tsv 'label:column:higher|lower' ...

Each row is `round<TAB>proxy<TAB>...`; a measure names a column (0-based)
and whether higher or lower is better. For weir against nginx and HAProxy
(and nginx-again against nginx, the A/A check, and weir against
weir-base, an A/B of two builds, when present) it prints, per
measure: the median of the per-round ratios, their range, in how many
rounds the first did better, and a one-sided sign test: the chance of at
least that many wins if neither were better. Within a round the proxies ran
back to back, so a ratio there is less exposed to the VM's slow drifts than
a ratio of medians.
"""
import math
import statistics
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {(r[0], r[1]): r for r in rows}
names = {r[1] for r in rows}
pairs = [(a, b) for a, b in [("weir", "nginx"), ("weir", "haproxy"), ("nginx-again", "nginx"), ("weir", "weir-base")] if a in names and b in names]
rounds = sorted({r[0] for r in rows}, key=int)


def val(row, i):
    try:
        return float(row[i])
    except (ValueError, IndexError):
        return None


def sign_p(wins, n):
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


print("\nRound by round: a / b within each round; a better = rounds where a did better; p = one-sided sign test")
print("| measure | a / b | median | range | a better | p |")
print("|---|---|---|---|---|---|")
for spec in sys.argv[2:]:
    label, col, better = spec.rsplit(":", 2)
    col, higher = int(col), better == "higher"
    for a, b in pairs:
        ratios = []
        for rnd in rounds:
            ra, rb = by.get((rnd, a)), by.get((rnd, b))
            va, vb = (val(ra, col), val(rb, col)) if ra and rb else (None, None)
            if va and vb:
                ratios.append(va / vb)
        if not ratios:
            continue
        wins = sum(1 for x in ratios if x != 1 and (x > 1) == higher)
        print(f"| {label} | {a} / {b} | {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} "
              f"| {wins} of {len(ratios)} | {sign_p(wins, len(ratios)):.3f} |")
