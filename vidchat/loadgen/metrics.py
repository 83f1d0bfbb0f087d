"""The server's own counters: /metrics scraped before and after a run, as cache hit rates.

Read through plain HTTP (not the OpenAI SDK): /metrics sits beside /v1, not under it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from typing import Any

# Counters read from the server's /metrics (Prometheus text). vLLM 0.32 names; a server that
# lacks them (another engine, a proxy) just reports no hit rate.
METRICS = (
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:mm_cache_queries",
    "vllm:mm_cache_hits",
)


def server_root(base_url: str) -> str:
    """The server's root URL from its OpenAI base URL (``.../v1`` without the ``/v1``)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def parse_metrics(text: str, names: Sequence[str] = METRICS) -> dict[str, float]:
    """Sum each counter over its label sets; ``name`` matches ``name`` and ``name_total``."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        cut = [i for i in (line.find("{"), line.find(" ")) if i >= 0]
        if not cut:
            continue
        name = line[: min(cut)]
        base = name.removesuffix("_total")
        if base not in names:
            continue
        # Label values may hold spaces: the value follows the closing brace.
        rest = line[line.rindex("}") + 1 :] if line[min(cut)] == "{" else line[min(cut) :]
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        totals[base] = totals.get(base, 0.0) + value
    return totals


def scrape_metrics(root: str, timeout: float = 10.0) -> dict[str, float] | None:
    """The server's cache counters now, or None when it has no /metrics."""
    try:
        with urllib.request.urlopen(root + "/metrics", timeout=timeout) as resp:  # noqa: S310
            return parse_metrics(resp.read().decode("utf-8", "replace"))
    except OSError:
        return None


def cache_rates(before: dict[str, float] | None, after: dict[str, float] | None
                ) -> dict[str, Any]:
    """Hit rates over the run (counter deltas): None when the server does not count."""
    out: dict[str, Any] = {}
    for kind in ("prefix_cache", "mm_cache"):
        q, h = f"vllm:{kind}_queries", f"vllm:{kind}_hits"
        if not before or not after or q not in after:
            out[kind] = None
            continue
        queries = after.get(q, 0.0) - before.get(q, 0.0)
        hits = after.get(h, 0.0) - before.get(h, 0.0)
        out[kind] = {"queries": queries, "hits": hits,
                     "hit_rate": hits / queries if queries > 0 else None}
    return out
