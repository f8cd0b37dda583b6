#!/usr/bin/env python3
"""Cost model of data-parallel training with bucketed, overlapped allreduce (docs/SCALING.md).

    tools/scaling_model.py [--params 25557032] [--step-ms 2000] [--bucket-mb 4] [--gbps 100]
                           [--alpha-us 5] [--efficiency 0.9] [--backward-share 0.67]

Per step, each rank computes for step_ms (forward + backward of its share of the batch: weak
scaling, constant work per rank) and averages S = 4 * params bytes of gradients in buckets of
b bytes. An allreduce of m bytes over p ranks costs, with the bandwidth-optimal algorithms MPI
libraries pick for large messages (reduce-scatter + allgather, Rabenseifner / ring):
    T(m, p) = 2 log2(p) * alpha + 2 (p - 1) / p * m / B
B the link bandwidth times a usable fraction. Buckets start during backward, so communication
overlaps with the backward of earlier layers: only what does not fit in the backward window,
plus the last bucket (which starts when backward ends), is exposed. Every step also waits for
the slowest rank: with step times of coefficient of variation cv, the expected maximum over p
ranks is about step * (1 + cv * sqrt(2 ln p)).
"""
import argparse
import math


def allreduce_s(m, p, alpha, bw):
    if p == 1:
        return 0.0
    return 2 * math.log2(p) * alpha + 2 * (p - 1) / p * m / bw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=25557032, help="trainable parameters (ResNet-50)")
    ap.add_argument("--step-ms", type=float, default=2000, help="compute time of one step on one rank")
    ap.add_argument("--bucket-mb", type=float, default=4)
    ap.add_argument("--gbps", type=float, default=100, help="link speed in Gb/s")
    ap.add_argument("--efficiency", type=float, default=0.9, help="usable fraction of the link")
    ap.add_argument("--alpha-us", type=float, default=5, help="per-message latency")
    ap.add_argument("--backward-share", type=float, default=2 / 3, help="backward's share of the step")
    ap.add_argument("--cv", type=float, default=0.02, help="coefficient of variation of a rank's step time")
    ap.add_argument("--ranks", default="8,64,512")
    a = ap.parse_args()
    S = 4 * a.params
    b = a.bucket_mb * 2**20
    nb = math.ceil(S / b)
    bw = a.gbps / 8 * 1e9 * a.efficiency
    alpha = a.alpha_us * 1e-6
    step = a.step_ms / 1e3
    window = a.backward_share * step
    print(f"gradients {S / 1e6:.1f} MB in {nb} buckets of {a.bucket_mb:g} MiB; link {a.gbps:g} Gb/s x {a.efficiency:g}, "
          f"alpha {a.alpha_us:g} us; compute {a.step_ms:g} ms/step, backward window {window * 1e3:.0f} ms")
    print(f"{'ranks':>6} {'allreduce ms':>13} {'exposed ms':>11} {'blocking eff':>13} {'overlap eff':>12}")
    for p in (int(x) for x in a.ranks.split(",")):
        per_bucket = allreduce_s(S / nb, p, alpha, bw)
        total = nb * per_bucket
        whole = allreduce_s(S, p, alpha, bw)  # blocking: one call after backward
        # Buckets run back to back on the network while backward goes on; the last one starts
        # when backward ends.
        exposed = max(total - window, 0) + per_bucket if p > 1 else 0.0
        exposed = min(exposed, total)
        slow = step * (1 + a.cv * math.sqrt(2 * math.log(p))) if p > 1 else step
        print(f"{p:>6} {total * 1e3:>13.1f} {exposed * 1e3:>11.1f} {step / (slow + whole):>13.1%} "
              f"{step / (slow + exposed):>12.1%}")


if __name__ == "__main__":
    main()
