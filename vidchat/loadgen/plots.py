"""PNG plots of reports: a run's latency histograms, a sweep's throughput and latency curves.

matplotlib is optional (the dev extra): without it nothing is drawn and the plot functions
return False.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from vidchat.loadgen.stats import PERCENTILES


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_latency(report: dict[str, Any], path: str | os.PathLike[str], title: str = ""
                 ) -> bool:
    """Histograms of TTFT, inter-token and end-to-end latency with p50/p90/p99 marked."""
    plt = _pyplot()
    if plt is None:
        return False
    done = [r for r in report["records"] if r["ok"]]
    series = (("TTFT", [r["ttft_s"] for r in done], "ttft_s"),
              ("inter-token latency", [x for r in done for x in r["itl_s"]], "itl_s"),
              ("end-to-end latency", [r["e2e_s"] for r in done], "e2e_s"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (label, values, key) in zip(axes, series, strict=True):
        ms = [v * 1000 for v in values if v is not None]
        if ms:
            ax.hist(ms, bins=min(40, max(5, int(math.sqrt(len(ms))) * 2)), color="#4c72b0")
            for p, style in zip(PERCENTILES, (":", "--", "-"), strict=True):
                v = report[key][f"p{p}"]
                if v is not None:
                    ax.axvline(v * 1000, color="#c44e52", linestyle=style, label=f"p{p}")
            ax.legend(fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("ms")
    s = report["settings"]
    fig.suptitle(title or f"{s['videos']} videos x {s['questions_per_video']} questions, "
                 f"{s['frames']} frames, {s['max_tokens']} tokens, "
                 f"{report['request_throughput']:.2f} req/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_sweep(reports: Sequence[dict[str, Any]], path: str | os.PathLike[str],
               title: str = "") -> bool:
    """Throughput and latency against concurrency."""
    plt = _pyplot()
    if plt is None or not reports:
        return False
    xs = [r["settings"]["concurrency"] for r in reports]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(xs, [r["request_throughput"] for r in reports], "o-", label="requests/s")
    a.set_xlabel("concurrency")
    a.set_ylabel("requests/s")
    a2 = a.twinx()
    a2.plot(xs, [r["output_throughput"] for r in reports], "s--", color="#dd8452",
            label="output tokens/s")
    a2.set_ylabel("output tokens/s")
    a.set_xscale("log", base=2)
    a.set_title("throughput")
    a.legend(loc="upper left", fontsize=8)
    a2.legend(loc="lower right", fontsize=8)
    for key, label, style in (("ttft_s", "TTFT", "o-"), ("e2e_s", "end-to-end", "s-")):
        for p, ls in ((50, "-"), (99, ":")):
            b.plot(xs, [(r[key][f"p{p}"] or 0) * 1000 for r in reports], style[0] + ls,
                   label=f"{label} p{p}")
    b.set_xscale("log", base=2)
    for ax in (a, b):
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off()
    b.set_xlabel("concurrency")
    b.set_ylabel("ms")
    b.set_title("latency")
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
