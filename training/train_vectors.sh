#!/usr/bin/env bash
# Steps 1-2 of the pretrained encoders (training/README.md, "Pretrained
# sub-word vectors"): build the unlabeled in-domain corpus (train splits and
# unlabeled text only, never devel) and train fastText skipgram vectors on it.
#
#   training/train_vectors.sh                       # -> /tmp/bioner-pretrain/ft96.{bin,vec}
#   PRETRAIN_DIR=/some/dir training/train_vectors.sh
#
# Needs Debian's fasttext (apt-get install fasttext) and /usr/bin/python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="${PRETRAIN_DIR:-/tmp/bioner-pretrain}"
mkdir -p "$dir"
command -v fasttext >/dev/null || { echo "train_vectors: need the fasttext binary (apt-get install fasttext)" >&2; exit 1; }
nice -n 5 /usr/bin/python3 training/build_pretrain_corpus.py --out "$dir/corpus.txt" --seed 13
start=$(date +%s)
# -thread 1 + -seed: reproducible (fastText is only deterministic with one thread).
nice -n 5 fasttext skipgram -input "$dir/corpus.txt" -output "$dir/ft96" \
  -dim 96 -epoch 10 -minCount 3 -minn 3 -maxn 6 -ws 5 -neg 5 -bucket 500000 \
  -thread 1 -seed 13 -verbose 1
echo "train_vectors: fasttext skipgram took $(( $(date +%s) - start )) s -> $dir/ft96.bin" >&2
