#!/usr/bin/env bash
# Re-trains the three reference encoder bundles in models/ from scratch on CPU
# (see training/README.md). Uses Debian's torch (/usr/bin/python3); as root it
# installs python3-torch python3-onnx libopenblas0-pthread with apt-get when
# they are missing, otherwise it says what is missing.
#
#   scripts/train-encoders.sh                 # all three
#   scripts/train-encoders.sh bc5cdr jnlpba   # a subset
#
# Logs go to ${LOG_DIR:-/tmp/bioner-train-logs}/<dataset>.log. Each bundle is
# verified with training/verify_bundle.mjs (Node tokenizer + onnxruntime-node)
# when node_modules is installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY=/usr/bin/python3
log_dir="${LOG_DIR:-/tmp/bioner-train-logs}"
mkdir -p "$log_dir"

have_deps() {
  [[ -x "$PY" ]] && "$PY" -c 'import torch, onnx, numpy' >/dev/null 2>&1 &&
    ls /usr/lib/*/libopenblas*.so* /usr/lib/*/openblas-pthread/* >/dev/null 2>&1
}
if ! have_deps; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "train-encoders: installing python3-torch python3-onnx python3-numpy libopenblas0-pthread" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-torch python3-onnx python3-numpy libopenblas0-pthread
  else
    echo "train-encoders: need Debian packages python3-torch python3-onnx python3-numpy libopenblas0-pthread (run as root or install them)" >&2
    exit 1
  fi
fi

# The exact commands used for the committed bundles (nice 5, one torch thread:
# measured >2x faster than two threads for this model on the shared 2-core box).
train() {
  case "$1" in
    bc5cdr)
      nice -n 5 "$PY" training/train_encoder.py --dataset bc5cdr --epochs 20 --seed 13 --threads 1 --out models/bc5cdr-encoder ;;
    ncbi-disease)
      nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --epochs 18 --seed 13 --threads 1 --out models/ncbi-disease-encoder ;;
    jnlpba)
      nice -n 5 "$PY" training/train_encoder.py --dataset jnlpba --epochs 5 --seed 13 --threads 1 --out models/jnlpba-encoder ;;
    *) echo "unknown dataset $1" >&2; return 2 ;;
  esac
}

datasets=("$@")
[[ ${#datasets[@]} -gt 0 ]] || datasets=(bc5cdr ncbi-disease jnlpba)
for d in "${datasets[@]}"; do
  echo "train-encoders: $d (log $log_dir/$d.log)" >&2
  rc=0
  train "$d" >"$log_dir/$d.log" 2>&1 || rc=$?
  grep -E '^(data|model|epoch|best|padding|bundle|done)' "$log_dir/$d.log" || true
  [[ $rc == 0 ]] || { echo "train-encoders: $d failed (rc $rc), see $log_dir/$d.log" >&2; exit 1; }
  if [[ -d node_modules/onnxruntime-node && -d node_modules/@huggingface/tokenizers ]]; then
    node training/verify_bundle.mjs "models/$d-encoder" "/tmp/bioner-$d-fixture.json"
  fi
done
