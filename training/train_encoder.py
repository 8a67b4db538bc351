#!/usr/bin/python3
"""Train a from-scratch biomedical NER encoder and export it as a Hugging Face
token-classification bundle (config.json, tokenizer.json, model.onnx, ...).

No pretrained weights are used: the WordPiece vocabulary is built from the
training split, and a sub-word BiLSTM tagger is trained with PyTorch (CPU).

Pipeline
--------
1. Words: BERT "basic" rule, identical to @huggingface/tokenizers'
   BertNormalizer(clean_text, handle_chinese_chars, cased) + BertPreTokenizer:
   split on whitespace, and every punctuation character (ASCII 33-47, 58-64,
   91-96, 123-126 or Unicode category P*) is its own word.  IOB corpora give
   tokens already; a given token with inner punctuation is re-split and its
   sub-tokens get B-X then I-X (or I-X/O unchanged).  JNLPBA brat standoff
   text is tokenized with the same rule, sentence-split (newlines, and
   . ? ! followed by whitespace and an upper-case letter/digit, never inside an
   entity), and character-offset entities are projected onto words.
2. Vocabulary: specials [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, every
   training character c and "##c", frequent whole words, then frequent word
   prefixes and "##" word-internal substrings scored by frequency x saved
   characters.  Words are encoded with greedy longest-match-first WordPiece,
   the exact algorithm of HF tokenizers, so training ids == inference ids.
3. Model (BiLSTMForTokenClassification): sub-word embedding -> N layers of
   padding-exact BiLSTM -> linear.  The backward direction is a forward LSTM
   run over each sequence reversed *within its true length* (reversal indices
   computed from attention_mask and applied with torch.gather), so right
   padding never changes the logits and the graph exports to ONNX cleanly.
   Labels sit on the FIRST sub-word of each word; other sub-words, [CLS],
   [SEP] and pads are ignored (-100), as in the HF convention.
4. Training: AdamW, linear LR decay, gradient clipping, dropout, word dropout
   (ids randomly replaced by [UNK]), length-bucketed batches.  The epoch is
   chosen by strict entity F1 on a held-out 10% slice of TRAIN (the last 10%
   of sentences / documents); the devel split is only used for the final
   report.
5. Evaluation: strict entity F1 over word-level BIO spans (exact start, end and
   type; conlleval convention: I-X after O or another type starts an entity).
6. Export: model.onnx (opset 14; inputs input_ids/attention_mask int64
   [batch, seq], output logits float32 [batch, seq, num_labels]) plus the HF
   tokenizer/config files and a model card, and a verification fixture
   (texts, Python ids, torch logits of a right-padded batch) for
   training/verify_bundle.mjs.

Example
-------
    nice -n 5 /usr/bin/python3 training/train_encoder.py --dataset bc5cdr \
        --epochs 20 --seed 13 --out models/bc5cdr-encoder

Requires Debian packages python3-torch python3-onnx python3-numpy
libopenblas0-pthread (use /usr/bin/python3).
"""

import argparse
import collections
import glob
import gzip
import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
import unicodedata

import numpy as np
import torch
import torch.nn as nn

DATA_ROOT = "/work/shared/data"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
MAX_LEN = 512
IGNORE = -100

DATASETS = {
    "bc5cdr": {
        "format": "iob",
        "dir": "BC5CDR-IOB",
        "types": ["Chemical", "Disease"],
        "licence": "LICENSE-MTL-Bioinformatics-2016.md",
        "desc": "BC5CDR (BioCreative V chemical-disease relation corpus), "
                "IOB version from the MTL-Bioinformatics-2016 collection",
    },
    "ncbi-disease": {
        "format": "iob",
        "dir": "NCBI-disease-IOB",
        "types": ["Disease"],
        "licence": "LICENSE-MTL-Bioinformatics-2016.md",
        "desc": "NCBI disease corpus, IOB version from the "
                "MTL-Bioinformatics-2016 collection",
    },
    "jnlpba": {
        "format": "standoff",
        "dir": "JNLPBA-standoff",
        "types": ["protein", "DNA", "RNA", "cell_type", "cell_line"],
        "licence": "JNLPBA-standoff/LICENSE",
        "desc": "JNLPBA 2004 (GENIA-derived) shared task corpus, brat "
                "standoff version",
    },
}


def dataset_labels(name):
    """The BIO label list of a dataset: O, then B-/I- per type, in DATASETS order."""
    return ["O"] + [f"{p}-{t}" for t in DATASETS[name]["types"] for p in ("B", "I")]

# --------------------------------------------------------------------------
# BERT basic word rule (mirrors @huggingface/tokenizers BertNormalizer +
# BertPreTokenizer with clean_text, handle_chinese_chars, no lowercase, no
# accent stripping).
# --------------------------------------------------------------------------

