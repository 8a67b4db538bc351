#!/usr/bin/env bash
# Trains the generative decoder-only NER LM of the LLM route on CPU (see
# training/README-generative.md): one shared pretraining, then fine-tuning,
# ONNX export (KV cache) and a Node check for each dataset. Uses Debian's
# torch (/usr/bin/python3); as root it installs python3-torch python3-onnx
# python3-numpy libopenblas0-pthread with apt-get (after apt-get update) when
# they are missing, otherwise it says what is missing.
#
#   scripts/train-generative.sh                  # all three datasets
#   scripts/train-generative.sh bc5cdr           # a subset (pretraining is shared)
#   PRETRAIN_MIN=45 ...                          # pretraining time budget (minutes)
#   FINETUNE_MIN=15 ...                          # single-task fine-tuning on a time budget instead of the committed recipes
#   WORK=DIR OUT_ROOT=DIR PRETRAIN_DIR=DIR ...   # state / bundles / corpus
#   PRETRAIN_STEPS=861 ...                       # a fixed step count instead of the time budget
#   VECTORS=1 WORK=/tmp/bioner-gen-vec PRETRAIN_STEPS=861 scripts/train-generative.sh ncbi-disease
#                                                # the committed ncbi-disease-generative: fastText vectors
#                                                # ($PRETRAIN_DIR/ft96.bin, built by training/train_vectors.sh
#                                                # when missing) in the token table (--vectors)
#   EXTRA=all EXTRA_MIX=0.25 ...                 # multi-corpus: also fine-tune on extra-labeled/ train
#                                                # splits (--extra, --extra-mix; trained on, not evaluated)
#
# The pretraining is resumable: it checkpoints to $WORK/pretrain.pt every 50
# steps and on SIGINT/SIGTERM, and this script always passes --resume, so
# running it again continues an interrupted pretraining (a finished one,
# whose time budget is used up, is kept as it is). Bundles go to
# $OUT_ROOT/<dataset>-generative (default /tmp/bioner-gen), never into models/.
# Logs: ${LOG_DIR:-/tmp/bioner-gen/logs}/{pretrain,<dataset>}.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY=/usr/bin/python3
work="${WORK:-/tmp/bioner-gen}"
out_root="${OUT_ROOT:-$work}"
pretrain_dir="${PRETRAIN_DIR:-/tmp/bioner-pretrain}"
corpus="$pretrain_dir/corpus.txt"
log_dir="${LOG_DIR:-$work/logs}"
pretrain_min="${PRETRAIN_MIN:-45}"
finetune_min="${FINETUNE_MIN:-15}"
mkdir -p "$work" "$out_root" "$log_dir"

