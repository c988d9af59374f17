#!/usr/bin/python3
"""compare.py — cqat against PyTorch on refcnn, side by side (BENCHMARK.md).

    /usr/bin/python3 bench/compare.py [--build build] [--reps 5] [--seconds 3] [--quick]

Runs cqat_bench and torch_bench.py alternately (both with OMP_WAIT_POLICY=PASSIVE:
with OpenMP's default spinning, either falls several-fold on a busy machine), --reps times each, on the same
machine, data, batch sizes and thread count, and prints for every figure the medians
of both and the ratio cqat / PyTorch (machines here are shared and noisy: only ratios
from one run mean anything). Figures: float training (batch 64), QAT training
(batch 64), float inference (batch 256), int8 inference (batch 256), peak resident
memory while training; then throughput against thread count (1, 2) and batch size
(1, 16, 64, 256). Without PyTorch it measures cqat alone and says so.
Writes the table as Markdown to stdout (and --json FILE for the raw numbers).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEBIAN_PY = "/usr/bin/python3"


def have_torch():
    try:
        subprocess.run([DEBIAN_PY, "-c", "import torch"], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), p.stderr.strip()))
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(args, what, batch, threads, torch_ok, cases):
    """Alternating repetitions; returns (cqat samples, torch samples, cqat rss, torch rss)."""
    cq, th, cq_rss, th_rss = [], [], [], []
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    for _ in range(args.reps):
        if what in cases:
            r = run_json([args.bench, "--what", what, "--batch", str(batch), "--threads",
                          str(threads), "--seconds", str(args.seconds)], env)
            cq.append(r["samples_per_s"])
            cq_rss.append(r["peak_rss_mb"])
        if torch_ok:  # PASSIVE too: PyTorch's own best on a shared machine
            r = run_json([DEBIAN_PY, os.path.join(HERE, "torch_bench.py"), "--what", what,
                          "--batch", str(batch), "--threads", str(threads), "--seconds",
                          str(args.seconds)], env)
            th.append(r["samples_per_s"])
            th_rss.append(r["peak_rss_mb"])
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    return med(cq), med(th), med(cq_rss), med(th_rss)


def fmt(v, unit=""):
    return "—" if v is None else ("%.0f%s" % (v, unit))


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else "%.2f×" % (a / b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="main table only")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    args.bench = os.path.join(args.build, "bench", "cqat_bench")
    if not os.path.exists(args.bench):
        sys.exit("compare.py: %s not found (build first: ninja -C %s)" % (args.bench, args.build))
    help_text = subprocess.run([args.bench, "--help"], capture_output=True, text=True).stdout
    cases = set()
    for line in help_text.splitlines():  # the option line: "  --what a|b|c  the figure"
        if line.strip().startswith("--what "):
            cases = set(line.split()[1].split("|"))
    torch_ok = have_torch()
    print("# cqat vs PyTorch on refcnn\n")
    print("machine: %s, %d cores, %s; %d threads; medians of %d alternating runs of %.0f s\n"
          % (platform.processor() or platform.machine(), os.cpu_count(), platform.platform(),
             args.threads, args.reps, args.seconds))
    if not torch_ok:
        print("PyTorch is not installed (apt-get install python3-torch): cqat alone.\n")
    rows, raw = [], {}
    main_figs = [("float training", "float-train", 64), ("QAT training", "qat-train", 64),
                 ("float inference", "float-infer", 256), ("int8 inference", "int8-infer", 256)]
    print("| figure | cqat samples/s | PyTorch samples/s | cqat / PyTorch |")
    print("|---|---|---|---|")
    train_rss = None
    for label, what, batch in main_figs:
        c, t, crss, trss = measure(args, what, batch, args.threads, torch_ok, cases)
        raw[what] = {"cqat": c, "torch": t, "cqat_rss_mb": crss, "torch_rss_mb": trss}
        if what == "float-train":
            train_rss = (crss, trss)
        print("| %s (batch %d) | %s | %s | %s |" % (label, batch, fmt(c), fmt(t), ratio(c, t)))
        sys.stdout.flush()
    if train_rss:
        print("| peak RSS, float training (MB) | %s | %s | %s |"
              % (fmt(train_rss[0]), fmt(train_rss[1]), ratio(train_rss[0], train_rss[1])))
    if not args.quick:
        print("\n## Throughput against threads and batch size (samples/s, cqat / PyTorch)\n")
        print("| figure | threads | batch | cqat | PyTorch | ratio |")
        print("|---|---|---|---|---|---|")
        for what in ("float-train", "float-infer", "int8-infer"):
            for threads in (1, 2):
                for batch in (1, 16, 64, 256):
                    c, t, _, _ = measure(args, what, batch, threads, torch_ok, cases)
                    raw["%s/t%d/b%d" % (what, threads, batch)] = {"cqat": c, "torch": t}
                    print("| %s | %d | %d | %s | %s | %s |" % (what, threads, batch, fmt(c),
                                                             fmt(t), ratio(c, t)))
                    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