# JavaScript's \s set (what tokenizers.js uses), not Python's str.isspace().
_JS_WS = set("\t\n\x0b\x0c\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff")
_JS_WS.update(chr(c) for c in range(0x2000, 0x200B))


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_removed(ch):
    """Characters BertNormalizer(clean_text) deletes."""
    if ch in "\t\n\r":
        return False
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD:
        return True
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def is_chinese(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_words(text):
    """Split text into (word, start, end) with BERT's basic rule.

    Offsets index the original string; characters removed by clean_text are
    skipped without breaking a word (as the normalizer deletes them)."""
    out = []
    cur = []
    start = end = None
    for i, ch in enumerate(text):
        if is_removed(ch):
            continue
        if ch in _JS_WS:
            if cur:
                out.append(("".join(cur), start, end))
                cur = []
            continue
        if is_punct(ch) or is_chinese(ch):
            if cur:
                out.append(("".join(cur), start, end))
                cur = []
            out.append((ch, i, i + 1))
            continue
        if not cur:
            start = i
        cur.append(ch)
        end = i + 1
    if cur:
        out.append(("".join(cur), start, end))
    return out


# --------------------------------------------------------------------------
# Data loading
# --------------------------------------------------------------------------


def read_iob(path):
    """Return list of sentences [(words, tags)], re-splitting given tokens
    (a path ending in .gz is read through gzip)."""
    sents = []
    words, tags = [], []
    n_resplit = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if words:
                    sents.append((words, tags))
                    words, tags = [], []
                continue
            tok, tag = line.split("\t")
            pieces = [w for w, _, _ in basic_words(tok)]
            if not pieces:
                continue
            if len(pieces) > 1:
                n_resplit += 1
            for k, p in enumerate(pieces):
                if k > 0 and tag.startswith("B-"):
                    words.append(p)
                    tags.append("I-" + tag[2:])
                else:
                    words.append(p)
                    tags.append(tag)
    if words:
        sents.append((words, tags))
    return sents, {"resplit_tokens": n_resplit}


SENT_END = {".", "?", "!"}
ABBREV = {"al", "e", "g", "i", "vs", "Fig", "Figs", "ca", "approx", "Dr",
          "no", "No", "resp", "cf", "St"}


def read_standoff_doc(txt_path, ann_path):
    text = open(txt_path, encoding="utf8").read()
    ents = []
    for line in open(ann_path, encoding="utf8"):
        if not line.startswith("T"):
            continue
        _, mid, _ = line.rstrip("\n").split("\t")
        lab, a, b = mid.split(" ")
        ents.append((int(a), int(b), lab))
    ents.sort()
    words = basic_words(text)
    ent_of = [-1] * len(words)
    stats = collections.Counter()
    for ei, (a, b, lab) in enumerate(ents):
        hit = [k for k, (_, s, e) in enumerate(words) if s < b and e > a]
        if not hit:
            stats["entities_without_words"] += 1
            continue
        if words[hit[0]][1] != a or words[hit[-1]][2] != b:
            stats["entities_misaligned_with_words"] += 1
        for k in hit:
            if ent_of[k] == -1:
                ent_of[k] = ei
            else:
                stats["words_in_two_entities"] += 1
    tags = []
    for k in range(len(words)):
        ei = ent_of[k]
        if ei == -1:
            tags.append("O")
        else:
            first = k == 0 or ent_of[k - 1] != ei
            tags.append(("B-" if first else "I-") + ents[ei][2])
    # sentence split
    sents = []
    cur_w, cur_t = [], []
    for k, (w, s, e) in enumerate(words):
        if cur_w:
            prev_w, _, prev_e = words[k - 1]
            gap = text[prev_e:s]
            split = False
            if "\n" in gap:
                split = True
            elif (prev_w in SENT_END and gap and (w[0].isupper() or w[0].isdigit() or w in "([")
                  and not (k >= 2 and words[k - 2][0] in ABBREV)):
                split = True
            if split and ent_of[k] != -1 and ent_of[k] == ent_of[k - 1]:
                split = False
            if split:
                sents.append((cur_w, cur_t))
                cur_w, cur_t = [], []
        cur_w.append(w)
        cur_t.append(tags[k])
    if cur_w:
        sents.append((cur_w, cur_t))
    return sents, stats


def read_standoff(dirpath):
    docs = []
    stats = collections.Counter()
    for ann in sorted(glob.glob(os.path.join(dirpath, "*.ann"))):
        sents, st = read_standoff_doc(ann[:-4] + ".txt", ann)
        stats.update(st)
        docs.append(sents)
    return docs, dict(stats)


def load_dataset(name, holdout=True):
    cfg = DATASETS[name]
    root = os.path.join(DATA_ROOT, cfg["dir"])
    info = {}
    if cfg["format"] == "iob":
        train, info["train"] = read_iob(os.path.join(root, "train.tsv"))
        devel, info["devel"] = read_iob(os.path.join(root, "devel.tsv"))
        # held-out: last 10% of train sentences (contiguous, ~document split)
        cut = int(round(len(train) * 0.9))
        fit, held = train[:cut], train[cut:]
        if not holdout:
            fit, held = train, []
    else:
        tdocs, info["train"] = read_standoff(os.path.join(root, "train"))
        ddocs, info["devel"] = read_standoff(os.path.join(root, "devel"))
        cut = int(round(len(tdocs) * 0.9))
        fit = [s for d in tdocs[:cut] for s in d]
        held = [s for d in tdocs[cut:] for s in d]
        if not holdout:
            fit, held = fit + held, []
        devel = [s for d in ddocs for s in d]
    return fit, held, devel, info


# --------------------------------------------------------------------------
# WordPiece vocabulary + encoder (identical to HF greedy longest-match-first)
# --------------------------------------------------------------------------


def build_vocab(sents, max_words, min_word_freq, n_pieces, max_piece_len=10,
                extra_words=()):
    """extra_words: further whole words (e.g. frequent words of the vectors'
    pretraining corpus), added after the training words."""
    wc = collections.Counter(w for ws, _ in sents for w in ws)
    vocab = list(SPECIALS)
    seen = set(vocab)

    def add(tok):
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)

    chars = collections.Counter()
    for w, c in wc.items():
        for ch in w:
            chars[ch] += c
    for ch, _ in sorted(chars.items(), key=lambda x: (-x[1], x[0])):
        add(ch)
        add("##" + ch)
    words = [w for w, c in sorted(wc.items(), key=lambda x: (-x[1], x[0]))
             if c >= min_word_freq and len(w) > 1][:max_words]
    for w in extra_words:
        if w not in seen and len(w) > 1:
            words.append(w)
    for w in words:
        add(w)
    in_vocab = set(words)
    # candidate sub-word pieces from words that are not whole-word entries
    cand = collections.Counter()
    for w, c in wc.items():
        if w in in_vocab or len(w) < 3:
            continue
        L = len(w)
        for k in range(2, min(L, max_piece_len + 1)):
            cand[w[:k]] += c * (k - 1)
        for i in range(1, L):
            for j in range(i + 2, min(L, i + max_piece_len) + 1):
                cand["##" + w[i:j]] += c * (j - i - 1)
    n = 0
    for tok, _ in sorted(cand.items(), key=lambda x: (-x[1], x[0])):
        if n >= n_pieces:
            break
        if tok not in seen:
            add(tok)
            n += 1
    return vocab


class WordPiece:
    def __init__(self, vocab, max_chars=100):
        self.vocab = vocab
        self.ids = {t: i for i, t in enumerate(vocab)}
        self.max_chars = max_chars
        self.cache = {}

    def encode_word(self, word):
        r = self.cache.get(word)
        if r is not None:
            return r
        chars = list(word)
        if len(chars) > self.max_chars:
            r = [UNK_ID]
        else:
            r = []
            start = 0
            while start < len(chars):
                end = len(chars)
                cur = None
                while start < end:
                    sub = "".join(chars[start:end])
                    if start > 0:
                        sub = "##" + sub
                    if sub in self.ids:
                        cur = self.ids[sub]
                        break
                    end -= 1
                if cur is None:
                    r = [UNK_ID]
                    break
                r.append(cur)
                start = end
        self.cache[word] = r
        return r

    def encode_text(self, text):
        """[CLS] pieces [SEP] for raw text (what the TypeScript side builds)."""
        ids = [CLS_ID]
        for w, _, _ in basic_words(text):
            ids.extend(self.encode_word(w))
        ids.append(SEP_ID)
        return ids


def encode_sents(sents, wp, label2id):
    """-> list of (ids, labels, first_piece_positions, n_words)."""
    out = []
    for words, tags in sents:
        ids = [CLS_ID]
        labs = [IGNORE]
        firsts = []
        for w, t in zip(words, tags):
            p = wp.encode_word(w)
            if len(ids) + len(p) > MAX_LEN - 1:
                break
            firsts.append(len(ids))
            ids.extend(p)
            labs.append(label2id[t])
            labs.extend([IGNORE] * (len(p) - 1))
        ids.append(SEP_ID)
        labs.append(IGNORE)
        out.append((ids, labs, firsts, len(words)))
    return out


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def reverse_index(attention_mask):
    """rev[b, t] = len_b - 1 - t for t < len_b else t (right padding)."""
    T = attention_mask.size(1)
    lengths = attention_mask.sum(dim=1, keepdim=True)  # [B,1]
    t = torch.arange(T, device=attention_mask.device).unsqueeze(0)  # [1,T]
    return torch.where(t < lengths, lengths - 1 - t, t)


class ExactBiLSTMLayer(nn.Module):
    def __init__(self, d_in, hidden):
        super().__init__()
        self.fwd = nn.LSTM(d_in, hidden, batch_first=True)
        self.bwd = nn.LSTM(d_in, hidden, batch_first=True)

    def forward(self, x, rev):
        f, _ = self.fwd(x)
        idx = rev.unsqueeze(-1).expand(-1, -1, x.size(2))
        b, _ = self.bwd(torch.gather(x, 1, idx))
        idx = rev.unsqueeze(-1).expand(-1, -1, b.size(2))
        b = torch.gather(b, 1, idx)
        return torch.cat([f, b], dim=-1)


