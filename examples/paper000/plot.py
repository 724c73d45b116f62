#!/usr/bin/env python3
"""Renders the figure described in a paper000 results JSON (its "figure" entry) as a PNG.

Usage: plot.py RESULTS.json OUT.png

The C++ binaries decide what is drawn (panels of x/y series with optional error bars, or bar
groups); this script only draws it, with Debian's python3-matplotlib. Exit status 2 when
matplotlib is missing, 1 for a malformed file.
"""
import json
import os
import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed (apt-get install python3-matplotlib)", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        with open(src) as f:
            fig_spec = json.load(f)["figure"]
        panels = fig_spec["panels"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot.py: {src}: no readable figure ({e})", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, p in zip(axes[0], panels):
        if p.get("kind") == "bars":
            labels = p["categories"]
            width = 0.8 / max(1, len(p["series"]))
            for k, s in enumerate(p["series"]):
                xs = [i + (k - (len(p["series"]) - 1) / 2) * width for i in range(len(labels))]
                ax.bar(xs, s["y"], width, yerr=s.get("yerr"), label=s["label"], capsize=3)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        else:
            for s in p["series"]:
                ax.errorbar(s["x"], s["y"], yerr=s.get("yerr"), marker="o", capsize=3, label=s["label"])
            if p.get("xlog"):
                ax.set_xscale("log")
                xs = sorted({x for s in p["series"] for x in s["x"]})
                if 0 < len(xs) <= 8:  # label the measured points themselves (batch sizes, rates, alphas)
                    ax.set_xticks(xs)
                    ax.set_xticklabels([f"{x:g}" for x in xs])
                    ax.minorticks_off()
        if p.get("ylog"):
            ax.set_yscale("log")
        ax.set_title(p.get("title", ""), fontsize=10)
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.grid(True, alpha=0.3)
        if len(p["series"]) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(fig_spec.get("title", ""), fontsize=11)
    fig.tight_layout()
    tmp = dst + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, dst)  # the picture is complete or absent
    return 0


if __name__ == "__main__":
    sys.exit(main())
