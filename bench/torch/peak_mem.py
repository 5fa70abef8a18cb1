#!/usr/bin/env python
"""Peak memory of a C2 training run (MAF, D=64, 5 layers, MADE [256,256], batch 256, Adam)
in zuko / nflows / normflows: one fresh process per library and dtype, so each VmHWM is that
run's own. Written for flowspec's side-by-side runner (not in the shared benchmark folder).

Usage: python peak_mem.py [--libs zuko,nflows,normflows] [--dtypes float32,float64]
           [--steps 50] [--out FILE.json]
Prints and writes one JSON object per run: lib, dtype, steps, peak_rss_kib (VmHWM at the
end), rss_after_import_kib (the process after `import torch` and the model's library).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def one_run(lib, dtype_name, steps):
    """The child: import, build C2, train `steps` steps at batch 256, report VmHWM."""
    import torch
    sys.path.insert(0, HERE)
    import flows_common as fc
    from bench_torch import digits_points
    fc.set_threads(2)
    after_import = vm("VmRSS")
    dtype = getattr(torch, dtype_name)
    with fc.default_dtype(dtype):
        torch.manual_seed(0)
        m = fc.build_maf(lib, D=64, layers=5, hidden=(256, 256))
        m.module.to(dtype)
        opt = torch.optim.Adam(m.module.parameters(), lr=1e-3)
        data = digits_points(64 * 256, dtype, seed=1).split(256)
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -m.log_prob(data[i % len(data)]).mean()
            loss.backward()
            opt.step()
    return dict(lib=lib, dtype=dtype_name, config="C2", batch=256, steps=steps,
                peak_rss_kib=vm("VmHWM"), rss_after_import_kib=after_import)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", default="zuko,nflows,normflows")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        lib, dt = a.child.split(":")
        print(json.dumps(one_run(lib, dt, a.steps)))
        return
    rows = []
    for dt in a.dtypes.split(","):
        for lib in a.libs.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", f"{lib}:{dt}",
                                  "--steps", str(a.steps)], check=True, capture_output=True,
                                 text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  C2 train {lib:9s} {dt:7s} peak {rows[-1]['peak_rss_kib'] / 1024:.1f} MiB "
                  f"(after import {rows[-1]['rss_after_import_kib'] / 1024:.1f} MiB)", flush=True)
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