class CharPieceEncoder(nn.Module):
    """Character CNN over the spelling of each vocabulary entry.

    Its output depends only on the sub-word id, so after training it is folded
    into the embedding table (emb[id] += charcnn(id)) and the exported model is
    a plain embedding lookup: it costs nothing at inference."""

    def __init__(self, vocab, emb_dim, char_dim=32, filters=96, kernels=(2, 3, 4)):
        super().__init__()
        chars = sorted({c for t in vocab for c in t})
        cid = {c: i + 4 for i, c in enumerate(chars)}  # 0 pad, 1 bow, 2 ##bow, 3 eow
        L = max(len(t) for t in vocab) + 2
        tab = torch.zeros(len(vocab), L, dtype=torch.long)
        for i, t in enumerate(vocab):
            if i < len(SPECIALS):
                seq = [1] + [cid[c] for c in t] + [3]
            elif t.startswith("##") and len(t) > 2:
                seq = [2] + [cid[c] for c in t[2:]] + [3]
            else:
                seq = [1] + [cid[c] for c in t] + [3]
            tab[i, :len(seq)] = torch.tensor(seq)
        self.register_buffer("table", tab, persistent=False)
        self.cemb = nn.Embedding(len(chars) + 4, char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, filters, k, padding=k - 1)
                                   for k in kernels)
        self.proj = nn.Linear(filters * len(kernels), emb_dim)

    def forward(self, ids):
        c = self.table[ids]  # [N, L]
        e = self.cemb(c).transpose(1, 2)  # [N, C, L]
        pad = (c == 0).unsqueeze(1)
        hs = []
        for conv in self.convs:
            h = torch.relu(conv(e))[:, :, :c.size(1)]  # window ending at each position
            hs.append(h.masked_fill(pad, -1e4).max(dim=2).values)
        return self.proj(torch.cat(hs, dim=1))


