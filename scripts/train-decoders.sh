#!/usr/bin/env bash
# Re-trains the three reference decoder-only ("LLM") tagger bundles
# models/<dataset>-decoder-classifier from scratch on CPU (see "Reference decoder" in
# training/README.md), one after another. Each uses the tokenizer of
# models/<dataset>-encoder, so train (or check out) the encoder bundles first.
#
#   scripts/train-decoders.sh                 # all three
#   scripts/train-decoders.sh bc5cdr jnlpba   # a subset
#
# Uses Debian's torch (/usr/bin/python3). When python3-torch, python3-onnx or
# libopenblas0-pthread are missing it runs apt-get update and installs them
# (as root), otherwise it says what is missing. Logs go to
# ${LOG_DIR:-/tmp/bioner-train-logs}/<dataset>-decoder-classifier.log. Each bundle is verified
# with training/verify_bundle.mjs (Node tokenizer + onnxruntime-node vs torch)
# when node_modules is installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY=/usr/bin/python3
log_dir="${LOG_DIR:-/tmp/bioner-train-logs}"
mkdir -p "$log_dir"

pkgs=(python3-torch python3-onnx python3-numpy libopenblas0-pthread)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "train-decoders: installing ${missing[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "train-decoders: need Debian packages ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
fi
"$PY" -c 'import torch, onnx, numpy' || { echo "train-decoders: $PY cannot import torch/onnx/numpy" >&2; exit 1; }

# The exact commands used for the committed bundles (2 threads each, nice 10).
train() {
  local common=(--batch-size 16 --lr 1.5e-3 --ema 0.995 --seed 13)
  case "$1" in
    bc5cdr)
      nice -n 10 "$PY" training/train_decoder.py --dataset bc5cdr --epochs 7 "${common[@]}" \
        --time-budget 16 --out models/bc5cdr-decoder-classifier ;;
    ncbi-disease)
      nice -n 10 "$PY" training/train_decoder.py --dataset ncbi-disease --epochs 7 "${common[@]}" \
        --time-budget 16 --out models/ncbi-disease-decoder-classifier ;;
    jnlpba)
      nice -n 10 "$PY" training/train_decoder.py --dataset jnlpba --epochs 2 "${common[@]}" \
        --time-budget 16 --out models/jnlpba-decoder-classifier ;;
    *) echo "unknown dataset $1" >&2; return 2 ;;
  esac
}

datasets=("$@")
[[ ${#datasets[@]} -gt 0 ]] || datasets=(bc5cdr ncbi-disease jnlpba)
for d in "${datasets[@]}"; do
  if [[ ! -f "models/$d-encoder/vocab.txt" ]]; then
    echo "train-decoders: models/$d-encoder is missing; the decoder reuses its tokenizer (run scripts/train-encoders.sh $d first)" >&2
    exit 1
  fi
  echo "train-decoders: $d (log $log_dir/$d-decoder-classifier.log)" >&2
  train "$d" 2>&1 | tee "$log_dir/$d-decoder-classifier.log" | grep -E '^(data|model|epoch|best|int8|padding|bundle|done|WARNING)' || true
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "train-decoders: $d failed, see $log_dir/$d-decoder-classifier.log" >&2; exit 1; }
  if [[ -d node_modules/onnxruntime-node && -d node_modules/@huggingface/tokenizers ]]; then
    node training/verify_bundle.mjs "models/$d-decoder-classifier" "/tmp/bioner-$d-decoder-classifier-fixture.json"
  fi
done
