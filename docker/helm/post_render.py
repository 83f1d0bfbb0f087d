#!/usr/bin/env python3
"""Helm post-renderer: graceful shutdown for production-stack's engine Deployments.

    helm install vidchat vllm/vllm-stack -f docker/helm/values.yaml \\
        --post-renderer docker/helm/post_render.py [--post-renderer-args VALUES.yaml]

The chart templates no preStop hook and no terminationGracePeriodSeconds for its engines
(Kubernetes' default grace is 30 s). This adds both, from `gracefulShutdown` in the values
file (default: values.yaml beside this script), to every Deployment whose pod runs the
chart's engine container "vllm": rendered manifests in on stdin, out on stdout.
Needs PyYAML (`pip install pyyaml`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ENGINE_CONTAINER = "vllm"  # the container name production-stack gives its engines
DEFAULT_VALUES = Path(__file__).resolve().parent / "values.yaml"


def add_graceful_shutdown(docs: list[Any], pre_stop_sleep_s: int, grace_s: int) -> int:
    """Patch engine Deployments in place; return how many were patched."""
    if grace_s <= pre_stop_sleep_s:
        raise ValueError(f"terminationGracePeriodSeconds {grace_s} must exceed the preStop "
                         f"sleep {pre_stop_sleep_s}, or the engine gets no time to drain")
    patched = 0
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        engines = [c for c in pod.get("containers", []) if c.get("name") == ENGINE_CONTAINER]
        if not engines:
            continue
        pod["terminationGracePeriodSeconds"] = grace_s
        for container in engines:
            # Terminating pods leave the Service and the router's list while this runs, so
            # no new request reaches an engine that has started to drain.
            container.setdefault("lifecycle", {})["preStop"] = {
                "exec": {"command": ["sleep", str(pre_stop_sleep_s)]}}
        patched += 1
    return patched


def main(argv: list[str]) -> int:
    import yaml

    values_file = Path(argv[1]) if len(argv) > 1 else DEFAULT_VALUES
    settings = (yaml.safe_load(values_file.read_text()) or {}).get("gracefulShutdown")
    if not settings:
        print(f"post_render: no gracefulShutdown in {values_file}", file=sys.stderr)
        return 1
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
    count = add_graceful_shutdown(docs, int(settings["preStopSleepSeconds"]),
                                  int(settings["terminationGracePeriodSeconds"]))
    if count == 0:
        print("post_render: no engine Deployment (container 'vllm') in the manifests",
              file=sys.stderr)
        return 1
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