have_deps() {
  [[ -x "$PY" ]] && "$PY" -c 'import torch, onnx, numpy' >/dev/null 2>&1 &&
    ls /usr/lib/*/libopenblas*.so* /usr/lib/*/openblas-pthread/* >/dev/null 2>&1
}
if ! have_deps; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "train-generative: installing python3-torch python3-onnx python3-numpy libopenblas0-pthread" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-torch python3-onnx python3-numpy libopenblas0-pthread
  else
    echo "train-generative: need Debian packages python3-torch python3-onnx python3-numpy libopenblas0-pthread (run as root or install them)" >&2
    exit 1
  fi
fi

# 1. corpus (train material only; built once, shared with the encoders' vectors)
if [[ ! -s "$corpus" ]]; then
  echo "train-generative: building $corpus" >&2
  "$PY" training/build_pretrain_corpus.py --out "$corpus"
fi

# 2. vocabulary + pretraining (nice 10, one torch thread; resumable)
pre=(--time-budget "$pretrain_min")
[[ -n "${PRETRAIN_STEPS:-}" ]] && pre=(--steps "$PRETRAIN_STEPS")
echo "train-generative: pretraining, ${pre[*]} (log $log_dir/pretrain.log)" >&2
if [[ -n "${VECTORS:-}" ]]; then
  [[ -s "$pretrain_dir/ft96.bin" ]] || PRETRAIN_DIR="$pretrain_dir" training/train_vectors.sh >"$log_dir/vectors.log" 2>&1 ||
    { echo "train-generative: vectors failed, see $log_dir/vectors.log" >&2; exit 1; }
  pre+=(--vectors "$pretrain_dir/ft96.bin")
fi
nice -n 10 "$PY" training/train_generative.py --stage pretrain --work "$work" --corpus "$corpus" \
  "${pre[@]}" --seed 13 --threads 1 --resume >>"$log_dir/pretrain.log" 2>&1 ||
  { echo "train-generative: pretraining failed, see $log_dir/pretrain.log" >&2; exit 1; }
grep -E '^(vocab|pretrain data|model|val loss|stop)' "$log_dir/pretrain.log" | tail -n 8 || true

# 3. per dataset: fine-tune, export, verify
datasets=("$@")
[[ ${#datasets[@]} -gt 0 ]] || datasets=(bc5cdr ncbi-disease jnlpba)
for d in "${datasets[@]}"; do
  case "$d" in bc5cdr | ncbi-disease | jnlpba) ;; *) echo "unknown dataset $d" >&2; exit 2 ;; esac
  out="$out_root/$d-generative"
  echo "train-generative: $d (log $log_dir/$d.log)" >&2
  rc=0
  # The committed recipes (training/README-generative.md): bc5cdr is exported from the multi-task model
  # (all three sets, the baselines' per-set exposure); the other two are single-task with fixed epochs.
  # FINETUNE_MIN set: single-task runs on that time budget instead.
  ft=(--dataset "$d") ckpt=()
  if [[ -n "${FINETUNE_MIN:-}" ]]; then
    ft+=(--time-budget "$finetune_min")
  else
    case "$d" in
      bc5cdr)
        ft=(--dataset bc5cdr,ncbi-disease,jnlpba --mix 2,2,0.5 --epochs 2)
        ckpt=(--checkpoint "$work/finetune-bc5cdr+ncbi-disease+jnlpba.pt") ;;
      ncbi-disease) ft+=(--epochs 4) ;;
      jnlpba) ft+=(--epochs 1 --evals-per-epoch 1) ;;
    esac
  fi
  extra=()
  if [[ -n "${EXTRA:-}" ]]; then
    # The fine-tune names its checkpoint <datasets>+extra<N> (train_generative.py finetune_name).
    n_extra=8
    [[ "$EXTRA" == all ]] || n_extra=$(tr ',' '\n' <<<"$EXTRA" | grep -c .)
    extra=(--extra "$EXTRA" --extra-mix "${EXTRA_MIX:-1}")
    base="${ckpt[1]:-$work/finetune-$d.pt}"
    ckpt=(--checkpoint "${base%.pt}+extra$n_extra.pt")
  fi
  {
    nice -n 10 "$PY" training/train_generative.py --stage finetune "${ft[@]}" "${extra[@]}" --work "$work" \
      --seed 13 --threads 1 &&
      nice -n 10 "$PY" training/train_generative.py --stage export --dataset "$d" --work "$work" \
        "${ckpt[@]}" --out "$out" --fixture "$out-fixture.json" --threads 1
  } >"$log_dir/$d.log" 2>&1 || rc=$?
  grep -E '^(finetune|init|eval epoch|best|torch checks|bundle|time budget)' "$log_dir/$d.log" || true
  [[ $rc == 0 ]] || { echo "train-generative: $d failed (rc $rc), see $log_dir/$d.log" >&2; exit 1; }
  if [[ -d node_modules/onnxruntime-node && -d node_modules/@huggingface/tokenizers ]]; then
    node training/verify_generative.mjs "$out" "$out-fixture.json"
  else
    echo "train-generative: node_modules missing, skipped training/verify_generative.mjs" >&2
  fi
done
