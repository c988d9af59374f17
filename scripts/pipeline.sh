#!/usr/bin/env bash
# pipeline.sh — the whole cqat flow on the default data (Debian's Fashion-MNIST):
# float training, quantization-aware fine-tuning, convert to an integer-only model,
# evaluation of that model; prints the three accuracies and the file sizes.
#
#   scripts/pipeline.sh [--model refcnn] [--epochs 6] [--qat-epochs 2] [--out-dir runs]
#                       [--limit N] [--threads N]
#
# Every step is a cqat command (see `build/tools/cqat --help`), so any of them can be
# rerun alone; the files land in --out-dir (default ./runs).
set -euo pipefail

cd "$(dirname "$0")/.."
CQAT=build/tools/cqat
model=refcnn epochs=6 qat_epochs=2 out=runs extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --qat-epochs) qat_epochs=$2; shift 2 ;;
    --out-dir) out=$2; shift 2 ;;
    --limit|--threads) extra+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pipeline.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$CQAT" ] || { echo "pipeline.sh: $CQAT not built (run scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$out"

# The value of "key" in the JSON object on the last line of a command's output.
json() { tail -n 1 "$1" | sed -n "s/.*\"$2\": \([0-9.eE+-]*\).*/\1/p"; }
pct() { awk -v a="$1" 'BEGIN { printf "%.2f%%", 100 * a }'; }
size() { stat -c %s "$1"; }

float="$out/$model-float.h5" qat="$out/$model-qat.h5" int8="$out/$model-int8.h5"
echo "== 1/4 float training ($epochs epochs)"
"$CQAT" train --model "$model" --epochs "$epochs" --out "$float" --json "${extra[@]}" | tee "$out/train.log"
echo "== 2/4 quantization-aware fine-tuning ($qat_epochs epochs)"
"$CQAT" qat --init "$float" --epochs "$qat_epochs" --out "$qat" --json "${extra[@]}" | tee "$out/qat.log"
echo "== 3/4 convert to an integer-only model"
"$CQAT" convert "$qat" --out "$int8" | tee "$out/convert.log"
echo "== 4/4 evaluate the int8 model"
limit=()
for ((i = 0; i < ${#extra[@]}; i += 2)); do
  [ "${extra[i]}" = --limit ] && limit=(--limit "${extra[i+1]}")
done
"$CQAT" eval "$int8" --json "${limit[@]}" | tee "$out/eval.log"

echo
echo "summary ($model, Fashion-MNIST test set)"
printf '  %-28s %8s   %s (%s bytes)\n' "float" "$(pct "$(json "$out/train.log" accuracy)")" "$float" "$(size "$float")"
printf '  %-28s %8s   %s (%s bytes)\n' "QAT (fake quant)" "$(pct "$(json "$out/qat.log" accuracy)")" "$qat" "$(size "$qat")"
printf '  %-28s %8s   %s (%s bytes)\n' "int8 (integer-only runtime)" "$(pct "$(json "$out/eval.log" accuracy)")" "$int8" "$(size "$int8")"
