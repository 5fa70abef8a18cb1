#!/usr/bin/env python
"""Speed benchmark of normalizing flows in zuko / nflows / normflows (CPU).

Configs (see README.md for the exact definitions):
  C1  RealNVP affine coupling, D=2, 8 layers, MLP [64,64] ReLU, batch 256
  C2  MAF, D=64, 5 layers, MADE [256,256], batch 256
  C3  RQ-spline (NSF) coupling, D=2, 4 layers, 8 bins, MLP [64,64], batch 256
  C4  C1 train step at batch 16 / 256 / 4096
  C5  IAF vs MAF at D=64 (C2 architecture): sampling 10000 (+ log_prob 10000)

Each figure is measured in float32 and float64, after warm-up, as the median
of several timed repeats.  Because the machine may be shared with other
processes (2 cores), every repeat also records how much CPU *other* processes
used during it (from /proc/stat minus our own /proc/self/stat); a repeat is
"clean" when that is below FOREIGN_MAX cores.  We wait for a quiet machine
before each measurement and keep re-running dirty repeats (bounded), and the
median is taken over the clean repeats only (all repeats if too few were
clean, in which case the row is flagged `contended`).

Usage:  python bench_torch.py [--configs C1,C2,...]
            [--libs zuko,nflows,normflows] [--dtypes float32,float64] [--quick]
Writes results/torch_bench.json and results/torch_bench.md.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flows_common as fc  # noqa: E402

warnings.filterwarnings("ignore")
THREADS = 2
N_EVAL = 10000
FOREIGN_MAX = 0.25       # cores used by other processes that still counts as clean
HZ = os.sysconf("SC_CLK_TCK")
RESULTS = os.path.join(fc.HERE, "results")


# --------------------------------------------------------- CPU contention
def _cpu_sample():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = sum(v) - v[3] - v[4]          # minus idle and iowait
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()
    own = int(s[11]) + int(s[12])        # utime + stime of this process (all threads)
    return time.perf_counter(), busy, own


def foreign_cores(a, b):
    dt = max(b[0] - a[0], 1e-9)
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / HZ / dt)


WAITED = {"total_s": 0.0}


WAIT_BUDGET_S = 1500.0   # after this much total waiting, stop waiting (rows get flagged)


def wait_quiet(max_wait=120.0, window=0.5):
    """Block until other processes use < FOREIGN_MAX cores over `window` s."""
    # flowspec: BENCH_MAX_WAIT bounds the wait (seconds) on a machine that is never quiet.
    max_wait = min(max_wait, float(os.environ.get("BENCH_MAX_WAIT", max_wait)))
    if WAITED["total_s"] > WAIT_BUDGET_S:
        max_wait = 2 * window
    t0 = time.perf_counter()
    while True:
        a = _cpu_sample()
        time.sleep(window)
        f = foreign_cores(a, _cpu_sample())
        waited = time.perf_counter() - t0
        if f < FOREIGN_MAX or waited > max_wait:
            WAITED["total_s"] += waited
            return f


def measure(fn, repeats, inner=1, warmup=1, max_attempts=None):
    """Median seconds per fn() call over clean repeats of `inner` calls."""
    wait_quiet()
    for _ in range(warmup):
        fn()
    times, foreign, clean = [], [], []
    max_attempts = max_attempts or 3 * repeats
    attempts = 0
    while len(clean) < repeats and attempts < max_attempts:
        attempts += 1
        a = _cpu_sample()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        t = (time.perf_counter() - t0) / inner
        f = foreign_cores(a, _cpu_sample())
        times.append(t)
        foreign.append(round(f, 3))
        if f < FOREIGN_MAX:
            clean.append(t)
        else:
            wait_quiet()
    contended = len(clean) < max(3, (repeats + 1) // 2)
    used = times if contended else clean
    return {
        "median_s": statistics.median(used),
        "min_s": min(used),
        "times_s": [round(x, 6) for x in times],
        "foreign_cores": foreign,
        "clean_repeats": len(clean),
        "repeats_run": len(times),
        "inner_calls": inner,
        "contended": contended,
    }


def plan(fn, target=0.25):
    """One untimed probe call (it also warms up) -> (repeats, inner, warmup) so
    that one repeat lasts >= target s; slow calls (> 1.5 s) get 3 repeats of one
    call and no further warm-up."""
    t0 = time.perf_counter()
    fn()
    t = time.perf_counter() - t0
    if t > 1.5:
        return 3, 1, 0
    return 7, max(1, int(math.ceil(target / max(t, 1e-5)))), 1


# ------------------------------------------------------------------ data
def moons_points(n, dtype, seed=0):
    x = torch.from_numpy(fc.load("moons", "train"))
    g = torch.Generator().manual_seed(seed)
    return x[torch.randint(0, x.shape[0], (n,), generator=g)].to(dtype)


def digits_points(n, dtype, seed=0):
    """dequantized + logit digits (the space the D=64 flows model)."""
    px = torch.from_numpy(fc.load("digits", "train"))
    g = torch.Generator().manual_seed(seed)
    rows = px[torch.randint(0, px.shape[0], (n,), generator=g)]
    y, _ = fc.logit_transform(fc.digits_dequantize(rows, g))
    return y.to(dtype)


def builder(cfg):
    return {
        "C1": lambda lib: fc.build_realnvp(lib, D=2, layers=8, hidden=(64, 64)),
        "C2": lambda lib: fc.build_maf(lib, D=64, layers=5, hidden=(256, 256)),
        "C3": lambda lib: fc.build_nsf_coupling(lib, D=2, layers=4, bins=8, hidden=(64, 64)),
        "C4": lambda lib: fc.build_realnvp(lib, D=2, layers=8, hidden=(64, 64)),
        "C5-MAF": lambda lib: fc.build_maf(lib, D=64, layers=5, hidden=(256, 256)),
        "C5-IAF": lambda lib: fc.build_maf(lib, D=64, layers=5, hidden=(256, 256), inverse=True),
    }[cfg]


def points_for(cfg):
    return moons_points if cfg in ("C1", "C3", "C4") else digits_points


# ----------------------------------------------------------- measurements
def bench_train_step(m, cfg, dtype, batch, quick):
    torch.manual_seed(1)
    data = points_for(cfg)(64 * batch if batch <= 256 else 8 * batch, dtype, seed=1)
    batches = list(data.split(batch))
    opt = torch.optim.Adam(m.module.parameters(), lr=1e-3)
    it = [0]

    def step():
        xb = batches[it[0] % len(batches)]
        it[0] += 1
        opt.zero_grad(set_to_none=True)
        loss = -m.log_prob(xb).mean()
        loss.backward()
        opt.step()

    for _ in range(3 if quick else 10):  # warm-up incl. Adam state allocation
        step()
    repeats, inner, _ = plan(step)
    if quick:
        repeats = 3
    r = measure(step, repeats, inner, warmup=2)
    r.update(metric="train_step", batch=batch, ms_per_step=r["median_s"] * 1e3,
             samples_per_s=batch / r["median_s"])
    return r


def bench_log_prob(m, cfg, dtype, quick):
    x = points_for(cfg)(N_EVAL, dtype, seed=2)

    def f():
        with torch.no_grad():
            lp = m.log_prob(x)
        assert lp.shape == (N_EVAL,)

    repeats, inner, warmup = plan(f)
    if quick:
        repeats = 3
    r = measure(f, repeats, inner, warmup=warmup)
    with torch.no_grad():
        lp = m.log_prob(x)
    r.update(metric="log_prob", n=N_EVAL, ms_per_call=r["median_s"] * 1e3,
             samples_per_s=N_EVAL / r["median_s"], finite=bool(torch.isfinite(lp).all()),
             mean_log_prob=float(lp.mean()))
    return r


def bench_sample(m, dtype, quick):
    def f():
        with torch.no_grad():
            s = m.sample(N_EVAL)
        assert s.shape[0] == N_EVAL and s.dtype == dtype, (s.shape, s.dtype)

    repeats, inner, warmup = plan(f)
    if quick:
        repeats = 3
    r = measure(f, repeats, inner, warmup=warmup)
    r.update(metric="sample", n=N_EVAL, ms_per_call=r["median_s"] * 1e3,
             samples_per_s=N_EVAL / r["median_s"])
    return r


def run_config(cfg, lib, dtype, quick, out):
    dname = str(dtype).replace("torch.", "")
    with fc.default_dtype(dtype):
        torch.manual_seed(0)
        m = builder(cfg)(lib)
        m.module.to(dtype)
        total, eff = fc.param_counts(m.module)
        base = dict(config=cfg, lib=lib, dtype=dname, params_total=total,
                    params_effective=eff, recipe=m.recipe)
        t0 = time.perf_counter()
        if cfg in ("C1", "C2", "C3"):
            metrics = [bench_train_step(m, cfg, dtype, 256, quick),
                       bench_log_prob(m, cfg, dtype, quick),
                       bench_sample(m, dtype, quick)]
        elif cfg == "C4":
            metrics = []
            for b in (16, 256, 4096):
                torch.manual_seed(0)
                m = builder(cfg)(lib)
                m.module.to(dtype)
                metrics.append(bench_train_step(m, cfg, dtype, b, quick))
        elif cfg == "C5-IAF":
            metrics = [bench_sample(m, dtype, quick), bench_log_prob(m, cfg, dtype, quick)]
        else:
            raise ValueError(cfg)
        for r in metrics:
            row = dict(base)
            row.update(r)
            out.append(row)
            fig = (f"{r['ms_per_step']:.3f} ms/step (batch {r['batch']})" if r["metric"] == "train_step"
                   else f"{r['samples_per_s']:.0f} samples/s")
            print(f"  {cfg:7s} {lib:9s} {dname:7s} {r['metric']:10s} {fig:32s} "
                  f"clean {r['clean_repeats']}/{r['repeats_run']}"
                  f"{'  CONTENDED' if r['contended'] else ''}", flush=True)
        print(f"    ({time.perf_counter() - t0:.1f}s, params {total} / effective {eff})", flush=True)


# ------------------------------------------------------------- aggregate
def aggregate(raw):
    """One row per (config, lib, dtype, metric, batch): median over sweeps of the
    per-sweep medians; `spread` = max/min - 1 across sweeps."""
    keys = []
    for r in raw:
        k = (r["config"], r["lib"], r["dtype"], r["metric"], r.get("batch"))
        if k not in keys:
            keys.append(k)
    out = []
    for k in keys:
        rs = [r for r in raw if (r["config"], r["lib"], r["dtype"], r["metric"], r.get("batch")) == k]
        med = statistics.median([r["median_s"] for r in rs])
        row = {kk: rs[0][kk] for kk in ("config", "lib", "dtype", "metric", "params_total",
                                         "params_effective", "recipe") if kk in rs[0]}
        if rs[0].get("batch") is not None:
            row["batch"] = rs[0]["batch"]
        n = rs[0].get("n")
        row.update(
            median_s=med,
            sweep_medians_s=[r["median_s"] for r in rs],
            spread=max(r["median_s"] for r in rs) / min(r["median_s"] for r in rs) - 1,
            n_sweeps=len(rs),
            contended=any(r["contended"] for r in rs) and len(rs) < 2,
            any_sweep_contended=any(r["contended"] for r in rs),
        )
        if row["metric"] == "train_step":
            row.update(ms_per_step=med * 1e3, samples_per_s=row["batch"] / med)
        else:
            row.update(n=n, ms_per_call=med * 1e3, samples_per_s=n / med)
        out.append(row)
    return out


# ---------------------------------------------------------------- report
def fmt_rate(x):
    return f"{x:,.0f}"


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def flag(r):
    return "*" if r and r.get("any_sweep_contended") else ""


def pct(r):
    return f"{100 * r['spread']:.0f}%" if r else "-"


def write_md(rows, meta, path):
    L = []
    L.append("# PyTorch normalizing-flow speed anchors (CPU)\n")
    sw = meta["sweeps"]
    L.append(f"Generated {meta['date']} by `bench_torch.py`: {meta['n_sweeps']} full sweeps "
             "over all configs (" + "; ".join(
                 f"{x['source']} started {x['date']}" for x in sw) + f"; this run {meta['wall_s']:.0f} s). "
             f"torch {meta['torch']} (CPU only), zuko {meta['zuko']}, nflows {meta['nflows']}, "
             f"normflows {meta['normflows']}, numpy {meta['numpy']}, Python {meta['python']}. "
             f"`torch.get_num_threads() = {meta['threads']}`, interop threads "
             f"{meta['interop_threads']}, CPU: {meta['cpu']} ({meta['ncpu']} logical cores), "
             f"BLAS: {meta['blas']}.\n")
    L.append("Method: eager PyTorch, no torch.compile. Within a sweep each figure is the median over timed "
             "repeats after warm-up; the tables give the median over sweeps of those medians, and "
             "`spread` = (slowest sweep / fastest sweep - 1), a measure of run-to-run variation on "
             "this shared 2-core VM (expect differences of this size between runs). "
             "Train step: 10 warm-up Adam steps + 1 probe step + 2 more, then "
             "7 repeats, each of enough steps to last >= 0.25 s (ms/step = repeat time / steps). "
             "log_prob / sample: 1 probe call + 1 warm-up call, then 7 repeats of >= 0.25 s; when one "
             "call takes > 1.5 s, the probe is the only warm-up and 3 single-call repeats are timed. "
             "Repeats during which other processes used "
             f">= {FOREIGN_MAX} CPU cores were discarded and re-run (the machine is shared); "
             "a `*` marks a figure for which some sweep did not get enough clean repeats and used "
             f"the median over all its repeats (less reliable). Time spent waiting for a quiet machine in this run: {meta['waited_s']:.0f} s.\n")
    L.append("- **train ms/step**: one Adam step = `loss = -log_prob(batch).mean(); "
             "zero_grad; backward; step` (lr 1e-3), batch 256 unless stated.\n"
             "- **log_prob samples/s**: 10000 points / (time of one `log_prob` call on all 10000 "
             "points as a single batch, under `torch.no_grad()`).\n"
             "- **sample samples/s**: 10000 / (time of one call drawing 10000 samples, "
             "`torch.no_grad()`).\n"
             "- **params**: trainable parameter count; `eff` counts masked MADE weights only "
             "where the mask is 1 (= total for unmasked nets).\n"
             "- Data fed to the timers: standardized moons (C1, C3, C4); dequantized + logit "
             "digits, D=64 (C2, C5).\n")

    L.append("## C1-C3: train step, log_prob, sample\n")
    L.append("| config | library | dtype | params (eff) | train ms/step | train samples/s | "
             "log_prob samples/s | sample samples/s | spread train / log_prob / sample |")
    L.append("|---|---|---|---|---:|---:|---:|---:|---|")
    for cfg in ("C1", "C2", "C3"):
        for lib in fc.LIBS:
            for dt in ("float32", "float64"):
                tr = find(rows, config=cfg, lib=lib, dtype=dt, metric="train_step")
                lp = find(rows, config=cfg, lib=lib, dtype=dt, metric="log_prob")
                sp = find(rows, config=cfg, lib=lib, dtype=dt, metric="sample")
                if not tr:
                    continue
                L.append(f"| {cfg} | {lib} | {dt} | {tr['params_total']:,} ({tr['params_effective']:,}) | "
                         f"{tr['ms_per_step']:.3f}{flag(tr)} | {fmt_rate(tr['samples_per_s'])} | "
                         f"{fmt_rate(lp['samples_per_s'])}{flag(lp)} | "
                         f"{fmt_rate(sp['samples_per_s'])}{flag(sp)} | "
                         f"{pct(tr)} / {pct(lp)} / {pct(sp)} |")
    L.append("")

    L.append("## C4: C1 train step vs batch size (ms/step, samples/s in brackets)\n")
    L.append("| library | dtype | batch 16 | batch 256 | batch 4096 | spread 16 / 256 / 4096 |")
    L.append("|---|---|---:|---:|---:|---|")
    for lib in fc.LIBS:
        for dt in ("float32", "float64"):
            cells, sp = [], []
            for b in (16, 256, 4096):
                r = find(rows, config="C4", lib=lib, dtype=dt, metric="train_step", batch=b)
                cells.append(f"{r['ms_per_step']:.3f}{flag(r)} ({fmt_rate(r['samples_per_s'])})" if r else "-")
                sp.append(pct(r))
            if any(c != "-" for c in cells):
                L.append(f"| {lib} | {dt} | " + " | ".join(cells) + " | " + " / ".join(sp) + " |")
    L.append("")

    L.append("## C5: MAF vs IAF at D=64 (C2 architecture), 10000 points, samples/s\n")
    L.append("MAF figures are the C2 rows (same model). IAF = the same 5 MADE layers inverted: "
             "sampling needs one MADE pass per layer, log_prob needs D=64 sequential passes per "
             "layer (MAF is the other way round).\n")
    L.append("| library | dtype | MAF sample | IAF sample | IAF/MAF sample speed-up | "
             "MAF log_prob | IAF log_prob | spread IAF sample / IAF log_prob |")
    L.append("|---|---|---:|---:|---:|---:|---:|---|")
    for lib in fc.LIBS:
        for dt in ("float32", "float64"):
            ms = find(rows, config="C2", lib=lib, dtype=dt, metric="sample")
            ml = find(rows, config="C2", lib=lib, dtype=dt, metric="log_prob")
            is_ = find(rows, config="C5-IAF", lib=lib, dtype=dt, metric="sample")
            il = find(rows, config="C5-IAF", lib=lib, dtype=dt, metric="log_prob")
            if not is_:
                continue
            sp = f"{is_['samples_per_s'] / ms['samples_per_s']:.0f}x" if ms else "-"
            L.append(f"| {lib} | {dt} | {fmt_rate(ms['samples_per_s']) + flag(ms) if ms else '-'} | "
                     f"{fmt_rate(is_['samples_per_s'])}{flag(is_)} | {sp} | "
                     f"{fmt_rate(ml['samples_per_s']) + flag(ml) if ml else '-'} | "
                     f"{fmt_rate(il['samples_per_s'])}{flag(il)} | {pct(is_)} / {pct(il)} |")
    L.append("")

    L.append("## How each model was built\n")
    seen = set()
    for r in rows:
        key = (r["config"], r["lib"])
        if key in seen or r["config"] == "C4":
            continue
        seen.add(key)
        L.append(f"- **{r['config']} / {r['lib']}** ({r['params_total']:,} params, "
                 f"{r['params_effective']:,} effective): {r['recipe']}")
    L.append("- **C4**: exactly the C1 model of each library, rebuilt (seed 0) for each batch size.")
    L.append("")
    L.append("Per-layer sizes (identical in all three libraries): C1 coupling layer = MLP 1->64->64->2 "
             "= 4,418 params, x 8 = 35,344. C2/C5 MADE layer = masked 64->256->256->128 = 115,328 "
             "stored (58,624 unmasked), x 5 = 576,640 (293,120). C3 spline coupling layer = "
             "MLP 1->64->64->23 (8 widths + 8 heights + 7 interior derivatives) = 5,783, x 4 = 23,132.\n")
    L.append("Raw data (`raw_rows`: every sweep, every repeat, foreign-CPU readings per repeat; `rows`: the "
             "aggregated figures above): `results/torch_bench.json`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="C1,C2,C3,C4,C5")
    ap.add_argument("--libs", default=",".join(fc.LIBS))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--quick", action="store_true", help="3 repeats, short warm-up (smoke test)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "torch_bench"))
    ap.add_argument("--passes", type=int, default=2,
                    help="full sweeps over all configs; the report gives the median over sweeps")
    ap.add_argument("--merge-from", default="",
                    help="comma-separated earlier torch_bench JSON files whose sweeps are merged in")
    args = ap.parse_args()

    fc.set_threads(THREADS)
    os.makedirs(RESULTS, exist_ok=True)
    cfgs = []
    for c in args.configs.split(","):
        cfgs += ["C5-IAF"] if c == "C5" else [c]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    libs = args.libs.split(",")
    import importlib.metadata as md
    import zuko
    import normflows
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        torch=torch.__version__, zuko=zuko.__version__, nflows=md.version("nflows"),
        normflows=normflows.__version__, numpy=np.__version__, python=platform.python_version(),
        threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
        cpu=cpu, ncpu=os.cpu_count(),
        blas=("MKL" if torch.backends.mkl.is_available() else "?") + ", OpenMP ATen backend",
        foreign_max_cores=FOREIGN_MAX, n_eval=N_EVAL, quick=args.quick,
    )
    print(f"threads={meta['threads']} torch={meta['torch']} cpu={cpu}", flush=True)
    raw = []
    sweeps = [{"source": "this run", "date": meta["date"]}]
    if args.merge_from:
        for path in args.merge_from.split(","):
            prev = json.load(open(path))
            prev_raw = prev.get("raw_rows", prev.get("rows"))
            base_pass = 1 + max([r.get("pass", 0) for r in raw] + [-1])
            for r in prev_raw:
                r = dict(r)
                r["pass"] = base_pass + r.get("pass", 0)
                raw.append(r)
            if "sweeps" in prev["meta"]:   # an already merged file: keep its sweep list
                for sw_ in prev["meta"]["sweeps"]:
                    sw_ = dict(sw_)
                    if sw_["source"] == "this run":
                        sw_["source"] = f"{os.path.basename(path)} (its own run)"
                    sweeps.insert(-1, sw_)
            else:
                sweeps.insert(-1, {"source": os.path.basename(path), "date": prev["meta"]["date"],
                                   "wall_s": prev["meta"]["wall_s"], "waited_s": prev["meta"]["waited_s"]})
    first_pass = 1 + max([r.get("pass", 0) for r in raw] + [-1])
    t0 = time.perf_counter()
    for p in range(args.passes):
        print(f"--- sweep {first_pass + p + 1} ---", flush=True)
        rows = []
        for cfg in cfgs:
            for lib in libs:
                for dt in dtypes:
                    run_config(cfg, lib, dt, args.quick, rows)
        for r in rows:
            r["pass"] = first_pass + p
        raw += rows
    meta["wall_s"] = time.perf_counter() - t0
    meta["waited_s"] = WAITED["total_s"]
    meta["sweeps"] = sweeps
    meta["n_sweeps"] = 1 + max(r["pass"] for r in raw)
    agg = aggregate(raw)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": agg, "raw_rows": raw}, f, indent=1)
    write_md(agg, meta, args.out + ".md")
    print(f"done in {meta['wall_s']:.0f}s (waited {meta['waited_s']:.0f}s for quiet CPU) -> "
          f"{args.out}.json/.md", flush=True)


if __name__ == "__main__":
    main()
