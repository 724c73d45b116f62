#!/usr/bin/env python3
"""Ratios of curvature's benchmark medians to the PyTorch peer's, from the same session.

usage: compare_peer.py OURS.json [OURS2.json ...] PEER.json
  OURS.json: bench_nn (or bench_estimators) --benchmark_format=json --benchmark_repetitions=5
             --benchmark_report_aggregates_only=true
  PEER.json: ../shared/peer/torch_peer.py output (median_s per run and workload)
Each of our rows named W*_<workload>/<threads> is compared with the peer's workload of the same
meaning at the same thread count; for 2 threads the peer's better of its `2` and `2_passive` runs.
"""
import json
import re
import sys

# our benchmark name -> the peer's workload names (the best of them is the peer's figure)
PEER = {
    "W1_grad_mlp_b128": ["W1_grad_mlp_b128"],
    "W3_hvp_mlp_b128": ["W3a_hvp_double_backward_mlp", "W3b_hvp_jvp_grad_mlp"],
    "W2_psg_prealloc_mlp_b128": ["W2c_psg_manual_prealloc_mlp"],
    "W2_psg_prealloc_mlp_b128 vs vmap": ["W2b_psg_vmap_mlp"],
    "W6_efisher_mlp_b128": ["W6_efisher_manual_mlp"],
    "W6_tfisher_mlp_b128": ["W6_tfisher_manual_mlp"],
    "W1_grad_cnn_b128": ["W1_grad_cnn_b128"],
    "W3_hvp_cnn_b128": ["W3a_hvp_double_backward_cnn", "W3b_hvp_jvp_grad_cnn"],
    "W2_psg_prealloc_cnn_b128": ["W2b_psg_vmap_cnn"],
    "W6_efisher_cnn_b128": ["W6_efisher_vmap_cnn"],
    "W4_trace100_mlp_b128": ["W4_trace100_mlp_b128", "W4x_trace100_batched25_mlp_b128"],
    "W5_diag100_mlp_b128": ["W5_diag100_mlp_b128"],
    "W4_trace100_mlp_b1024": ["W4_trace100_mlp_b1024", "W4x_trace100_batched25_mlp_b1024"],
    "W5_diag100_mlp_b1024": ["W5_diag100_mlp_b1024"],
    "W4_trace100_cnn_b128": ["W4_trace100_cnn_b128"],
    "W5_diag100_cnn_b128": ["W5_diag100_cnn_b128"],
    # the same trace from exact HVPs instead of the second-order forward mode
    "W4_trace100_via_hvp_mlp_b128": ["W4_trace100_mlp_b128", "W4x_trace100_batched25_mlp_b128"],
    "W4_trace100_via_hvp_mlp_b1024": ["W4_trace100_mlp_b1024", "W4x_trace100_batched25_mlp_b1024"],
    "W4_trace100_via_hvp_cnn_b128": ["W4_trace100_cnn_b128"],
    # the exact Hessian diagonal of these ReLU networks against the peer's 100-probe estimate
    "W5_exact_diag_mlp_b128": ["W5_diag100_mlp_b128"],
    "W5_exact_diag_mlp_b1024": ["W5_diag100_mlp_b1024"],
    "W5_exact_diag_cnn_b128": ["W5_diag100_cnn_b128"],
}


def ours(paths):
    out = {}
    for b in (b for path in paths for b in json.load(open(path))["benchmarks"]):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        m = re.match(r"run/(\w+)/(\d+)", b["name"])
        if not m:
            continue
        unit = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b.get("time_unit", "ns")]
        out[(m.group(1), m.group(2))] = b["real_time"] * unit
    return out


def peer(path):
    med = json.load(open(path))["median_s"]
    def best(workloads, threads):
        runs = ["1"] if threads == "1" else ["2", "2_passive"]
        vals = [med[r][w] for r in runs if r in med for w in workloads if w in med[r]]
        return min(vals) if vals else None
    return best


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mine, best = ours(sys.argv[1:-1]), peer(sys.argv[-1])
    print("| workload | threads | curvature ms | peer ms | ratio |")
    print("|---|---|---|---|---|")
    for key, workloads in PEER.items():
        name = key.split(" ")[0]
        for threads in ("1", "2"):
            if (name, threads) not in mine:
                continue
            p = best(workloads, threads)
            t = mine[(name, threads)]
            label = key if " " not in key else key
            ratio = f"{t / p:.2f}x" if p else "n/a"
            print(f"| {label} | {threads} | {t * 1e3:.2f} | {p * 1e3 if p else float('nan'):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