class WordCRF(nn.Module):
    """Linear-chain CRF over each word's first-piece emissions (--crf): learned
    tag-to-tag, start and end scores; training-side experiment (the bundle's
    ONNX graph still returns the emissions)."""

    def __init__(self, num_labels):
        super().__init__()
        self.trans = nn.Parameter(torch.zeros(num_labels, num_labels))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_labels))
        self.end = nn.Parameter(torch.zeros(num_labels))

    def nll(self, em, tags, wmask):
        """Summed negative log-likelihood; em [B,W,L], tags [B,W], wmask [B,W] (each row >= 1 word)."""
        m = wmask.to(em.dtype)
        gold = em.gather(2, tags.unsqueeze(2)).squeeze(2)
        score = self.start[tags[:, 0]] + (gold * m).sum(1)
        score = score + (self.trans[tags[:, :-1], tags[:, 1:]] * m[:, 1:]).sum(1)
        last = tags.gather(1, (wmask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        score = score + self.end[last]
        alpha = self.start + em[:, 0]
        for t in range(1, em.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.trans.unsqueeze(0), dim=1) + em[:, t]
            alpha = torch.where(wmask[:, t:t + 1], nxt, alpha)
        return (torch.logsumexp(alpha + self.end, dim=1) - score).sum()

    @torch.no_grad()
    def viterbi(self, em):
        """em [W,L] tensor -> best tag ids."""
        trans, score, back = self.trans, self.start + em[0], []
        for t in range(1, em.size(0)):
            cand = score.unsqueeze(1) + trans
            score, bp = cand.max(0)
            score = score + em[t]
            back.append(bp)
        best = [int((score + self.end).argmax())]
        for bp in reversed(back):
            best.append(int(bp[best[-1]]))
        return best[::-1]


def word_emissions(logits, labs):
    """The first-piece positions (labels != IGNORE) of each row: emissions [B,W,L], tags, mask."""
    keep = labs != IGNORE
    W = max(1, int(keep.sum(1).max()))
    B = labs.size(0)
    idx = torch.zeros(B, W, dtype=torch.long)
    wmask = torch.zeros(B, W, dtype=torch.bool)
    for r in range(B):
        pos = keep[r].nonzero().squeeze(1)
        idx[r, :len(pos)] = pos
        wmask[r, :len(pos)] = True
    em = logits.gather(1, idx.unsqueeze(2).expand(-1, -1, logits.size(2)))
    tags = labs.gather(1, idx).masked_fill(~wmask, 0)
    return em, tags, wmask


class BiLSTMForTokenClassification(nn.Module):
    def __init__(self, vocab_size, num_labels, emb_dim=128, hidden=128,
                 layers=2, dropout=0.4, emb_dropout=0.25, vocab=None,
                 char_filters=0, id_dropout=0.0, vectors=None, vectors_mode="feature",
                 aux_num_labels=()):
        super().__init__()
        self.id_dropout = id_dropout
        self.emb = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        # Pretrained vectors (one row per vocab entry, see load_piece_vectors).
        # "feature": a frozen table + a trainable projection added to the id
        #   embedding (which starts at zero, so entries never seen in training
        #   keep a pure vector + spelling representation); folded into the
        #   embedding table at export like the char CNN.
        # "init": the id embedding table starts as the vectors and is trained.
        self.vproj = None
        if vectors is not None:
            vectors = torch.as_tensor(vectors, dtype=torch.float32)
            if vectors_mode == "init":
                assert vectors.size(1) == emb_dim, "--vectors-mode init needs vector dim == --emb-dim"
                with torch.no_grad():
                    self.emb.weight.copy_(vectors)
                    self.emb.weight[PAD_ID].zero_()
            else:
                self.register_buffer("vec", vectors, persistent=False)
                self.vproj = nn.Linear(vectors.size(1), emb_dim, bias=False)
                with torch.no_grad():
                    self.emb.weight.zero_()
        self.char = CharPieceEncoder(vocab, emb_dim, filters=char_filters) if char_filters else None
        self.emb_drop = nn.Dropout(emb_dropout)
        self.layers = nn.ModuleList()
        d = emb_dim
        for _ in range(layers):
            self.layers.append(ExactBiLSTMLayer(d, hidden))
            d = 2 * hidden
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, num_labels)
        # --aux-dataset: one BIO head per auxiliary training set over the shared
        # layers; training only (dropped before export, the bundle has one head).
        self.aux_heads = nn.ModuleList(nn.Linear(d, n) for n in aux_num_labels)
        self.crf = None  # set by --crf

    def forward(self, input_ids, attention_mask, head=0):
        rev = reverse_index(attention_mask)
        x = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.drop(x)
            x = layer(x, rev)
        return (self.out if head == 0 else self.aux_heads[head - 1])(self.drop(x))

    def embed(self, input_ids):
        """Sub-word embeddings (id vector + spelling + projected vectors), after embedding dropout."""
        x = self.emb(input_ids)
        if self.char is not None or self.vproj is not None:
            if self.training and self.id_dropout > 0:
                # drop the per-id vector of some tokens, keep their spelling
                keep = (torch.rand(x.shape[:2] + (1,)) >= self.id_dropout).to(x.dtype)
                x = x * keep / (1.0 - self.id_dropout)
        if self.char is not None or self.vproj is not None:
            uniq, inv = torch.unique(input_ids, return_inverse=True)
            extra = 0
            if self.char is not None:
                extra = self.char(uniq)
            if self.vproj is not None:
                extra = extra + self.vproj(self.vec[uniq])
            x = x + extra[inv]
        return self.emb_drop(x)

    @torch.no_grad()
    def fold_char_features(self):
        """emb[id] += charcnn(id) + vproj(vec[id]) for every id; then drop the
        char CNN and the vector projection (a plain lookup remains)."""
        if self.char is None and self.vproj is None:
            return
        self.eval()
        ids = torch.arange(self.emb.num_embeddings)
        if self.char is not None:
            for s in range(0, len(ids), 4096):
                self.emb.weight[s:s + 4096] += self.char(ids[s:s + 4096])
        if self.vproj is not None:
            self.emb.weight += self.vproj(self.vec)
        self.char = None
        self.vproj = None


# --------------------------------------------------------------------------
# Pretrained fastText vectors
# --------------------------------------------------------------------------


def _fasttext_bin():
    import shutil
    exe = shutil.which("fasttext")
    if not exe:
        sys.exit("--vectors FILE.bin needs the fasttext binary (apt-get install fasttext)")
    return exe


def vector_corpus_words(path, n, min_count, max_len=25):
    """The n most frequent words of the vectors' training corpus (from the
    fastText dictionary of a .bin, or the order of a .vec file)."""
    import subprocess
    if n <= 0:
        return []
    words = []
    if path.endswith(".bin"):
        out = subprocess.run([_fasttext_bin(), "dump", path, "dict"], check=True,
                             capture_output=True).stdout.decode("utf8", "replace")
        for line in out.split("\n")[1:]:  # first line: entry count
            parts = line.split(" ")
            if len(parts) != 3 or parts[2] != "word":
                continue
            if int(parts[1]) >= min_count:
                words.append(parts[0])
    else:
        with open(path, encoding="utf8") as f:
            next(f)
            for line in f:
                words.append(line.split(" ", 1)[0])
    words = [w for w in words if 1 < len(w) <= max_len and w != "</s>"
             and [x for x, _, _ in basic_words(w)] == [w]]
    return words[:n]


def load_piece_vectors(path, vocab):
    """One vector per vocab entry: a whole word takes the word's vector, a
    "##x" continuation piece takes the vector of "x" (for a .bin, fastText's
    sub-word composition handles strings it never saw as words), specials get
    zeros.  Scaled so that the entries have unit standard deviation."""
    import subprocess
    import tempfile
    strings = [t[2:] if t.startswith("##") and len(t) > 2 else t for t in vocab]
    vec = {}
    if path.endswith(".bin"):
        with tempfile.NamedTemporaryFile("w", encoding="utf8", suffix=".txt", delete=False) as f:
            for t in strings:
                f.write(t + "\n")
            tmp = f.name
        try:
            with open(tmp, "rb") as fin:
                out = subprocess.run([_fasttext_bin(), "print-word-vectors", path], stdin=fin,
                                     check=True, capture_output=True).stdout
        finally:
            os.unlink(tmp)
        rows = out.decode("utf8", "replace").rstrip("\n").split("\n")
        assert len(rows) == len(strings), (len(rows), len(strings))
        dim = len(rows[0].rstrip(" ").split(" ")) - 1
        mat = np.zeros((len(vocab), dim), dtype=np.float32)
        for i, r in enumerate(rows):
            mat[i] = np.array(r.rstrip(" ").split(" ")[-dim:], dtype=np.float32)
        hit = len(vocab)
    else:
        with open(path, encoding="utf8") as f:
            n, dim = map(int, next(f).split())
            for line in f:
                parts = line.rstrip(" \n").split(" ")
                vec[parts[0]] = np.array(parts[1:], dtype=np.float32)
        mat = np.zeros((len(vocab), dim), dtype=np.float32)
        hit = 0
        for i, t in enumerate(strings):
            if t in vec:
                mat[i] = vec[t]
                hit += 1
    mat[:len(SPECIALS)] = 0.0
    body = mat[len(SPECIALS):]
    mat /= max(float(body.std()), 1e-8)
    return mat, {"dim": dim, "entries_with_vectors": hit}


def flops_per_token(emb_dim, hidden, layers, num_labels):
    """Multiply-adds x2 of the LSTM gate matmuls + output layer, per sub-word
    (embedding lookup, gathers and element-wise gate math not counted)."""
    macs = 0
    d = emb_dim
    for _ in range(layers):
        macs += 2 * 4 * hidden * (d + hidden)
        d = 2 * hidden
    macs += d * num_labels
    return 2 * macs


# --------------------------------------------------------------------------
# Evaluation (strict entity F1, conlleval chunking)
# --------------------------------------------------------------------------


def spans(tags):
    res = []
    start = typ = None
    for i, t in enumerate(list(tags) + ["O"]):
        if t.startswith("B-") or t == "O" or (t.startswith("I-") and t[2:] != typ):
            if typ is not None:
                res.append((start, i - 1, typ))
                typ = None
            if t != "O":
                start, typ = i, t[2:]
    return res


def evaluate(gold_seqs, pred_seqs):
    tp = n_pred = n_gold = 0
    per_type = collections.defaultdict(lambda: [0, 0, 0])
    by_len = collections.defaultdict(lambda: [0, 0])  # len bucket -> [hit, total]
    for g, p in zip(gold_seqs, pred_seqs):
        gs, ps = set(spans(g)), set(spans(p))
        tp += len(gs & ps)
        n_pred += len(ps)
        n_gold += len(gs)
        for s in gs:
            per_type[s[2]][1] += 1
            k = min(s[1] - s[0] + 1, 3)
            by_len[k][1] += 1
            if s in ps:
                per_type[s[2]][0] += 1
                by_len[k][0] += 1
        for s in ps:
            per_type[s[2]][2] += 1
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    types = {}
    for t, (h, ng, npred) in sorted(per_type.items()):
        pp = h / npred if npred else 0.0
        rr = h / ng if ng else 0.0
        types[t] = {"precision": round(pp, 4), "recall": round(rr, 4),
                    "f1": round(2 * pp * rr / (pp + rr), 4) if pp + rr else 0.0,
                    "gold": ng}
    lens = {("3+" if k == 3 else str(k)): {"recall": round(h / n, 4), "gold": n}
            for k, (h, n) in sorted(by_len.items())}
    return {"f1": round(f1, 4), "precision": round(prec, 4),
            "recall": round(rec, 4), "gold": n_gold, "pred": n_pred,
            "per_type": types, "recall_by_entity_words": lens}


def pad_batch(items):
    T = max(len(x[0]) for x in items)
    ids = torch.zeros(len(items), T, dtype=torch.long)
    mask = torch.zeros(len(items), T, dtype=torch.long)
    labs = torch.full((len(items), T), IGNORE, dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it[0])
        ids[i, :n] = torch.tensor(it[0])
        mask[i, :n] = 1
        labs[i, :n] = torch.tensor(it[1])
    return ids, mask, labs


@torch.no_grad()
def predict(model, enc, id2label, batch_tokens=6000):
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
    preds = [None] * len(enc)
    i = 0
    while i < len(order):
        L = len(enc[order[i]][0])
        bs = max(1, batch_tokens // max(L, 1))
        j = min(len(order), i + bs)
        # lengths ascend, so the last is the longest; shrink if needed
        while j - i > 1 and len(enc[order[j - 1]][0]) * (j - i) > batch_tokens:
            j -= 1
        chunk = [enc[k] for k in order[i:j]]
        ids, mask, _ = pad_batch(chunk)
        logits = model(ids, mask)
        am = logits.argmax(-1)
        for r, k in enumerate(order[i:j]):
            _, _, firsts, n_words = enc[k]
            if model.crf is not None and firsts:
                tags = [id2label[t] for t in model.crf.viterbi(logits[r, firsts])]
            else:
                tags = [id2label[int(am[r, p])] for p in firsts]
            tags += ["O"] * (n_words - len(tags))
            preds[k] = tags
        i = j
    return preds


def batches(enc, batch_size, rng):
    """Length-bucketed, shuffled batches."""
    idx = list(range(len(enc)))
    rng.shuffle(idx)
    pool = 50 * batch_size
    out = []
    for s in range(0, len(idx), pool):
        chunk = sorted(idx[s:s + pool], key=lambda i: len(enc[i][0]))
        out.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------
# Bidirectional LM pretraining of the first BiLSTM layer (--lm-tokens)
# --------------------------------------------------------------------------


def lm_corpus(path, wp, max_tokens, seed):
    """Piece-id rows ([CLS] pieces [SEP]) from the unlabeled corpus (one sentence per line,
    training/build_pretrain_corpus.py: train splits and unlabeled text only, never devel),
    in a seeded random order, until max_tokens pieces."""
    with open(path, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    random.Random(seed).shuffle(lines)
    rows, n = [], 0
    for line in lines:
        ids = [CLS_ID]
        for w in line.split():
            ids.extend(wp.encode_word(w))
        ids = ids[:MAX_LEN - 1] + [SEP_ID]
        if len(ids) < 4:
            continue
        rows.append(ids)
        n += len(ids)
        if n >= max_tokens:
            break
    return rows, n


def lm_pretrain(model, wp, vocab_size, args):
    """Trains the embeddings (ids, spelling, vector projection) and the first BiLSTM layer
    as two language models, ELMo-style: its forward LSTM predicts the next piece, its
    backward LSTM the previous one (the second layer mixes both directions, so it could
    see its target and is left to the tagging epochs). One adaptive softmax serves both
    directions and is dropped afterwards. Returns a summary for the model card."""
    t0 = time.time()
    rows, n_tok = lm_corpus(args.lm_corpus, wp, args.lm_tokens, args.seed)
    freq = np.bincount(np.fromiter((i for r in rows for i in r), dtype=np.int64), minlength=vocab_size)
    rank = np.empty(vocab_size, dtype=np.int64)
    rank[np.argsort(-freq, kind="stable")] = np.arange(vocab_size)  # adaptive softmax wants ids by frequency
    rank = torch.as_tensor(rank)
    hidden = model.layers[0].fwd.hidden_size
    cutoffs = [c for c in (1000, 4000) if c < vocab_size - 1] or [vocab_size // 2]  # small vocabularies: smoke runs
    head = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab_size, cutoffs=cutoffs, div_value=4.0)
    drop = nn.Dropout(args.lm_dropout)
    lm_params = (list(model.emb.parameters()) + list(model.layers[0].parameters()) + list(head.parameters())
                 + (list(model.char.parameters()) if model.char is not None else [])
                 + (list(model.vproj.parameters()) if model.vproj is not None else []))
    opt = torch.optim.AdamW(lm_params, lr=args.lm_lr, weight_decay=args.weight_decay)
    rng = random.Random(args.seed + 1)
    enc = [(r,) for r in rows]
    order = batches(enc, args.lm_batch_size, rng)
    total = len(order)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.9 * min(s, total) / total)
    model.train()
    tot, cnt, seen, last = 0.0, 0, 0, float("nan")
    for step, b in enumerate(order, start=1):
        ids, mask, _ = pad_batch([(rows[i], [IGNORE] * len(rows[i])) for i in b])
        rev = reverse_index(mask)
        x = model.embed(ids)
        layer = model.layers[0]
        f, _ = layer.fwd(x)
        idx = rev.unsqueeze(-1).expand(-1, -1, x.size(2))
        bw, _ = layer.bwd(torch.gather(x, 1, idx))
        bw = torch.gather(bw, 1, rev.unsqueeze(-1).expand(-1, -1, bw.size(2)))
        m = mask.bool()
        nxt = m[:, 1:] & m[:, :-1]  # forward: position t predicts t+1
        hf = f[:, :-1][nxt]
        yf = ids[:, 1:][nxt]
        hb = bw[:, 1:][nxt]  # backward: position t+1 (it read t+1..end) predicts t
        yb = ids[:, :-1][nxt]
        h = drop(torch.cat([hf, hb], 0))
        y = rank[torch.cat([yf, yb], 0)]
        loss = head(h, y).loss
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(lm_params, args.clip)
        opt.step()
        sched.step()
        tot += float(loss) * len(y)
        cnt += len(y)
        seen += int(m.sum())
        if step % 200 == 0 or step == total:
            el = time.time() - t0
            print(f"lm step {step}/{total}: loss {tot / cnt:.4f} (ppl {math.exp(tot / cnt):.1f}) "
                  f"{seen} pieces, {seen / el:.0f} pieces/s, {el:.0f}s", flush=True)
            last = tot / cnt
            tot, cnt = 0.0, 0
    return {"corpus": os.path.abspath(args.lm_corpus), "pieces": n_tok, "rows": len(rows),
            "steps": total, "batch_size": args.lm_batch_size, "lr": args.lm_lr,
            "seconds": round(time.time() - t0, 1), "last_loss": round(last, 4)}


# --------------------------------------------------------------------------
# Bundle writing
# --------------------------------------------------------------------------


def tokenizer_json(vocab, specials=None, first=("[CLS]", CLS_ID), sep=("[SEP]", SEP_ID)):
    """HF tokenizer.json: BERT-cased normalizer and pre-tokenizer, WordPiece,
    template `first $A sep`; specials (default SPECIALS) are ids 0.. as
    added tokens. train_generative.py calls it with [BOS] and its tags."""
    (f_tok, f_id), (s_tok, s_id) = first, sep
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(SPECIALS if specials is None else specials)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": False,
                       "lowercase": False},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": f_tok, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": s_tok, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": f_tok, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": s_tok, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": s_tok, "type_id": 1}}],
            "special_tokens": {
                f_tok: {"id": f_tok, "ids": [f_id], "tokens": [f_tok]},
                s_tok: {"id": s_tok, "ids": [s_id], "tokens": [s_tok]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {t: i for i, t in enumerate(vocab)}},
    }


TOKENIZER_CONFIG = {
    "model_max_length": MAX_LEN, "do_lower_case": False,
    "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
    "unk_token": "[UNK]", "mask_token": "[MASK]",
    "tokenizer_class": "BertTokenizer",
}
SPECIAL_TOKENS_MAP = {"unk_token": "[UNK]", "sep_token": "[SEP]",
                      "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"}

FIXTURE_TEXTS = [
    "Selegiline-induced hypotension",
    "Naloxone reverses the antihypertensive effect of clonidine.",
    "Patient with type 2 diabetes mellitus and chronic kidney disease was started on metformin 500 mg BID.",
    "IL-2 gene expression requires NF-kappa B in human T cells.",
    "Café-au-lait spots; hx of neurofibromatosis (NF1) — seen 3/4/2021 ±2 wks.",
    "cisplatin",
]


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def export_bundle(args, model, vocab, wp, labels, meta, fixture_path):
    os.makedirs(args.out, exist_ok=True)
    model.eval()
    id2label = {str(i): l for i, l in enumerate(labels)}
    config = {
        "architectures": ["BiLSTMForTokenClassification"],
        "model_type": "bioner-bilstm",
        "id2label": id2label,
        "label2id": {l: i for i, l in enumerate(labels)},
        "num_labels": len(labels),
        "vocab_size": len(vocab),
        "max_position_embeddings": MAX_LEN,
        "embedding_size": args.emb_dim,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "pad_token_id": PAD_ID,
        "bioner": meta,
    }
    write_json(os.path.join(args.out, "config.json"), config)
    write_json(os.path.join(args.out, "tokenizer.json"), tokenizer_json(vocab), indent=None)
    write_json(os.path.join(args.out, "tokenizer_config.json"), TOKENIZER_CONFIG)
    write_json(os.path.join(args.out, "special_tokens_map.json"), SPECIAL_TOKENS_MAP)
    with open(os.path.join(args.out, "vocab.txt"), "w", encoding="utf8") as f:
        f.write("\n".join(vocab) + "\n")

    # ONNX
    seqs = [wp.encode_text(t) for t in FIXTURE_TEXTS]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    onnx_path = os.path.join(args.out, "model.onnx")
    torch.onnx.export(
        model, (ids, mask), onnx_path,
        input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                      "attention_mask": {0: "batch", 1: "sequence"},
                      "logits": {0: "batch", 1: "sequence"}},
        opset_version=14, do_constant_folding=True)
    import onnx
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)

    with torch.no_grad():
        logits = model(ids, mask)
        # padding invariance check: each sequence alone vs. in the batch
        worst = 0.0
        for i, s in enumerate(seqs):
            one = model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
            worst = max(worst, float((one[0] - logits[i, :len(s)]).abs().max()))
    print(f"padding invariance: max |single - batched| = {worst:.2e}", flush=True)
    assert worst < 1e-4, worst
    fixture = {
        "bundle": os.path.abspath(args.out),
        "texts": FIXTURE_TEXTS,
        "words": [[w for w, _, _ in basic_words(t)] for t in FIXTURE_TEXTS],
        "ids": seqs,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "logits": logits.tolist(),
    }
    write_json(fixture_path, fixture, indent=None)
    write_model_card(args, meta, labels)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"bundle {args.out}: {total / 1e6:.2f} MB", flush=True)


