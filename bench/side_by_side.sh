#!/usr/bin/env bash
# flowspec against zuko / nflows / normflows, measured in one run on this machine.
#
#   bash bench/side_by_side.sh [--quick] [--configs C1,C2,C3,C4,C5] [--dtypes f32,f64] [--out DIR]
#
# 1. Creates .venv-torch (python3 -m venv; pip install torch zuko nflows normflows
#    scikit-learn numpy: about 6 GB, a few minutes) unless it is there already.
# 2. Builds the flowspec CLI (release) and runs `flowspec bench` for every line of
#    bench/configs.tsv whose config is chosen, in f32 and f64 (interpreter and generated code).
# 3. Runs bench/torch/bench_torch.py on the same configs and dtypes, and for C2
#    bench/torch/peak_mem.py (peak memory of a C2 training run, one process per library).
# 4. Prints the ratios (bench/compare.py) and writes them to DIR/side_by_side.md
#    (DIR defaults to bench/results/<date>).
# --quick: fewer and shorter repeats on both sides, generated code only (a smoke test).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARGS="$*"
QUICK=0; CONFIGS="C1,C2,C3,C4,C5"; DTYPES="f32,f64"; OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --configs) CONFIGS="$2"; shift ;;
        --dtypes) DTYPES="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
OUT="${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
PY="$ROOT/.venv-torch/bin/python"

# 1. PyTorch environment.
if ! "$PY" -c "import torch, zuko, nflows, normflows, sklearn, numpy" 2>/dev/null; then
    echo "== creating .venv-torch (about 6 GB, a few minutes)"
    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch zuko nflows normflows scikit-learn numpy
fi

# 2. flowspec.
echo "== building flowspec (release)"
cargo build --release -q -p flowspec
FS="$ROOT/target/release/flowspec"
FS_ARGS=()
ENGINE=both
if [ "$QUICK" = 1 ]; then FS_ARGS=(--repeats 3 --target-secs 0.1); ENGINE=generated; fi
: > "$OUT/flowspec.jsonl"
for dt in ${DTYPES//,/ }; do
    while IFS=$'\t' read -r cfg spec batch what flow; do
        case "$cfg" in ''|'#'*) continue ;; esac
        [[ ",$CONFIGS," == *",${cfg%%-*},"* ]] || continue
        FLOW=(); if [ -n "${flow:-}" ] && [ "$flow" != - ]; then FLOW=(--flow "$flow"); fi
        echo "== flowspec bench $cfg $spec ${FLOW[*]} --batch $batch --dtype $dt --what $what"
        "$FS" bench "$spec" "${FLOW[@]}" --batch "$batch" --dtype "$dt" --what "$what" \
            --engine "$ENGINE" "${FS_ARGS[@]}" --json > "$OUT/one.json"
        "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["config"]=sys.argv[2]; print(json.dumps(r))' \
            "$OUT/one.json" "$cfg" >> "$OUT/flowspec.jsonl"
    done < bench/configs.tsv
done
rm -f "$OUT/one.json"

# 3. PyTorch, same configs and dtypes.
TD=$(echo "$DTYPES" | sed 's/f32/float32/; s/f64/float64/')
TQ=(); if [ "$QUICK" = 1 ]; then TQ=(--quick); fi
echo "== bench_torch.py --configs $CONFIGS --dtypes $TD"
BENCH_MAX_WAIT="${BENCH_MAX_WAIT:-3}" "$PY" bench/torch/bench_torch.py --configs "$CONFIGS" \
    --dtypes "$TD" --passes 1 "${TQ[@]}" --out "$OUT/torch_bench"
echo '[]' > "$OUT/torch_peak_mem.json"
if [[ ",$CONFIGS," == *",C2,"* ]]; then
    echo "== peak_mem.py (C2 training, one process per library)"
    STEPS=50; if [ "$QUICK" = 1 ]; then STEPS=3; fi
    "$PY" bench/torch/peak_mem.py --dtypes "$TD" --steps "$STEPS" --out "$OUT/torch_peak_mem.json"
fi

# 4. Ratios.
{
    echo "Measured $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
    echo "Command: \`bash bench/side_by_side.sh $ARGS\` (flowspec $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo
} > "$OUT/side_by_side.md"
"$PY" bench/compare.py "$OUT/flowspec.jsonl" "$OUT/torch_bench.json" "$OUT/table.md" \
    "$OUT/torch_peak_mem.json"
cat "$OUT/table.md" >> "$OUT/side_by_side.md"
echo "== wrote $OUT/side_by_side.md"
