#!/usr/bin/env bash
# Re-trains the three reference encoder bundles on CPU (see training/README.md):
# by default with pretrained fastText sub-word vectors into /tmp/bioner-new-models,
# or (RECIPE=scratch) the committed from-scratch recipe into models/. Uses
# Debian's torch (/usr/bin/python3) and fasttext; as root it installs
# python3-torch python3-onnx libopenblas0-pthread fasttext with apt-get when
# they are missing, otherwise it says what is missing.
#
#   scripts/train-encoders.sh                 # all three
#   scripts/train-encoders.sh bc5cdr jnlpba   # a subset (pretrained: bc5cdr, bc5cdr-refit, ncbi-disease, ncbi-disease-refit, ncbi-disease-aux, ncbi-disease-aux-refit[-s21], ncbi-disease-ens, jnlpba, jnlpba-refit)
#   RECIPE=scratch scripts/train-encoders.sh  # the committed from-scratch bundles
#   OUT_ROOT=DIR PRETRAIN_DIR=DIR ...         # where bundles / corpus+vectors go
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
    ls /usr/lib/*/libopenblas*.so* /usr/lib/*/openblas-pthread/* >/dev/null 2>&1 &&
    command -v fasttext >/dev/null 2>&1
}
if ! have_deps; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "train-encoders: installing python3-torch python3-onnx python3-numpy libopenblas0-pthread fasttext" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-torch python3-onnx python3-numpy libopenblas0-pthread fasttext
  else
    echo "train-encoders: need Debian packages python3-torch python3-onnx python3-numpy libopenblas0-pthread fasttext (run as root or install them)" >&2
    exit 1
  fi
fi

# RECIPE=pretrained (default): the pretrained-vector recipe of issue 13
# (training/README.md, "Pretrained sub-word vectors"). training/train_vectors.sh
# first builds the unlabeled corpus and the fastText vectors (skipped when
# $PRETRAIN_DIR/ft96.bin exists), then the exact final commands train into
# $OUT_ROOT (default /tmp/bioner-new-models; OUT_ROOT=models replaces the
# committed bundles, but note that models/bc5cdr-decoder-classifier reuses the committed
# bc5cdr-encoder tokenizer, which the pretrained recipe's larger vocabulary changes).
# RECIPE=scratch: the exact from-scratch commands of the committed bundles
# (into models/ unless OUT_ROOT is set).
# nice 5, one torch thread: measured >2x faster than two for this model on the
# shared 2-core box.
recipe="${RECIPE:-pretrained}"
pretrain_dir="${PRETRAIN_DIR:-/tmp/bioner-pretrain}"
vectors="$pretrain_dir/ft96.bin"
case "$recipe" in
  pretrained) out_root="${OUT_ROOT:-/tmp/bioner-new-models}" ;;
  scratch) out_root="${OUT_ROOT:-models}" ;;
  *) echo "train-encoders: RECIPE must be pretrained or scratch" >&2; exit 2 ;;
esac
mkdir -p "$out_root"
if [[ "$recipe" == pretrained && ! -s "$vectors" ]]; then
  echo "train-encoders: building corpus + fastText vectors (log $log_dir/vectors.log)" >&2
  PRETRAIN_DIR="$pretrain_dir" training/train_vectors.sh >"$log_dir/vectors.log" 2>&1 ||
    { echo "train-encoders: vectors failed, see $log_dir/vectors.log" >&2; exit 1; }
  grep -E '^(pubmed|BC5CDR|NCBI|JNLPBA|extra|mtsamples|total|train_vectors)' "$log_dir/vectors.log" || true
fi

# Verification fixture of each bundle: next to the new bundles, or the old
# /tmp/bioner-<dataset>-fixture.json for the from-scratch recipe.
fixture() {
  if [[ "$recipe" == scratch ]]; then echo "/tmp/bioner-$1-fixture.json"; else echo "$out_root/$1-fixture.json"; fi
}

train() {
  local fx
  fx="$(fixture "$1")"
  if [[ "$recipe" == scratch ]]; then  # fixture: the script's default, /tmp/bioner-<dataset>-fixture.json
    case "$1" in
      bc5cdr)
        nice -n 5 "$PY" training/train_encoder.py --dataset bc5cdr --epochs 20 --seed 13 --threads 1 --out "$out_root/bc5cdr-encoder" ;;
      ncbi-disease)
        nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --epochs 18 --seed 13 --threads 1 --out "$out_root/ncbi-disease-encoder" ;;
      jnlpba)
        nice -n 5 "$PY" training/train_encoder.py --dataset jnlpba --epochs 5 --seed 13 --threads 1 --out "$out_root/jnlpba-encoder" ;;
      *) echo "unknown dataset $1" >&2; return 2 ;;
    esac
    return
  fi
  case "$1" in
    bc5cdr)
      nice -n 5 "$PY" training/train_encoder.py --dataset bc5cdr --epochs 20 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --out "$out_root/bc5cdr-encoder" --fixture "$fx" ;;
    ncbi-disease)
      nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --epochs 18 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --out "$out_root/ncbi-disease-encoder" --fixture "$fx" ;;
    jnlpba)
      nice -n 5 "$PY" training/train_encoder.py --dataset jnlpba --epochs 5 --time-budget 22 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --out "$out_root/jnlpba-encoder" --fixture "$fx" ;;
    bc5cdr-refit)
      # all of train (--no-holdout) for the 20 epochs the held-out run above picked (best epoch 20)
      nice -n 5 "$PY" training/train_encoder.py --dataset bc5cdr --epochs 20 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --no-holdout --out "$out_root/bc5cdr-encoder-refit" --fixture "$fx" ;;
    jnlpba-refit)
      # all of train for the 5 planned epochs (the held-out run's time guard stopped it after 4, still improving); no time guard
      nice -n 5 "$PY" training/train_encoder.py --dataset jnlpba --epochs 5 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --no-holdout --out "$out_root/jnlpba-encoder-refit" --fixture "$fx" ;;
    ncbi-disease-refit)
      # all of train for 13 epochs, the held-out run's best epoch (of 18)
      nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --epochs 13 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --no-holdout --out "$out_root/ncbi-disease-encoder-refit" --fixture "$fx" ;;
    ncbi-disease-aux)
      # multi-task: BC5CDR's whole train split beside NCBI's, its own head over the shared layers (dropped at export)
      nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --aux-dataset bc5cdr --epochs 18 --seed 13 --threads 1 --vectors "$vectors" --corpus-words 12000 --out "$out_root/ncbi-disease-encoder-aux" --fixture "$fx" ;;
    ncbi-disease-aux-refit|ncbi-disease-aux-refit-s21)
      # the multi-task recipe on all of train for the held-out run's best epoch (9 of 18); two seeds, the members of ncbi-disease-ens
      local seed=13
      [[ "$1" == *-s21 ]] && seed=21
      nice -n 5 "$PY" training/train_encoder.py --dataset ncbi-disease --aux-dataset bc5cdr --epochs 9 --seed "$seed" --threads 1 --vectors "$vectors" --corpus-words 12000 --no-holdout --out "$out_root/$1" --fixture "$fx" ;;
    ncbi-disease-ens)
      # the two refits above (trained first when missing), one bundle: mean of their log-softmax
      local m
      for m in ncbi-disease-aux-refit ncbi-disease-aux-refit-s21; do
        [[ -s "$out_root/$m/model.onnx" ]] || train "$m" || return
      done
      "$PY" training/ensemble_encoders.py --members "$out_root/ncbi-disease-aux-refit" "$out_root/ncbi-disease-aux-refit-s21" \
        --fixtures "$(fixture ncbi-disease-aux-refit)" "$(fixture ncbi-disease-aux-refit-s21)" \
        --name ncbi-disease-encoder --out "$out_root/ncbi-disease-encoder-ens" --fixture "$fx" ;;
    *) echo "unknown dataset $1" >&2; return 2 ;;
  esac
}

bundle() {
  case "$1" in
    *-aux-refit*) echo "$out_root/$1" ;;
    *-refit) echo "$out_root/${1%-refit}-encoder-refit" ;;
    *-aux) echo "$out_root/${1%-aux}-encoder-aux" ;;
    *-ens) echo "$out_root/${1%-ens}-encoder-ens" ;;
    *) echo "$out_root/$1-encoder" ;;
  esac
}

datasets=("$@")
if [[ ${#datasets[@]} == 0 ]]; then
  if [[ "$recipe" == scratch ]]; then datasets=(bc5cdr ncbi-disease jnlpba); else datasets=(bc5cdr bc5cdr-refit ncbi-disease ncbi-disease-aux jnlpba jnlpba-refit); fi
fi
for d in "${datasets[@]}"; do
  echo "train-encoders: $d (log $log_dir/$d.log)" >&2
  rc=0
  train "$d" >"$log_dir/$d.log" 2>&1 || rc=$?
  grep -E '^(vectors|data|model|epoch|best|padding|bundle|done)' "$log_dir/$d.log" || true
  [[ $rc == 0 ]] || { echo "train-encoders: $d failed (rc $rc), see $log_dir/$d.log" >&2; exit 1; }
  if [[ -d node_modules/onnxruntime-node && -d node_modules/@huggingface/tokenizers ]]; then
    node training/verify_bundle.mjs "$(bundle "$d")" "$(fixture "$d")"
  fi
done