def write_model_card(args, meta, labels):
    cfg = DATASETS[args.dataset]
    d = meta.get("devel", {})
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        (f"From-scratch **reference** biomedical NER encoder for `{args.dataset}` "
         "(a sub-word BiLSTM token classifier exported to ONNX in Hugging Face "
         "token-classification layout). It was trained only on the corpus below, "
         "with no pretrained weights. "
         if not args.vectors else
         f"**Reference** biomedical NER encoder for `{args.dataset}` (a sub-word "
         "BiLSTM token classifier exported to ONNX in Hugging Face "
         "token-classification layout). Its sub-word embeddings use fastText "
         "skipgram vectors trained on this build machine from unlabeled in-domain "
         "text and train splits only (training/build_pretrain_corpus.py, "
         "training/train_vectors.sh; no devel text); everything else was trained "
         "on the corpus below. ")
        + "**It is a reference/test model, not a "
        "clinical-grade tagger**: it was trained on PubMed abstracts, not "
        "clinical notes, and has not been validated for any clinical use.",
        "",
        "## Data",
        "",
        f"- {cfg['desc']}: `/work/shared/data/{cfg['dir']}` (train split; "
        + ("all of train, for an epoch count picked earlier on a held-out 10% "
           "slice of train" if meta.get("no_holdout") else
           "the last 10% of train was held out for epoch selection")
        + "; devel used only for the reported score).",
        f"- Licence: see `/work/shared/data/{cfg['licence']}`"
        + (" and `/work/shared/data/LICENSE-MTL-Bioinformatics-2016.md`" if args.dataset == "jnlpba" else "")
        + ". The corpus text itself is not included in this bundle; the "
        "vocabulary is derived from it.",
        f"- Labels: {', '.join(labels)}",
    ]
    for a in meta.get("aux") or []:
        ac = DATASETS[a["dataset"]]
        lines.append(
            f"- Trained alongside (multi-task, `--aux-dataset`): {ac['desc']}, its whole train split "
            f"({a['sentences']} sentences, " + ("all of them" if a["mix"] >= 1 else f"a {a['mix']:g} sample")
            + f" each epoch; licence "
            f"`/work/shared/data/{ac['licence']}`), with its own output head over the shared layers. "
            "That head is not exported: the bundle predicts the labels above only.")
    if cfg["format"] == "standoff":
        lines.append(
            "- The abstracts were word-tokenized with the BERT basic rule, split into "
            "sentences (newlines; . ? ! before an upper-case word, digit or bracket, "
            "never inside an entity) and the character-offset entities projected onto "
            "words (see training/README.md).")
    lines += [
        "",
        "## Model",
        "",
        f"- WordPiece vocabulary of {meta['vocab_size']} entries built from the "
        "training split (cased, BERT basic pre-tokenization)"
        + (f", plus the {meta['vectors']['corpus_words']} most frequent words of the "
           "vectors' pretraining corpus as whole-word entries"
           if (meta.get("vectors") or {}).get("corpus_words") else "") + ".",
        f"- Embedding {args.emb_dim} -> {args.layers} x BiLSTM ({args.hidden} per "
        "direction; backward direction runs over each sequence reversed within "
        "its attention_mask length, so right padding is exact) -> linear.",
        f"- Parameters: {meta['params']:,}; about {meta['flops_per_token'] / 1e6:.2f} "
        "MFLOPs per sub-word token.",
        "- Inputs `input_ids`, `attention_mask` (int64 [batch, seq], right "
        "padded, `[CLS] ... [SEP]`); output `logits` float32 [batch, seq, "
        "num_labels]. Read each word's label from its first sub-word.",
        "",
        "## Training",
        "",
        "```",
        meta["command"],
        "```",
        "",
        (f"- Seed {meta['seed']}, {meta['epochs_run']} epochs on all of train "
         "(epoch count picked by an earlier run's held-out slice of train)."
         if meta.get("no_holdout") else
         f"- Seed {meta['seed']}, {meta['epochs_run']} epochs run, best epoch "
         f"{meta['best_epoch']} (held-out train slice F1 {meta['heldout_f1']})."),
        f"- Wall-clock training time: {meta['trained_seconds']:.0f} s on a shared "
        f"2-core CPU machine (torch {torch.__version__}, {args.threads} thread(s), nice 5).",
        "",
        "## Evaluation (devel split, strict entity F1)",
        "",
        f"- F1 **{d.get('f1')}** (precision {d.get('precision')}, recall "
        f"{d.get('recall')}; {d.get('gold')} gold entities), exact word-level "
        "span + type match, conlleval chunking.",
    ]
    for t, v in d.get("per_type", {}).items():
        lines.append(f"- {t}: F1 {v['f1']} (P {v['precision']}, R {v['recall']}, n={v['gold']})")
    rl = d.get("recall_by_entity_words", {})
    if rl:
        lines.append("- Recall by entity length (words): " + ", ".join(
            f"{k}: {v['recall']} (n={v['gold']})" for k, v in rl.items()))
    lines.append("")
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf8") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--out", required=True, help="bundle directory to write")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--final-lr-frac", type=float, default=0.1,
                    help="LR decays linearly to lr*this over all epochs")
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--ema", type=float, default=0.998,
                    help="exponential moving average of weights (e.g. 0.998) used "
                         "for evaluation and export (0 = off)")
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--emb-dim", type=int, default=96)
    ap.add_argument("--hidden", type=int, default=176)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.4)
    ap.add_argument("--emb-dropout", type=float, default=0.25)
    ap.add_argument("--word-dropout", type=float, default=0.05,
                    help="probability of replacing a sub-word id by [UNK]")
    ap.add_argument("--char-filters", type=int, default=64,
                    help="char-CNN filters over each vocab entry's spelling (0 = off); "
                         "folded into the embedding table before export")
    ap.add_argument("--id-dropout", type=float, default=0.2,
                    help="with the char CNN: probability of dropping a token's id "
                         "embedding (its char features stay)")
    ap.add_argument("--vectors", default=None,
                    help="pretrained fastText vectors (FILE.bin, or FILE.vec: whole-string "
                         "lookups only) for the sub-word entries; see training/train_vectors.sh")
    ap.add_argument("--vectors-mode", choices=["feature", "init"], default="feature",
                    help="feature: frozen vectors through a trained projection, added to a "
                         "zero-initialised id embedding (folded into the table at export); "
                         "init: initialise the id embedding table with the vectors")
    ap.add_argument("--corpus-words", type=int, default=0,
                    help="with --vectors: also make the N most frequent words of the vectors' "
                         "corpus whole-word vocab entries")
    ap.add_argument("--corpus-min-count", type=int, default=5)
    ap.add_argument("--eval-devel-each-epoch", action="store_true",
                    help="diagnostics only: also print devel F1 after each epoch "
                         "(never used for selection)")
    ap.add_argument("--max-words", type=int, default=4000)
    ap.add_argument("--min-word-freq", type=int, default=2)
    ap.add_argument("--pieces", type=int, default=2500)
    ap.add_argument("--time-budget", type=float, default=0,
                    help="stop after the epoch that would overrun this many minutes (0 = off)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 measured >2x faster than 2 for this small LSTM on the shared 2-core box")
    ap.add_argument("--no-holdout", action="store_true",
                    help="train on ALL of train for exactly --epochs epochs and export the "
                         "last (EMA) weights; use with an epoch count picked by an earlier "
                         "held-out run")
    ap.add_argument("--limit", type=int, default=0,
                    help="smoke test: use only this many training sentences")
    ap.add_argument("--aux-dataset", default="",
                    help="comma list of other datasets whose whole train split is trained alongside, each "
                         "with its own head over the shared layers (multi-task); sentences also in this "
                         "dataset's devel or held-out slice are dropped; the bundle keeps only the main head")
    ap.add_argument("--aux-mix", type=float, default=1.0,
                    help="fraction of each auxiliary train split sampled per epoch")
    ap.add_argument("--lm-tokens", type=int, default=0,
                    help="before the tagging epochs, pretrain the embeddings and the first BiLSTM layer "
                         "as a bidirectional LM on this many pieces of --lm-corpus (0: off)")
    ap.add_argument("--lm-corpus", default="/tmp/bioner-pretrain/corpus.txt",
                    help="unlabeled text, one sentence per line (training/train_vectors.sh builds it)")
    ap.add_argument("--lm-lr", type=float, default=2e-3)
    ap.add_argument("--lm-batch-size", type=int, default=64)
    ap.add_argument("--lm-dropout", type=float, default=0.25)
    ap.add_argument("--lm-cache", default="",
                    help="file for the pretrained weights: loaded when it exists and matches the vocabulary "
                         "and LM settings, else written after pretraining")
    ap.add_argument("--lm-lr-mult", type=float, default=1.0,
                    help="learning-rate factor of the LM-pretrained parameters during the tagging epochs")
    ap.add_argument("--crf", action="store_true",
                    help="train and decode with a learned linear-chain CRF over the words (experiment: "
                         "the TypeScript tagger does not read its transitions yet)")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--fixture", default=None,
                    help="verification fixture path (default /tmp/bioner-<dataset>-fixture.json)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    command = "nice -n 5 /usr/bin/python3 training/train_encoder.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])

    t0 = time.time()
    fit, held, devel, info = load_dataset(args.dataset, holdout=not args.no_holdout)
    if args.limit:  # smoke tests only
        fit, held, devel = fit[:args.limit], held[:args.limit // 4], devel[:args.limit // 4]
    labels = dataset_labels(args.dataset)
    label2id = {l: i for i, l in enumerate(labels)}
    aux = []  # (name, labels, label2id, sentences)
    seen = {tuple(s[0]) for s in devel + held}  # aux sentences never repeat the scored ones
    for name in [a for a in args.aux_dataset.split(",") if a]:
        if name == args.dataset or name not in DATASETS:
            ap.error(f"--aux-dataset: {name!r} must be another of {sorted(DATASETS)}")
        a_fit, _, _, _ = load_dataset(name, holdout=False)
        kept = [s for s in a_fit if tuple(s[0]) not in seen]
        a_labels = dataset_labels(name)
        if args.limit:
            kept = kept[:args.limit]
        print(f"aux {name}: {len(kept)} train sentences ({len(a_fit) - len(kept)} dropped as also in "
              f"{args.dataset} devel/held-out), labels {a_labels}", flush=True)
        aux.append((name, a_labels, {l: i for i, l in enumerate(a_labels)}, kept))
    extra = []
    if args.vectors and args.corpus_words:
        extra = vector_corpus_words(args.vectors, args.corpus_words, args.corpus_min_count)
    vocab = build_vocab(fit + [s for a in aux for s in a[3]], args.max_words, args.min_word_freq, args.pieces,
                        extra_words=extra)
    vectors, vinfo = None, None
    if args.vectors:
        tv = time.time()
        vectors, vinfo = load_piece_vectors(args.vectors, vocab)
        vinfo.update({"file": os.path.abspath(args.vectors), "mode": args.vectors_mode,
                      "corpus_words": len(extra), "seconds": round(time.time() - tv, 1)})
        print(f"vectors: {vinfo}", flush=True)
    wp = WordPiece(vocab)
    enc_fit = encode_sents(fit, wp, label2id)
    enc_held = encode_sents(held, wp, label2id)
    enc_dev = encode_sents(devel, wp, label2id)
    enc_aux = [encode_sents(a[3], wp, a[2]) for a in aux]
    n_pieces = sum(len(e[0]) for e in enc_fit)
    n_words = sum(e[3] for e in enc_fit)
    unk = sum(1 for e in enc_dev for i in e[0] if i == UNK_ID)
    dev_pieces = sum(len(e[0]) for e in enc_dev)
    print(f"data: fit {len(fit)} sents / {n_words} words / {n_pieces} pieces, "
          f"held-out {len(held)}, devel {len(devel)} sents; vocab {len(vocab)}; "
          f"devel [UNK] rate {unk / dev_pieces:.4f}; "
          f"max len {max(len(e[0]) for e in enc_fit)}; info {info}; "
          f"prep {time.time() - t0:.1f}s", flush=True)

    model = BiLSTMForTokenClassification(len(vocab), len(labels), args.emb_dim,
                                         args.hidden, args.layers, args.dropout,
                                         args.emb_dropout, vocab, args.char_filters,
                                         args.id_dropout, vectors, args.vectors_mode,
                                         [len(a[1]) for a in aux])
    if args.crf:
        model.crf = WordCRF(len(labels))
    params = sum(p.numel() for p in model.parameters())
    train_params = params
    params -= sum(p.numel() for p in model.aux_heads.parameters())  # dropped at export
    if model.char is not None:
        params -= sum(p.numel() for p in model.char.parameters())  # folded away at export
    if model.vproj is not None:
        params -= sum(p.numel() for p in model.vproj.parameters())  # folded away at export
    fpt = flops_per_token(args.emb_dim, args.hidden, args.layers, len(labels))
    print(f"model: {params:,} params exported ({train_params:,} while training), "
          f"{fpt / 1e6:.2f} MFLOPs/token", flush=True)
    lm_info = None
    if args.lm_tokens:
        key = {"vocab": hashlib.sha256("\n".join(vocab).encode()).hexdigest(), "tokens": args.lm_tokens,
               "lr": args.lm_lr, "batch": args.lm_batch_size, "dropout": args.lm_dropout, "seed": args.seed,
               "corpus": os.path.abspath(args.lm_corpus), "emb": args.emb_dim, "hidden": args.hidden}
        cached = torch.load(args.lm_cache) if args.lm_cache and os.path.exists(args.lm_cache) else None
        rng_state = torch.get_rng_state()  # the tagging epochs draw as they would without the LM stage
        if cached is not None and cached["key"] == key:
            model.load_state_dict(cached["state"])
            lm_info = dict(cached["info"], cache=os.path.abspath(args.lm_cache))
            print(f"lm: loaded {args.lm_cache} ({lm_info['seconds']} s of pretraining)", flush=True)
        else:
            if cached is not None:
                print(f"lm: {args.lm_cache} was made with other settings; pretraining again", flush=True)
            lm_info = lm_pretrain(model, wp, len(vocab), args)
            if args.lm_cache:
                torch.save({"key": key, "state": model.state_dict(), "info": lm_info}, args.lm_cache)
        torch.set_rng_state(rng_state)
    pre = set()
    if args.lm_tokens and args.lm_lr_mult != 1.0:
        mods = [model.emb, model.layers[0]] + [m for m in (model.char, model.vproj) if m is not None]
        pre = {id(p) for m in mods for p in m.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in pre]}]
    if pre:
        groups.append({"params": [p for p in model.parameters() if id(p) in pre],
                       "lr": args.lr * args.lm_lr_mult})
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    aux_sizes = [int(round(len(ea) * args.aux_mix)) for ea in enc_aux]

    def epoch_batches():
        """(head, batch) pairs: all main batches plus an --aux-mix sample of each auxiliary set
        (without --aux-dataset, the main batches alone, drawn from rng exactly as before it existed)."""
        out = [(0, [enc_fit[i] for i in b]) for b in batches(enc_fit, args.batch_size, rng)]
        for h, (ea, n) in enumerate(zip(enc_aux, aux_sizes), start=1):
            sample = rng.sample(ea, n)
            out += [(h, [sample[i] for i in b]) for b in batches(sample, args.batch_size, rng)]
        if enc_aux:
            rng.shuffle(out)
        return out

    steps_per_epoch = sum(math.ceil(n / args.batch_size) for n in [len(enc_fit)] + aux_sizes)
    total_steps = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 - (1.0 - args.final_lr_frac) * min(s, total_steps) / total_steps)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    id2label = {i: l for i, l in enumerate(labels)}
    held_gold = [t for _, t in held]

    params_list = [p for p in model.parameters()]
    ema = [p.detach().clone() for p in params_list] if args.ema > 0 else None
    n_steps = 0
    best = (-1.0, 0, None)
    t_train = time.time()
    epochs_run = 0
    for ep in range(1, args.epochs + 1):
        te = time.time()
        model.train()
        tot, nb = 0.0, 0
        for head, items in epoch_batches():
            ids, mask, labs = pad_batch(items)
            if args.word_dropout > 0:
                drop = (torch.rand(ids.shape) < args.word_dropout) & (ids > MASK_ID)
                ids = ids.masked_fill(drop, UNK_ID)
            logits = model(ids, mask, head)
            if model.crf is not None and head == 0:
                em, tags, wmask = word_emissions(logits, labs)
                loss = model.crf.nll(em, tags, wmask) / wmask.sum()
            else:
                loss = loss_fn(logits.reshape(-1, logits.size(-1)), labs.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    d = min(args.ema, (1.0 + n_steps) / (10.0 + n_steps))
                    torch._foreach_mul_(ema, d)
                    torch._foreach_add_(ema, [p.detach() for p in params_list], alpha=1.0 - d)
            n_steps += 1
            tot += float(loss)
            nb += 1
        epochs_run = ep
        if ema is not None:  # evaluate (and keep) the averaged weights
            raw = [p.detach().clone() for p in params_list]
            with torch.no_grad():
                for p, e in zip(params_list, ema):
                    p.copy_(e)
        if held:
            res = evaluate(held_gold, predict(model, enc_held, id2label))
        else:  # --no-holdout: the epoch count was chosen beforehand; keep the last
            res = {"f1": float(ep), "precision": None, "recall": None}
        el = time.time() - te
        dv = ""
        if args.eval_devel_each_epoch:
            dv = f" [devel F1 {evaluate([t for _, t in devel], predict(model, enc_dev, id2label))['f1']}]"
        ho = (f"held-out F1 {res['f1']} (P {res['precision']} R {res['recall']})"
              if held else "no held-out")
        print(f"epoch {ep}: loss {tot / nb:.4f} {ho}{dv} lr {sched.get_last_lr()[0]:.2e} "
              f"epoch {el:.0f}s total {time.time() - t_train:.0f}s", flush=True)
        if res["f1"] > best[0]:
            best = (res["f1"], ep, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if ema is not None:
            with torch.no_grad():
                for p, r in zip(params_list, raw):
                    p.copy_(r)
        if args.time_budget and (time.time() - t_train + el) > args.time_budget * 60:
            print("time budget reached", flush=True)
            break
    trained_seconds = time.time() - t_train
    model.load_state_dict(best[2])
    model.aux_heads = nn.ModuleList()  # the bundle keeps the main head only
    if model.char is not None or model.vproj is not None:
        probe = (enc_held or enc_fit)[:200]
        before = predict(model, probe, id2label)
        model.fold_char_features()
        assert before == predict(model, probe, id2label), "char/vector folding changed predictions"
    dres = evaluate([t for _, t in devel], predict(model, enc_dev, id2label))
    print(f"best epoch {best[1]} held-out F1 {best[0] if held else 'n/a'}; DEVEL strict F1 {dres['f1']} "
          f"(P {dres['precision']} R {dres['recall']})", flush=True)
    print("devel detail: " + json.dumps(dres), flush=True)

    meta = {
        "name": f"{args.dataset}-encoder",
        "version": args.version,
        "dataset": args.dataset,
        "seed": args.seed,
        "trained_seconds": round(trained_seconds, 1),
        "devel_f1": dres["f1"],
        "devel_precision": dres["precision"],
        "devel_recall": dres["recall"],
        "heldout_f1": best[0] if held else None,
        "no_holdout": bool(args.no_holdout),
        "best_epoch": best[1],
        "epochs_run": epochs_run,
        "params": params,
        "flops_per_token": fpt,
        "vocab_size": len(vocab),
        "command": command,
        "torch": torch.__version__,
        "vectors": vinfo,
        "crf": ({"transitions": model.crf.trans.tolist(), "start": model.crf.start.tolist(),
                 "end": model.crf.end.tolist()} if model.crf is not None else None),
        "lm_pretraining": lm_info,
        "aux": [{"dataset": a[0], "sentences": len(a[3]), "mix": args.aux_mix} for a in aux] or None,
        "devel": dres,
    }
    fixture = args.fixture or f"/tmp/bioner-{args.dataset}-fixture.json"
    export_bundle(args, model, vocab, wp, labels, meta, fixture)
    print(f"done in {time.time() - t0:.0f}s; fixture {fixture}", flush=True)


if __name__ == "__main__":
    main()
