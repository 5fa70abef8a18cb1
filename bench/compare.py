#!/usr/bin/env python3
"""Side-by-side table: flowspec's generated code against the fastest of zuko / nflows /
normflows, per configuration, metric and dtype, from one run of bench/side_by_side.sh.

Usage: compare.py FLOWSPEC_JSONL TORCH_JSON OUT_MD [TORCH_PEAK_MEM_JSON]
FLOWSPEC_JSONL holds one `flowspec bench --json` object per line, tagged with "config".
TORCH_PEAK_MEM_JSON (bench/torch/peak_mem.py) gives the PyTorch side of C2's peak memory.
"""
import json
import sys

# Targets of issue 5: speed-up factor (flowspec vs the fastest PyTorch library).
TARGETS = {
    ("C1", "train", 256): 5, ("C1", "log_prob", None): 3, ("C1", "sample", None): 3,
    ("C3", "train", 256): 5, ("C3", "log_prob", None): 3, ("C3", "sample", None): 3,
    ("C4", "train", 16): 10, ("C4", "train", 4096): 1.5,
    ("C2", "train", 256): {"f32": 1.5, "f64": 2},
    # C5: MAF sampling (C2's sample row) against the PyTorch libraries' MAF sampling.
    ("C2", "sample", None): 20,
}
MEMORY_TARGET = 5  # C2 training: flowspec's peak at most 1/5 of PyTorch's
DT = {"f32": "float32", "f64": "float64"}


def torch_rows(path):
    rows = json.load(open(path))["rows"]
    out = {}
    for r in rows:
        key = (r["config"], r["metric"], r.get("batch") if r["metric"] == "train_step" else None, r["dtype"])
        out.setdefault(key, []).append(r)
    return out


def memory_line(r, e, cfg, dtype, torch_peaks):
    """Peak memory of one flowspec process; for C2 training, against PyTorch's lowest."""
    mib = e["peak_rss_kib"] / 1024
    what = ",".join(f["metric"] for f in e.get("figures", []))
    line = f"- peak memory, {cfg} {what} batch {r['batch']} {dtype}, {e['engine']}: {mib:.1f} MiB"
    peaks = [p for p in torch_peaks if p["dtype"] == DT[dtype]]
    if cfg == "C2" and what == "train" and peaks:
        low = min(peaks, key=lambda p: p["peak_rss_kib"])
        ratio = low["peak_rss_kib"] / e["peak_rss_kib"]
        line += (f"; lowest PyTorch C2 training run {low['peak_rss_kib'] / 1024:.1f} MiB ({low['lib']}), "
                 f"{ratio:.1f}x less (target {MEMORY_TARGET}x: {'met' if ratio >= MEMORY_TARGET else 'NOT met'})")
    return line


def main():
    fs_path, torch_path, out_md = sys.argv[1:4]
    torch = torch_rows(torch_path)
    torch_peaks = json.load(open(sys.argv[4])) if len(sys.argv) > 4 else []
    lines = [
        "| config | metric | dtype | flowspec generated | flowspec interpreter | fastest PyTorch (lib) | speed-up vs fastest | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    extra = []
    for line in open(fs_path):
        if not line.strip():
            continue
        r = json.loads(line)
        cfg, dtype = r["config"], r["dtype"]
        engines = {e["engine"]: e for e in r["engines"]}
        gen = engines.get("generated", {})
        interp = engines.get("interpreter", {})
        for f in gen.get("figures", []):
            m = f["metric"]
            ifig = next((x for x in interp.get("figures", []) if x["metric"] == m), None)
            if m == "log_prob_one":
                extra.append(f"- `log_prob_one` ({cfg}, {dtype}): {f['median_s'] * 1e6:.3f} us per point "
                             f"(target < 2 us: {'met' if f['median_s'] < 2e-6 else 'NOT met'})")
                continue
            batch = f["rows"] if m == "train" else None
            tm = "train_step" if m == "train" else m
            cands = torch.get((cfg, tm, batch, DT[dtype]), [])
            label = f"{m} (batch {batch})" if m == "train" else f"{m} (n {f['rows']})"
            if m == "train":
                fmt = lambda x: f"{x['median_s'] * 1e3:.3f} ms"  # noqa: E731
            else:
                fmt = lambda x: f"{x['samples_per_s']:,.0f}/s"  # noqa: E731
            gtxt = fmt(f)
            itxt = fmt(ifig) if ifig else "-"
            if cands:
                best = min(cands, key=lambda x: x["median_s"])
                ratio = best["median_s"] / f["median_s"]
                ttxt = f"{fmt(best)} ({best['lib']})"
                rtxt = f"{ratio:.2f}x"
            else:
                ratio, ttxt, rtxt = None, "-", "-"
            target = TARGETS.get((cfg, m, batch))
            if isinstance(target, dict):
                target = target[dtype]
            met = "-" if target is None or ratio is None else ("yes" if ratio >= target else "no")
            lines.append(f"| {cfg} | {label} | {dtype} | {gtxt} | {itxt} | {ttxt} | {rtxt} | "
                         f"{'' if target is None else f'{target}x'} | {met} |")
        for e in r["engines"]:
            extra.append(memory_line(r, e, cfg, dtype, torch_peaks))
    text = "\n".join(lines) + "\n\n" + "\n".join(extra) + "\n"
    open(out_md, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
