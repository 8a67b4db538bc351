#!/usr/bin/python3
"""Build the unlabeled pretraining corpus for the encoder's sub-word vectors.

One sentence a line, words separated by single spaces, words split with the
same BERT basic rule as training/train_encoder.py (its functions are imported,
so the vectors see exactly the words the tagger's tokenizer sees).

Sources (TRAIN material only; no devel file is ever opened):
  - /work/shared/data/pubmed-unlabeled/sentences.txt.gz
  - BC5CDR-IOB/train.tsv, NCBI-disease-IOB/train.tsv (tokens only)
  - JNLPBA-standoff/train/*.txt (sentence-split as in train_encoder.py)
  - extra-labeled/*-train.tsv.gz (tokens only)
  - the `transcription` column of mtsamples/mtsamples.csv

Exact duplicate sentences are dropped (the first occurrence, in the source
order above, is kept), then the lines are shuffled with --seed, so the output
is deterministic.

    /usr/bin/python3 training/build_pretrain_corpus.py [--out /tmp/bioner-pretrain/corpus.txt]
"""

import argparse
import collections
import csv
import glob
import gzip
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_encoder import (ABBREV, DATA_ROOT, SENT_END, basic_words,  # noqa: E402
                           read_iob, read_standoff)


def words_of(text):
    return [w for w, _, _ in basic_words(text)]


def pubmed_unlabeled():
    with gzip.open(os.path.join(DATA_ROOT, "pubmed-unlabeled", "sentences.txt.gz"), "rt",
                   encoding="utf8") as f:
        for line in f:
            ws = words_of(line)
            if ws:
                yield ws


def iob_train(folder):
    sents, _ = read_iob(os.path.join(DATA_ROOT, folder, "train.tsv"))
    for ws, _ in sents:
        yield ws


def jnlpba_train():
    docs, _ = read_standoff(os.path.join(DATA_ROOT, "JNLPBA-standoff", "train"))
    for d in docs:
        for ws, _ in d:
            yield ws


def extra_labeled():
    for path in sorted(glob.glob(os.path.join(DATA_ROOT, "extra-labeled", "*-train.tsv.gz"))):
        cur = []
        with gzip.open(path, "rt", encoding="utf8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip():
                    if cur:
                        yield cur
                        cur = []
                    continue
                cur.extend(words_of(line.split("\t")[0]))
        if cur:
            yield cur


def split_sentences(words):
    """. ? ! followed by an upper-case word, digit or bracket ends a sentence
    (unless the word before the stop is an abbreviation), as in JNLPBA."""
    cur = []
    for k, w in enumerate(words):
        if cur and words[k - 1] in SENT_END and (w[0].isupper() or w[0].isdigit() or w in "([") \
                and not (k >= 2 and words[k - 2] in ABBREV):
            yield cur
            cur = []
        cur.append(w)
    if cur:
        yield cur


def mtsamples():
    csv.field_size_limit(10 ** 8)
    with open(os.path.join(DATA_ROOT, "mtsamples", "mtsamples.csv"), encoding="utf8",
              newline="") as f:
        for row in csv.DictReader(f):
            text = row.get("transcription") or ""
            # the scrape joins sections with commas: "SUBJECTIVE:,  This ..." -> "SUBJECTIVE: This"
            text = re.sub(r"(?<=[:.]),", " ", text)
            for ws in split_sentences(words_of(text)):
                yield ws


SOURCES = [
    ("pubmed-unlabeled", pubmed_unlabeled),
    ("BC5CDR-train", lambda: iob_train("BC5CDR-IOB")),
    ("NCBI-disease-train", lambda: iob_train("NCBI-disease-IOB")),
    ("JNLPBA-train", jnlpba_train),
    ("extra-labeled-train", extra_labeled),
    ("mtsamples", mtsamples),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/bioner-pretrain/corpus.txt")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    seen = set()
    lines = []
    counts = collections.OrderedDict()
    for name, gen in SOURCES:
        n = nt = kept = kt = 0
        for ws in gen():
            n += 1
            nt += len(ws)
            line = " ".join(ws)
            if line in seen:
                continue
            seen.add(line)
            lines.append(line)
            kept += 1
            kt += len(ws)
        counts[name] = (n, nt, kept, kt)
        print(f"{name}: {n} sentences / {nt} tokens read; {kept} sentences / {kt} tokens "
              f"kept after dropping exact duplicates", flush=True)
    random.Random(args.seed).shuffle(lines)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf8") as f:
        for line in lines:
            f.write(line + "\n")
    tot_s = sum(c[2] for c in counts.values())
    tot_t = sum(c[3] for c in counts.values())
    print(f"total: {tot_s} sentences / {tot_t} tokens -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
