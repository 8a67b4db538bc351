#!/usr/bin/python3
"""Train a small generative decoder-only LM for biomedical NER (the LLM route
of bioner-router), from scratch on CPU, and export it as an ONNX model with a
KV cache in the Hugging Face / Optimum / transformers.js layout.

Unlike training/train_decoder.py (a one-pass classifier whose graph reads the
input twice), this model *generates* its answer token by token, in the answer
format of the paper this project follows: one `word<TAB>TAG` line per input
word.

Stages (run in this order; all state lives in --work, default /tmp/bioner-gen)
------------------------------------------------------------------------------
vocab     One shared cased WordPiece vocabulary (default about 8k entries)
          built from the pretraining corpus (/tmp/bioner-pretrain/corpus.txt,
          written by training/build_pretrain_corpus.py: PubMed sentences, the
          TRAIN splits, mtsamples, extra-labeled train tokens; never devel).
          The piece-selection rule is train_encoder.build_vocab (every corpus
          character as c and ##c, frequent whole words, frequent prefixes and
          ## substrings), and the WordPiece encoder is train_encoder.WordPiece
          (greedy longest-match-first, the HF algorithm).  Ids:
            [PAD]=0 [UNK]=1 [BOS]=2 [EOS]=3 [SEP]=4 [TAB]=5 [NL]=6, then one
            token per BIO tag of the union of the three label sets,
            [TAG:O] [TAG:B-Chemical] [TAG:I-Chemical] ... [TAG:I-cell_line]
            (7..21), then characters, words and pieces.
          tokenizer.json is written by hand (BertNormalizer cased,
          BertPreTokenizer, WordPiece, TemplateProcessing `[BOS] $A [SEP]`,
          all 22 specials as added_tokens) and loads in @huggingface/tokenizers.
          [TAB] and [NL] stand for the answer's tab and newline: real \\t and
          \\n in a note stay whitespace for the pre-tokenizer.
          Run implicitly by `--stage pretrain` when the vocabulary is missing.
pretrain  Causal LM over the corpus: each line becomes [BOS] pieces [EOS], the
          whole stream is cut into fixed-length chunks (--seq-len, default 256;
          documents are packed, attention may cross a boundary as in GPT
          pretraining), shuffled per pass with the seed.  A few chunks are held
          out for a validation loss.  AdamW, linear warmup then cosine decay to
          --final-lr-frac.  With --time-budget MIN the schedule runs on the
          clock: progress = max(step / --steps, training seconds / budget), so
          the learning rate has decayed when the budget ends, and the run stops
          there.  The checkpoint (--work/pretrain.pt: weights, optimizer,
          step, tokens seen, seconds, loss history) is written every
          --ckpt-every steps and on SIGINT/SIGTERM; `--resume` continues the
          run where it stopped, with the same schedule (the budget counts the
          training seconds of all invocations together).
finetune  --dataset bc5cdr|ncbi-disease|jnlpba.  Each training sentence becomes
              [BOS] instruction sentence-pieces [SEP]
              (word-pieces [TAB] [TAG:x] [NL])*  [EOS]
          where the instruction is the dataset's entity type names, BERT-basic
          split, e.g. `Chemical , Disease :` or `protein , DNA , RNA , cell
          type , cell line :` (--no-instruction drops it).  The
          loss is only on the tag tokens (cross-entropy over the dataset's tag
          tokens, i.e. the logits the constrained decoder compares): the word
          copies are forced at inference and need no loss, and tag i is
          conditioned on the gold tags before it (teacher forcing).  The model
          starts from pretrain.pt (--init).  The checkpoint is chosen by strict
          entity F1 of constrained greedy decoding on the held-out last 10% of
          TRAIN (never devel; evaluated --evals-per-epoch times per epoch);
          devel is decoded once at the end (strict, conlleval chunks, scorer of
          train_encoder.evaluate; F1 by entity length from train_decoder).
          Writes --work/finetune-<dataset>.pt.
export    Writes the bundle (--out): config.json, tokenizer.json,
          tokenizer_config.json, special_tokens_map.json, vocab.txt,
          model.onnx, README.md, and a fixture for
          training/verify_generative.mjs.

Decoding (constrained greedy, KV cache)
---------------------------------------
Per sentence: the first chunk fed is the prompt plus the first word's pieces
and [TAB] (past length 0); the tag is the argmax of the next-token logits over
the dataset's tag tokens only, with I-X forbidden after O or after another
type (--no-bio-constraint lifts that).  Each later chunk is
[previous tag] [NL] pieces [TAB], so every step feeds a few forced tokens and
reads one tag; nothing is generated freely.  Sentences are decoded in batches:
chunks are right-padded, pads get attention_mask 0 and stay in the cache as
holes that no query ever attends to; position ids count real tokens only.

Model
-----
Decoder-only pre-LN transformer: token embedding (tied with the output layer)
-> --layers blocks [LN -> causal multi-head self-attention with rotary
positions (RoPE on Q and K, from position_ids) -> residual; LN -> GELU MLP ->
residual] -> LN -> logits = h @ E^T.  No learned positions, so sequences longer
than --seq-len still run (they were never trained on).

ONNX interface (opset 14, dynamic batch / sequence / past axes)
--------------------------------------------------------------
inputs   input_ids int64 [batch, seq], attention_mask int64
         [batch, past_len + seq], position_ids int64 [batch, seq],
         past_key_values.{i}.key / .value float32 [batch, heads, past_len,
         head_dim] (empty, past_len 0, for the prefill)
outputs  logits float32 [batch, seq, vocab], present.{i}.key / .value
         [batch, heads, past_len + seq, head_dim] (keys after rotary)

Examples
--------
    nice -n 10 /usr/bin/python3 training/train_generative.py --stage pretrain --time-budget 45
    nice -n 10 /usr/bin/python3 training/train_generative.py --stage finetune --dataset bc5cdr --time-budget 15
    nice -n 10 /usr/bin/python3 training/train_generative.py --stage export --dataset bc5cdr --out /tmp/bioner-gen/bc5cdr-generative
    node training/verify_generative.mjs /tmp/bioner-gen/bc5cdr-generative /tmp/bioner-gen/bc5cdr-generative-fixture.json

Requires Debian packages python3-torch python3-onnx python3-numpy
libopenblas0-pthread (use /usr/bin/python3).
"""

import argparse
import collections
import hashlib
import json
import math
import os
import random
import shlex
import signal
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_encoder as te  # noqa: E402  (data readers, WordPiece, scorer)
import train_decoder as td  # noqa: E402  (F1 by entity length, int8 helpers)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[TAB]", "[NL]"]
PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID, TAB_ID, NL_ID = range(7)
assert UNK_ID == te.UNK_ID  # te.WordPiece returns te.UNK_ID for unknown words
ALL_TYPES = ["Chemical", "Disease", "protein", "DNA", "RNA", "cell_type", "cell_line"]
ALL_TAGS = ["O"] + [f"{p}-{t}" for t in ALL_TYPES for p in ("B", "I")]
TAG_TOKEN = {t: f"[TAG:{t}]" for t in ALL_TAGS}
TAG_ID = {t: len(SPECIALS) + i for i, t in enumerate(ALL_TAGS)}
ALL_SPECIALS = SPECIALS + [TAG_TOKEN[t] for t in ALL_TAGS]
NEG = -1e9


LABEL_SETS = {d: te.dataset_labels(d) for d in sorted(te.DATASETS)}
for _d, _ls in LABEL_SETS.items():
    assert all(l in TAG_ID for l in _ls), _d

# --extra: train splits of other corpora (../shared/data/extra-labeled), extra
# tasks of a multi-task fine-tune that are trained on, never evaluated or
# exported. Each keeps its own type names: a name the three sets use (only
# "Chemical", BioNLP11ID's) shares that tag token; the others get tag tokens
# appended after the vocabulary for the run and sliced off before saving, so
# the checkpoint and the bundle keep the shared vocabulary.
EXTRA_CORPORA = {"bc2gm": "BC2GM", "craft": "CRAFT", "linnaeus": "linnaeus", "anatem": "AnatEM",
                 "bionlp13cg": "BioNLP13CG", "bionlp11id": "BioNLP11ID", "bionlp09": "BioNLP09",
                 "ex-ptm": "Ex-PTM"}


def load_extra(name):
    """-> (train sentences, types by mention count) of an extra-labeled corpus."""
    path = os.path.join(te.DATA_ROOT, "extra-labeled", f"{EXTRA_CORPORA[name]}-train.tsv.gz")
    sents, _ = te.read_iob(path)
    counts = collections.Counter(t[2:] for _, ts in sents for t in ts if t != "O")
    return sents, sorted(counts, key=lambda t: (-counts[t], t))


# --------------------------------------------------------------------------
# Vocabulary / tokenizer
# --------------------------------------------------------------------------


def corpus_lines(path, limit=0):
    with open(path, encoding="utf8") as f:
        for i, line in enumerate(f):
            if limit and i >= limit:
                break
            ws = line.split()
            if ws:
                yield ws


def build_vocab(args):
    t0 = time.time()
    sents = [(ws, None) for ws in corpus_lines(args.corpus, args.limit)]
    base = te.build_vocab(sents, max_words=args.vocab_words, min_word_freq=2,
                          n_pieces=args.vocab_pieces)
    assert base[:len(te.SPECIALS)] == te.SPECIALS
    vocab = ALL_SPECIALS + [t for t in base[len(te.SPECIALS):] if t not in ALL_SPECIALS]
    print(f"vocab: {len(vocab)} entries from {len(sents)} corpus lines "
          f"({args.vocab_words} words, {args.vocab_pieces} pieces) in {time.time() - t0:.0f}s",
          flush=True)
    return vocab


def tokenizer_json(vocab):
    return te.tokenizer_json(vocab, ALL_SPECIALS, ("[BOS]", BOS_ID), ("[SEP]", SEP_ID))


TOKENIZER_CONFIG = {
    "model_max_length": 2048, "do_lower_case": False,
    "bos_token": "[BOS]", "eos_token": "[EOS]", "sep_token": "[SEP]",
    "pad_token": "[PAD]", "unk_token": "[UNK]",
    "additional_special_tokens": ALL_SPECIALS[5:],
    "clean_up_tokenization_spaces": True,
    "tokenizer_class": "PreTrainedTokenizerFast",
}
SPECIAL_TOKENS_MAP = {"bos_token": "[BOS]", "eos_token": "[EOS]", "sep_token": "[SEP]",
                      "pad_token": "[PAD]", "unk_token": "[UNK]",
                      "additional_special_tokens": ALL_SPECIALS[5:]}


def vocab_paths(work):
    return os.path.join(work, "vocab.txt"), os.path.join(work, "tokenizer.json")


def load_or_build_vocab(args, build_ok):
    vpath, tpath = vocab_paths(args.work)
    if not os.path.exists(vpath):
        if not build_ok:
            sys.exit(f"no vocabulary at {vpath}: run --stage vocab or --stage pretrain first")
        vocab = build_vocab(args)
        os.makedirs(args.work, exist_ok=True)
        with open(vpath, "w", encoding="utf8") as f:
            f.write("\n".join(vocab) + "\n")
        te.write_json(tpath, tokenizer_json(vocab))
    with open(vpath, encoding="utf8") as f:
        vocab = f.read().split("\n")[:-1]
    assert vocab[:len(ALL_SPECIALS)] == ALL_SPECIALS, "unexpected special tokens in vocab.txt"
    with open(vpath, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return vocab, sha


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def rotate_half(x):
    h = x.size(-1) // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def take_rows(t, sel):
    """t [B', 1, T, X] (B' = 1 or B), sel [B, K] -> [B, 1, K, X]."""
    B, K = sel.shape
    t = t.expand(B, -1, -1, -1)
    return torch.gather(t, 2, sel[:, None, :, None].expand(B, 1, K, t.size(-1)))


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads, dropout, attn_dropout=0.0):
        super().__init__()
        assert d % heads == 0
        self.h, self.hd = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None, sel=None):
        """sel [B, K]: compute queries (and outputs) only at these positions of
        x; keys and values are computed for all positions."""
        B, T, D = x.shape
        if sel is None:
            q, k, v = self.qkv(x).view(B, T, 3, self.h, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
            cq, sq = cos, sin
        else:
            K = sel.size(1)
            w, b = self.qkv.weight, self.qkv.bias
            xq = x[torch.arange(B)[:, None], sel]
            q = F.linear(xq, w[:D], b[:D]).view(B, K, self.h, self.hd).transpose(1, 2)
            k, v = F.linear(x, w[D:], b[D:]).view(B, T, 2, self.h, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
            cq, sq = take_rows(cos, sel), take_rows(sin, sel)
            bias = take_rows(bias, sel)
            T = K
        q = q * cq + rotate_half(q) * sq
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd)) + bias
        att = self.attn_drop(torch.softmax(att, dim=-1))
        y = torch.matmul(att, v).transpose(1, 2).reshape(B, T, D)
        return self.drop(self.proj(y)), k, v


class Block(nn.Module):
    def __init__(self, d, heads, ff, dropout, attn_dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, dropout, attn_dropout)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, ff)
        self.fc_out = nn.Linear(ff, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None, sel=None):
        a, k, v = self.attn(self.ln1(x), cos, sin, bias, past_k, past_v, sel)
        if sel is not None:
            x = x[torch.arange(x.size(0))[:, None], sel]
        x = x + a
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))
        return x, k, v


class GenerativeDecoder(nn.Module):
    """Decoder-only pre-LN transformer LM with rotary positions and tied
    input/output embeddings."""

    def __init__(self, vocab_size, d=256, layers=5, heads=4, ff=1024, dropout=0.0,
                 rope_base=10000.0, attn_dropout=0.0, vec_dim=0):
        super().__init__()
        self.cfg = dict(vocab_size=vocab_size, d=d, layers=layers, heads=heads, ff=ff,
                        rope_base=rope_base)
        if vec_dim:
            self.cfg["vec_dim"] = vec_dim
        self.emb = nn.Embedding(vocab_size, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, ff, dropout, attn_dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        hd = d // heads
        self.register_buffer("inv_freq", 1.0 / rope_base ** (torch.arange(0, hd, 2).float() / hd),
                             persistent=False)
        self.apply(self._init)
        for b in self.blocks:  # GPT-2: residual projections scaled by depth
            nn.init.normal_(b.attn.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(b.fc_out.weight, std=0.02 / math.sqrt(2 * layers))
        self._causal = {}
        # --vectors: frozen sub-word vectors (one unit-std row per vocab entry,
        # train_encoder.load_piece_vectors) through a learned projection, added
        # to the id embedding; the sum is the tied table of input and output,
        # folded into a plain embedding at export. Made last, so the other
        # weights start exactly as without vectors.
        self.vproj = None
        if vec_dim:
            self.register_buffer("vec", torch.zeros(vocab_size, vec_dim))
            self.vproj = nn.Linear(vec_dim, d, bias=False)
            nn.init.normal_(self.vproj.weight, std=0.02 / math.sqrt(vec_dim))

    def table(self, ids=None):
        """Rows `ids` (all [V, d] when None) of the tied token table: the id
        embedding, plus the projected vectors with --vectors (only the rows asked
        for are projected: a step needs its inputs' rows and, with token_ids, a few
        output rows, not the whole vocabulary)."""
        w = self.emb.weight if ids is None else self.emb.weight[ids]
        if self.vproj is None:
            return w
        return w + self.vproj(self.vec if ids is None else self.vec[ids])

    @torch.no_grad()
    def fold_vectors(self):
        """emb += vproj(vec), then drop both: the export sees a plain tied embedding."""
        if self.vproj is None:
            return
        self.emb.weight.copy_(self.table())
        self.vproj = None
        del self.vec
        self.cfg.pop("vec_dim")

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def rope(self, position_ids, dtype):
        ang = position_ids.unsqueeze(-1).to(dtype) * self.inv_freq  # [B, T, hd/2]
        ang = torch.cat([ang, ang], dim=-1).unsqueeze(1)  # [B, 1, T, hd]
        return torch.cos(ang), torch.sin(ang)

    def causal_bias(self, T):
        b = self._causal.get(T)
        if b is None:
            m = torch.ones(T, T, dtype=torch.bool).tril()
            b = ((~m).float() * NEG)[None, None]
            self._causal[T] = b
        return b

    @staticmethod
    def mask_bias(attention_mask, T, dtype):
        """[B, 1, T, S] additive bias: query i (absolute index S - T + i) sees key j
        iff j <= S - T + i and attention_mask[b, j] == 1."""
        S = attention_mask.size(1)
        q = torch.arange(T, device=attention_mask.device) + (S - T)
        k = torch.arange(S, device=attention_mask.device)
        allowed = (k.unsqueeze(0) <= q.unsqueeze(1)).unsqueeze(0) & (attention_mask.unsqueeze(1) > 0)
        return ((~allowed).to(dtype) * NEG).unsqueeze(1)

    def hidden(self, input_ids, attention_mask=None, position_ids=None, past=None, sel=None):
        """-> (final hidden states [B, T, d], presents [(k, v)] per layer).
        attention_mask None: a plain causal batch with no padding and no past.
        sel [B, K]: return the hidden states of these positions only, [B, K, d]
        (the last block then computes queries, attention output and MLP only
        there; keys/values, hence the presents, stay complete)."""
        B, T = input_ids.shape
        x = self.drop(self.table(input_ids))
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0).expand(B, T)
        cos, sin = self.rope(position_ids, x.dtype)
        if attention_mask is None:
            assert past is None
            bias = self.causal_bias(T)
        else:
            bias = self.mask_bias(attention_mask, T, x.dtype)
        presents = []
        n = len(self.blocks)
        for li, blk in enumerate(self.blocks):
            pk, pv = past[li] if past is not None else (None, None)
            x, k, v = blk(x, cos, sin, bias, pk, pv, sel if li == n - 1 else None)
            presents.append((k, v))
        return self.ln_f(x), presents

    def logits(self, h, token_ids=None):
        return F.linear(h, self.table(token_ids))

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        h, presents = self.hidden(input_ids, attention_mask, position_ids, past)
        return self.logits(h), presents


class OnnxWrapper(nn.Module):
    """Flat inputs / outputs with the HF names for torch.onnx.export."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.m(input_ids, attention_mask, position_ids, past)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg, ctx, lm_head=True):
    """Forward FLOPs (2 x multiply-adds) per token: per layer 4d^2 (Q, K, V,
    output projections) + 2 d ff (MLP) + 2 d ctx (QK^T and AV over ctx keys),
    plus d V for the tied output layer when lm_head.  Norms, softmax, rotary
    and the embedding lookup are not counted.  Training costs about 3x."""
    d, L, ff, V = cfg["d"], cfg["layers"], cfg["ff"], cfg["vocab_size"]
    body = L * (4 * d * d + 2 * d * ff + 2 * d * ctx)
    return int(2 * (body + (d * V if lm_head else 0)))


def make_model(args, vocab_size, dropout, attn_dropout=0.0, vec_dim=0):
    return GenerativeDecoder(vocab_size, args.hidden, args.layers, args.heads, args.ff,
                             dropout, args.rope_base, attn_dropout, vec_dim)


def model_from_cfg(cfg, dropout=0.0, attn_dropout=0.0):
    return GenerativeDecoder(cfg["vocab_size"], cfg["d"], cfg["layers"], cfg["heads"], cfg["ff"],
                             dropout, cfg["rope_base"], attn_dropout, cfg.get("vec_dim", 0))


def piece_vectors(path, vocab):
    """--vectors: one row per vocab entry (the encoder's loader), zero for every
    special and tag token (fastText would compose vectors for their spellings)."""
    mat, info = te.load_piece_vectors(path, vocab)
    mat[:len(ALL_SPECIALS)] = 0.0
    info["file"] = os.path.abspath(path)
    return torch.from_numpy(mat), info


def adamw(model, lr, weight_decay):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_factor(step, warmup, progress, final_frac):
    """Linear warmup over `warmup` steps, then cosine from 1 to final_frac as
    progress goes 0 -> 1."""
    w = min(1.0, (step + 1) / max(1, warmup))
    p = min(1.0, max(0.0, progress))
    return w * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------


def corpus_ids(args, wp, vocab_sha):
    """Whole corpus as one uint16 id stream: [BOS] pieces [EOS] per line
    (cached in --work)."""
    cache = os.path.join(args.work, f"corpus-ids-{vocab_sha[:12]}"
                         + (f"-limit{args.limit}" if args.limit else "") + ".npy")
    if os.path.exists(cache):
        return np.load(cache)
    t0 = time.time()
    out = []
    for ws in corpus_lines(args.corpus, args.limit):
        out.append(BOS_ID)
        for w in ws:
            out.extend(wp.encode_word(w))
        out.append(EOS_ID)
    arr = np.asarray(out, dtype=np.uint16)
    np.save(cache, arr)
    print(f"corpus: {len(arr):,} ids encoded in {time.time() - t0:.0f}s -> {cache}", flush=True)
    return arr


_STOP = {"sig": None}


def _on_signal(signum, _frame):
    _STOP["sig"] = signum
    print(f"signal {signum}: checkpointing after this step", flush=True)


@torch.no_grad()
def lm_val_loss(model, val, bs=16):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(val), bs):
        x = torch.from_numpy(val[i:i + bs].astype(np.int64))
        logits, _ = model(x[:, :-1])
        tot += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                     reduction="sum"))
        n += x[:, 1:].numel()
    model.train()
    return tot / max(1, n)


def grow_into(model, path, vocab_sha):
    """Depth up-scaling: start a deeper model from a pretrained shallower one.
    The old blocks are spread evenly over the new depth; each inserted block
    is a copy of the block before it with its two residual projections zeroed,
    so the grown model computes exactly what the old one did and training
    starts from the old loss (its zeroed projections still get gradients)."""
    ck = torch.load(path)
    assert ck["vocab_sha256"] == vocab_sha, "--grow-from checkpoint has another vocabulary"
    old = model_from_cfg(ck["model_cfg"])
    old.load_state_dict(ck["model"])
    cfg_o, cfg_n = old.cfg, model.cfg
    assert all(cfg_o[k] == cfg_n[k] for k in ("vocab_size", "d", "heads", "ff", "rope_base")), \
        f"--grow-from: only the depth may change ({cfg_o} -> {cfg_n})"
    lo, ln = cfg_o["layers"], cfg_n["layers"]
    assert ln > lo, "--grow-from: the new model must be deeper"
    src = [j * lo // ln for j in range(ln)]
    with torch.no_grad():
        model.emb.weight.copy_(old.emb.weight)
        model.ln_f.load_state_dict(old.ln_f.state_dict())
        for j, i in enumerate(src):
            model.blocks[j].load_state_dict(old.blocks[i].state_dict())
            if j > 0 and src[j - 1] == i:  # an inserted copy: identity at start
                for lin in (model.blocks[j].attn.proj, model.blocks[j].fc_out):
                    lin.weight.zero_()
                    lin.bias.zero_()
    st = ck["state"]
    return {"checkpoint": os.path.abspath(path), "layers": f"{lo} -> {ln}", "source_blocks": src,
            "steps": st["step"], "tokens": st["tokens"], "minutes": round(st["seconds"] / 60, 1),
            "val_loss": st["val"][-1]["val_loss"] if st["val"] else None,
            "rows_seen": st["step"] * ck["args"]["batch_size"]}


def stage_pretrain(args):
    vocab, vocab_sha = load_or_build_vocab(args, build_ok=True)
    wp = te.WordPiece(vocab)
    ids = corpus_ids(args, wp, vocab_sha)
    L = args.seq_len + 1  # inputs and shifted targets
    n_chunks = len(ids) // args.seq_len - 1
    chunks = np.lib.stride_tricks.as_strided(
        ids, shape=(n_chunks, L), strides=(ids.strides[0] * args.seq_len, ids.strides[0]))
    perm0 = np.random.RandomState(args.seed).permutation(n_chunks)
    n_val = min(args.val_chunks, n_chunks // 10)
    val = np.ascontiguousarray(chunks[np.sort(perm0[:n_val])])
    train_idx = np.sort(perm0[n_val:])
    n_train = len(train_idx)
    unk = float((ids == UNK_ID).mean())
    print(f"pretrain data: {len(ids):,} ids ({unk:.4%} [UNK]), {n_train:,} train chunks of "
          f"{args.seq_len} (+1) tokens, {n_val} validation chunks", flush=True)

    ckpt_path = os.path.join(args.work, "pretrain.pt")
    vec, vinfo = piece_vectors(args.vectors, vocab) if args.vectors else (None, None)
    if vinfo:
        print(f"vectors: {vinfo}", flush=True)
    torch.manual_seed(args.seed)
    model = make_model(args, len(vocab), args.dropout, args.attn_dropout, 0 if vec is None else vec.size(1))
    if vec is not None:
        model.vec.copy_(vec)
    if args.grow_from and vec is not None:
        raise SystemExit("--grow-from with --vectors is not supported")
    opt = adamw(model, args.lr, args.weight_decay)
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "history": [], "val": []}
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        assert ck["vocab_sha256"] == vocab_sha, "checkpoint vocabulary differs"
        assert ck["model_cfg"] == model.cfg, f"checkpoint model {ck['model_cfg']} != {model.cfg}"
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed {ckpt_path}: step {state['step']}, {state['tokens']:,} tokens, "
              f"{state['seconds'] / 60:.1f} min", flush=True)
    elif args.resume:
        print(f"--resume: no {ckpt_path}, starting fresh", flush=True)
    if args.grow_from and state["step"] == 0:
        state["grown_from"] = grow_into(model, args.grow_from, vocab_sha)
        # the stream continues where the smaller model's run stopped
        state["row_offset"] = state["grown_from"]["rows_seen"]
        state["grown_from"]["val_loss_at_start"] = round(lm_val_loss(model, val), 4)
        print(f"grown from {args.grow_from}: {state['grown_from']}", flush=True)
    params = count_params(model)
    print(f"model: {params:,} params (tied embeddings {len(vocab)} x {args.hidden}; "
          f"{params - len(vocab) * args.hidden:,} outside), "
          f"{flops_per_token(model.cfg, args.seq_len / 2) / 1e6:.1f} MFLOPs/token forward "
          f"at mean context {args.seq_len // 2}", flush=True)

    def save(reason):
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                     "model_cfg": model.cfg, "vocab_sha256": vocab_sha, "args": vars(args),
                     "torch_rng": torch.get_rng_state()}, ckpt_path)
        print(f"checkpoint ({reason}): step {state['step']} -> {ckpt_path}", flush=True)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    budget_s = args.time_budget * 60 if args.time_budget else 0
    model.train()
    t_log, tok_log, loss_log, n_log = time.time(), 0, 0.0, 0
    t_seg = time.time()
    seconds0 = state["seconds"]
    reason = "end"
    perms = {}
    while True:
        progress = state["step"] / args.steps
        if budget_s:
            progress = max(progress, state["seconds"] / budget_s)
        if progress >= 1.0:
            reason = "time budget" if budget_s and state["step"] < args.steps else "steps"
            break
        if _STOP["sig"] is not None:
            reason = f"signal {_STOP['sig']}"
            break
        lr = args.lr * lr_factor(state["step"], args.warmup_steps, progress, args.final_lr_frac)
        set_lr(opt, lr)
        # deterministic order: pass e uses permutation seed+1+e of the train chunks
        first = state["step"] * args.batch_size + state.get("row_offset", 0)
        rows = []
        for j in range(first, first + args.batch_size):
            e, r = divmod(j, n_train)
            if e not in perms:
                perms.clear()
                perms[e] = np.random.RandomState(args.seed + 1 + e).permutation(n_train)
            rows.append(train_idx[perms[e][r]])
        x = torch.from_numpy(chunks[rows].astype(np.int64))
        logits, _ = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = float(nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        opt.step()
        state["step"] += 1
        state["tokens"] += x[:, :-1].numel()
        state["seconds"] = seconds0 + time.time() - t_seg
        tok_log += x[:, :-1].numel()
        loss_log += float(loss)
        n_log += 1
        if state["step"] % args.log_every == 0:
            dt = time.time() - t_log
            rec = {"step": state["step"], "tokens": state["tokens"], "loss": round(loss_log / n_log, 4),
                   "lr": lr, "tok_s": round(tok_log / dt, 1), "minutes": round(state["seconds"] / 60, 2),
                   "grad_norm": round(gn, 3)}
            state["history"].append(rec)
            print(f"step {rec['step']} tokens {rec['tokens']:,} loss {rec['loss']:.4f} "
                  f"lr {lr:.2e} gnorm {gn:.2f} {rec['tok_s']:.0f} tok/s "
                  f"{rec['minutes']:.1f} min", flush=True)
            t_log, tok_log, loss_log, n_log = time.time(), 0, 0.0, 0
        if args.eval_every and state["step"] % args.eval_every == 0:
            t_e = time.time()
            vl = lm_val_loss(model, val)
            state["val"].append({"step": state["step"], "tokens": state["tokens"], "val_loss": round(vl, 4)})
            print(f"val loss {vl:.4f} (ppl {math.exp(vl):.1f}) at step {state['step']} "
                  f"({time.time() - t_e:.0f}s)", flush=True)
            t_log += time.time() - t_e  # keep tokens/s a training figure
        if state["step"] % args.ckpt_every == 0:
            save("periodic")
    vl = lm_val_loss(model, val)
    state["val"].append({"step": state["step"], "tokens": state["tokens"], "val_loss": round(vl, 4)})
    state["final"] = reason
    print(f"stop ({reason}): step {state['step']}, {state['tokens']:,} tokens "
          f"({state['tokens'] / max(1, n_train * args.seq_len):.2f} passes), "
          f"{state['seconds'] / 60:.1f} min, val loss {vl:.4f} (ppl {math.exp(vl):.1f})", flush=True)
    save(reason)


# --------------------------------------------------------------------------
# Fine-tuning data
# --------------------------------------------------------------------------


def instruction_ids(wp, dataset, on=True, types=None):
    """The prompt's instruction: the set's type names ("Chemical, Disease:");
    types overrides them (an --extra corpus)."""
    if not on:
        return []
    text = ", ".join(t.replace("_", " ") for t in (types or te.DATASETS[dataset]["types"])) + ":"
    return [p for w, _, _ in te.basic_words(text) for p in wp.encode_word(w)]


class Prompter:
    def __init__(self, wp, dataset, instruction=True, types=None, tag_id=None):
        self.wp = wp
        self.prefix = [BOS_ID] + instruction_ids(wp, dataset, instruction, types)
        self.tag_id = tag_id or TAG_ID

    def pieces(self, words):
        return [self.wp.encode_word(w) for w in words]

    def prompt(self, pieces, context=None):
        # Document context (--context-pieces): the text before the sentence,
        # closed by its own [SEP]; without it the prompt is unchanged.
        ctx = context + [SEP_ID] if context else []
        return self.prefix + ctx + [p for ps in pieces for p in ps] + [SEP_ID]

    def train_example(self, words, tags, context=None):
        """-> (ids, tag positions (index of the [TAB] whose next token is the
        tag), tag strings)."""
        pcs = self.pieces(words)
        ids = self.prompt(pcs, context)
        pos = []
        for ps, t in zip(pcs, tags):
            ids.extend(ps)
            ids.append(TAB_ID)
            pos.append(len(ids) - 1)
            ids.append(self.tag_id[t])
            ids.append(NL_ID)
        ids.append(EOS_ID)
        return ids, pos, list(tags)


def contexts_for(wp, sents_words, max_pieces):
    """Document context of each sentence: the pieces of the sentences before
    it in the same list (files keep document order), the last max_pieces of
    them. The lists cross document boundaries where the IOB files do not mark
    them, as a note's sentences never do."""
    if max_pieces <= 0:
        return [None] * len(sents_words)
    out, window = [], []
    for ws in sents_words:
        out.append(window[-max_pieces:] if window else None)
        window = (window + [p for w in ws for p in wp.encode_word(w)])[-max_pieces:]
    return out


def allowed_matrix(labels, constrain):
    """allowed[prev, cur] over label indices (prev index len(labels) = start)."""
    n = len(labels)
    a = torch.ones(n + 1, n, dtype=torch.bool)
    if constrain:
        for pi in range(n + 1):
            prev = labels[pi] if pi < n else "O"
            for ci, cur in enumerate(labels):
                if cur.startswith("I-") and prev[2:] != cur[2:]:
                    a[pi, ci] = False
    return a


@torch.no_grad()
def greedy_decode(model, prompter, sents_words, labels, constrain=True, batch_size=32,
                  record=False, contexts=None):
    """Constrained greedy decoding with a KV cache (see module doc).  Returns
    tag lists; with record, also per sentence the fed id chunks and the
    label-restricted logits at each [TAB] (the fixture for Node)."""
    model.eval()
    lab_ids = torch.tensor([TAG_ID[l] for l in labels])
    allow = allowed_matrix(labels, constrain)
    start = len(labels)
    items = [prompter.pieces(ws) for ws in sents_words]
    ctxs = contexts or [None] * len(items)
    order = sorted(range(len(items)), key=lambda i: (len(items[i]), sum(map(len, items[i]))))
    preds = [None] * len(items)
    recs = [None] * len(items)
    for b0 in range(0, len(order), batch_size):
        idx = order[b0:b0 + batch_size]
        B = len(idx)
        nw = [len(items[i]) for i in idx]
        prev = [start] * B
        tags = [[] for _ in range(B)]
        fed = [[] for _ in range(B)]
        lg = [[] for _ in range(B)]
        n_real = [0] * B
        past = None
        mask_cols = []
        for k in range(max(nw)):
            chunks = []
            for r, i in enumerate(idx):
                if k >= nw[r]:
                    chunks.append([])
                elif k == 0:
                    chunks.append(prompter.prompt(items[i], ctxs[i]) + items[i][0] + [TAB_ID])
                else:
                    chunks.append([TAG_ID[labels[prev[r]]], NL_ID] + items[i][k] + [TAB_ID])
            T = max(len(c) for c in chunks)
            ids = torch.zeros(B, T, dtype=torch.long)
            m = torch.zeros(B, T, dtype=torch.long)
            pos = torch.zeros(B, T, dtype=torch.long)
            for r, c in enumerate(chunks):
                if c:
                    ids[r, :len(c)] = torch.tensor(c)
                    m[r, :len(c)] = 1
                    pos[r, :len(c)] = torch.arange(n_real[r], n_real[r] + len(c))
            mask_cols.append(m)
            mask = torch.cat(mask_cols, dim=1)
            last = torch.tensor([[max(0, len(c) - 1)] for c in chunks])
            h, past = model.hidden(ids, mask, pos, past, sel=last)
            lo = model.logits(h[:, 0], lab_ids)  # [B, n_labels]
            for r, c in enumerate(chunks):
                if not c:
                    continue
                n_real[r] += len(c)
                sc = lo[r].masked_fill(~allow[prev[r]], float("-inf"))
                j = int(sc.argmax())
                prev[r] = j
                tags[r].append(labels[j])
                if record:
                    fed[r].append(c)
                    lg[r].append([float(x) for x in lo[r]])
        for r, i in enumerate(idx):
            preds[i] = tags[r]
            if record:
                recs[i] = {"chunks": fed[r], "tab_logits": lg[r]}
    return (preds, recs) if record else preds


def eval_split(model, prompter, sents, labels, args):
    words = [w for w, _ in sents]
    gold = [t for _, t in sents]
    pred = greedy_decode(model, prompter, words, labels, not args.no_bio_constraint,
                         args.eval_batch, contexts=contexts_for(prompter.wp, words, args.context_pieces))
    return td.full_eval(gold, pred), pred


# --------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------


def ft_batches(lengths, batch_tokens, max_batch, rng):
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    pool = 1000
    out = []
    for s in range(0, len(idx), pool):
        chunk = sorted(idx[s:s + pool], key=lambda i: lengths[i])
        cur, cur_max = [], 0
        for i in chunk:
            m = max(cur_max, lengths[i])
            if cur and (m * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
                out.append(cur)
                cur, m = [], lengths[i]
            cur.append(i)
            cur_max = m
        if cur:
            out.append(cur)
    rng.shuffle(out)
    return out


def init_tag_embeddings(model, wp, vocab, tag_id=None):
    """Start each tag token's embedding at the mean embedding of the pieces of
    its type name (plus its random init), and O at that of "O"."""
    tag_id = tag_id or TAG_ID
    with torch.no_grad():
        for t, i in tag_id.items():
            name = "O" if t == "O" else t[2:]
            ps = [p for w, _, _ in te.basic_words(name.replace("_", " ")) for p in wp.encode_word(w)]
            ps = [p for p in ps if p != UNK_ID]
            if ps:
                model.emb.weight[i] += model.table(ps).mean(0)


@torch.no_grad()
def resize_token_table(model, n):
    """Grow (new rows: the usual random init; zero vectors) or cut the token
    table to n rows: --extra's tag tokens live past the vocabulary."""
    V, d = model.emb.weight.shape
    w = model.emb.weight[:n]
    if n > V:
        w = torch.cat([w, torch.randn(n - V, d) * 0.02])
    model.emb = nn.Embedding.from_pretrained(w.clone(), freeze=False)
    if model.vproj is not None:
        vec = model.vec[:n]
        if n > V:
            vec = torch.cat([vec, torch.zeros(n - V, vec.shape[1])])
        model.vec = vec.clone()
    model.cfg["vocab_size"] = n


def finetune_name(args):
    """Checkpoint name: the dataset, or the datasets joined by '+' (multi-task),
    with -ctxN when the prompt carries N pieces of document context."""
    name = "+".join(args.datasets) + (f"+extra{len(args.extra)}" if args.extra else "")
    return name + (f"-ctx{args.context_pieces}" if args.context_pieces else "")


def epoch_examples(per_ds, mix, rng):
    """Indices of one epoch: dataset d's examples floor(w) times, plus a
    seeded random w - floor(w) share of them (--mix)."""
    out = []
    for (lo, hi), w in zip(per_ds, mix):
        idx = list(range(lo, hi))
        out += idx * int(w)
        frac = w - int(w)
        if frac > 0:
            out += rng.sample(idx, int(round(frac * len(idx))))
    return out


def stage_finetune(args):
    vocab, vocab_sha = load_or_build_vocab(args, build_ok=False)
    wp = te.WordPiece(vocab)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    datasets = args.datasets
    # --extra corpora are further tasks: trained on, never evaluated.
    extra = {x: load_extra(x) for x in args.extra}
    tasks = datasets + args.extra
    mix = (args.mix or [1.0] * len(datasets)) + (args.extra_mix or [1.0] * len(args.extra))
    task_labels = dict(LABEL_SETS)
    tag_id = dict(TAG_ID)
    for x, (_, types) in extra.items():
        task_labels[x] = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        for lab in task_labels[x]:
            tag_id.setdefault(lab, len(vocab) + len(tag_id) - len(TAG_ID))
    # One tag head over the union of the tasks' labels (ALL_TAGS order, then
    # the extra tags); each example's loss and decoding see only its own
    # task's labels. With one dataset this is exactly its label list.
    union = [t for t in tag_id if any(t in task_labels[x] for x in tasks)]
    if len(tasks) == 1:
        union = LABEL_SETS[datasets[0]]
    u_index = {l: i for i, l in enumerate(union)}
    lab_ids = torch.tensor([tag_id[l] for l in union])
    allowed_u = torch.tensor([[l in task_labels[x] for l in union] for x in tasks])
    exs, ds_of, per_ds, splits, prompters = [], [], [], {}, {}
    n_long = 0
    for di, d in enumerate(tasks):
        if d in extra:
            fit = extra[d][0][:args.limit] if args.limit else extra[d][0]
            prompters[d] = Prompter(wp, d, not args.no_instruction, extra[d][1], tag_id)
        else:
            fit, held, devel, _ = te.load_dataset(d)
            if args.limit:
                fit, held, devel = fit[:args.limit], held[:max(50, args.limit // 5)], devel[:max(50, args.limit // 5)]
            prompters[d] = Prompter(wp, d, not args.no_instruction)
            splits[d] = (held, devel)
        ctxs = contexts_for(wp, [w for w, _ in fit], args.context_pieces)
        lo = len(exs)
        for (w, t), c in zip(fit, ctxs):
            e = prompters[d].train_example(w, t, c)
            if len(e[0]) > args.max_len:
                n_long += 1
                continue
            exs.append(e)
            ds_of.append(di)
        per_ds.append((lo, len(exs)))
    lengths = [len(e[0]) for e in exs]
    n_tok = sum(lengths[i] for i in epoch_examples(per_ds, mix, random.Random(0)))
    print(f"finetune {finetune_name(args)}: {len(exs)} train sequences ({n_long} longer than {args.max_len} "
          f"dropped), {n_tok:,} tokens/epoch with mix {mix}, context {args.context_pieces} pieces; "
          + "; ".join(f"{d}: {hi - lo} train" + (f", held-out {len(splits[d][0])}, devel {len(splits[d][1])}"
                                                 if d in splits else f" ({len(task_labels[d]) // 2} types)")
                      for d, (lo, hi) in zip(tasks, per_ds))
          + f"; prep {time.time() - t0:.0f}s", flush=True)

    model = None
    pre = None
    if args.init != "none":
        ck = torch.load(args.init)
        assert ck["vocab_sha256"] == vocab_sha, "pretrained checkpoint has another vocabulary"
        model = model_from_cfg(ck["model_cfg"], args.dropout, args.attn_dropout)
        model.load_state_dict(ck["model"])
        st = ck["state"]
        pre = {"checkpoint": os.path.abspath(args.init), "steps": st["step"], "tokens": st["tokens"],
               "minutes": round(st["seconds"] / 60, 1), "seq_len": ck["args"]["seq_len"],
               "batch_size": ck["args"]["batch_size"], "lr": ck["args"]["lr"],
               "final_train_loss": st["history"][-1]["loss"] if st["history"] else None,
               "val_loss": st["val"][-1]["val_loss"] if st["val"] else None,
               "stopped": st.get("final")}
        print(f"init from {args.init}: step {st['step']}, {st['tokens']:,} tokens, val loss {pre['val_loss']}",
              flush=True)
    else:
        model = make_model(args, len(vocab), args.dropout, args.attn_dropout)
        print("init: random (no pretraining)", flush=True)
    assert model.cfg["vocab_size"] == len(vocab), "the model's token table is not the vocabulary"
    if len(tag_id) > len(TAG_ID):
        resize_token_table(model, len(vocab) + len(tag_id) - len(TAG_ID))
    if not args.no_tag_init:
        init_tag_embeddings(model, wp, vocab, tag_id)
    print(f"model: {count_params(model):,} params", flush=True)
    opt = adamw(model, args.lr, args.weight_decay)
    steps_per_epoch = len(ft_batches([lengths[i] for i in epoch_examples(per_ds, mix, random.Random(0))],
                                     args.batch_tokens, args.max_batch, random.Random(0)))
    total_steps = steps_per_epoch * args.epochs
    budget_s = args.time_budget * 60 if args.time_budget else 0
    best = (-1.0, None, None)
    history = []
    step = 0
    t_start = time.time()
    train_tokens = 0
    train_time = 0.0
    stop = False
    ep = 0
    last_eval_s = 0.0

    def evaluate_held():
        res = {d: eval_split(model, prompters[d], splits[d][0], LABEL_SETS[d], args)[0] for d in datasets}
        return res, round(sum(r["f1"] for r in res.values()) / len(res), 4)

    for ep in range(1, args.epochs + 1):
        model.train()
        tot, nb, tok_ep, t_ep_train = 0.0, 0, 0, 0.0
        ep_idx = epoch_examples(per_ds, mix, rng) if len(tasks) > 1 or args.mix else list(range(len(exs)))
        ep_batches = [[ep_idx[j] for j in b]
                      for b in ft_batches([lengths[i] for i in ep_idx], args.batch_tokens, args.max_batch, rng)]
        n_b = len(ep_batches)  # varies a little with the shuffle
        ep_eval_at = set(int(round(n_b * (k + 1) / args.evals_per_epoch))
                         for k in range(args.evals_per_epoch))
        for bi, b in enumerate(ep_batches, 1):
            t_s = time.time()
            progress = step / total_steps
            if budget_s:
                progress = max(progress, (time.time() - t_start) / budget_s)
            set_lr(opt, args.lr * lr_factor(step, args.warmup_steps, progress, args.final_lr_frac))
            T = max(lengths[i] for i in b)
            ids = torch.zeros(len(b), T, dtype=torch.long)
            mask = torch.zeros(len(b), T, dtype=torch.long)
            K = max(len(exs[i][1]) for i in b)
            sel = torch.zeros(len(b), K, dtype=torch.long)
            tgt = torch.full((len(b), K), -100, dtype=torch.long)
            for r, i in enumerate(b):
                e = exs[i]
                ids[r, :len(e[0])] = torch.tensor(e[0])
                mask[r, :len(e[0])] = 1
                sel[r, :len(e[1])] = torch.tensor(e[1])
                tgt[r, :len(e[1])] = torch.tensor([u_index[t] for t in e[2]])
            if args.tag_noise > 0:  # corrupt fed tags (targets stay gold)
                real = tgt >= 0
                noise = (torch.rand(sel.shape) < args.tag_noise) & real
                rnd = lab_ids[torch.randint(len(union), sel.shape)]
                rr = torch.arange(len(b))[:, None].expand_as(sel)
                ids[rr[noise], sel[noise] + 1] = rnd[noise]
            h, _ = model.hidden(ids, mask, sel=sel)
            lo = model.logits(h, lab_ids)
            if len(tasks) > 1:
                row_ok = allowed_u[torch.tensor([ds_of[i] for i in b])]
                lo = lo.masked_fill(~row_ok[:, None, :], NEG)
            loss = F.cross_entropy(lo.reshape(-1, len(union)), tgt.reshape(-1),
                                   label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            step += 1
            dt = time.time() - t_s
            t_ep_train += dt
            train_time += dt
            ntok = int(mask.sum())
            tok_ep += ntok
            train_tokens += ntok
            tot += float(loss)
            nb += 1
            if bi % args.log_every == 0:
                print(f"  epoch {ep} batch {bi}/{n_b} loss {tot / nb:.4f} "
                      f"{tok_ep / t_ep_train:.0f} tok/s (real tokens, train step only)", flush=True)
            if bi in ep_eval_at:
                t_e = time.time()
                res_by, f1 = evaluate_held()
                last_eval_s = time.time() - t_e
                elapsed = time.time() - t_start
                rec = {"epoch": round(ep - 1 + bi / n_b, 2), "step": step,
                       "train_loss": round(tot / nb, 4), "heldout_f1": f1,
                       "tok_s": round(tok_ep / t_ep_train, 1), "minutes": round(elapsed / 60, 2)}
                if len(datasets) == 1:
                    rec["heldout_p"], rec["heldout_r"] = res_by[datasets[0]]["precision"], res_by[datasets[0]]["recall"]
                else:
                    rec["heldout_f1_by_dataset"] = {d: r["f1"] for d, r in res_by.items()}
                history.append(rec)
                detail = " ".join(f"{d} {r['f1']} (P {r['precision']} R {r['recall']})" for d, r in res_by.items())
                print(f"eval epoch {rec['epoch']}: loss {rec['train_loss']:.4f} held-out F1 {f1}: {detail}; "
                      f"{rec['tok_s']:.0f} tok/s, eval {last_eval_s:.0f}s, total {elapsed / 60:.1f} min", flush=True)
                model.train()
                if f1 > best[0]:
                    best = (f1, rec["epoch"], {k: v.detach().clone() for k, v in model.state_dict().items()})
                # stop when the next eval interval would overrun the budget
                per_interval = (t_ep_train / bi) * (n_b / args.evals_per_epoch) + last_eval_s
                if budget_s and elapsed + per_interval > budget_s:
                    print("time budget reached", flush=True)
                    stop = True
                    break
        if stop:
            break
    wall = time.time() - t_start
    model.load_state_dict(best[2])
    if len(tag_id) > len(TAG_ID):  # the extra tag rows go: the saved model has the shared vocabulary
        resize_token_table(model, len(vocab))
    devel_by, dev_s_by = {}, {}
    for d in datasets:
        t_d = time.time()
        dres, _ = eval_split(model, prompters[d], splits[d][1], LABEL_SETS[d], args)
        dev_s_by[d] = round(time.time() - t_d, 1)
        devel_by[d] = dres
        b3 = dres["by_entity_words"]["3+"]
        print(f"best epoch {best[1]} held-out F1 {best[0]}; {d} DEVEL strict F1 {dres['f1']} "
              f"(P {dres['precision']} R {dres['recall']}); 3+ words F1 {b3['f1']} R {b3['recall']} "
              f"(n={b3['gold']}); devel decode {dev_s_by[d]:.0f}s", flush=True)
        print(f"devel detail {d}: " + json.dumps(dres), flush=True)
    d0 = datasets[0]
    facts = {
        "dataset": d0 if len(datasets) == 1 else "+".join(datasets), "datasets": datasets,
        "mix": mix[:len(datasets)], "finetune_name": finetune_name(args),
        "context_pieces": args.context_pieces, "seed": args.seed,
        "labels": LABEL_SETS[d0] if len(datasets) == 1 else union,
        "instruction": not args.no_instruction, "bio_constraint": not args.no_bio_constraint,
        "train_sequences": len(exs), "tokens_per_epoch": n_tok, "epochs_run": ep,
        "best_epoch": best[1], "heldout_f1": best[0], "history": history,
        "finetune_seconds": round(wall, 1), "finetune_train_seconds": round(train_time, 1),
        "finetune_tok_s": round(train_tokens / max(train_time, 1e-9), 1),
        "devel_decode_seconds": dev_s_by[d0] if len(datasets) == 1 else dev_s_by,
        "devel_sentences": len(splits[d0][1]) if len(datasets) == 1 else {d: len(splits[d][1]) for d in datasets},
        "devel_f1": devel_by[d0]["f1"] if len(datasets) == 1 else {d: r["f1"] for d, r in devel_by.items()},
        "devel": devel_by[d0] if len(datasets) == 1 else devel_by, "pretraining": pre,
        "lr": args.lr, "batch_tokens": args.batch_tokens, "dropout": args.dropout,
        "limit": args.limit,
    }
    if args.extra:
        facts["extra"] = {x: {"train_sequences": hi - lo, "mix": w, "types": extra[x][1]}
                          for x, (lo, hi), w in zip(tasks[len(datasets):], per_ds[len(datasets):],
                                                    mix[len(datasets):])}
    path = os.path.join(args.work, f"finetune-{finetune_name(args)}.pt")
    atomic_save({"model": model.state_dict(), "model_cfg": model.cfg, "vocab_sha256": vocab_sha,
                 "facts": facts, "args": vars(args)}, path)
    print(f"saved {path} ({wall / 60:.1f} min fine-tuning)", flush=True)


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------

FIXTURE_WORDS = [
    "Naloxone reverses the antihypertensive effect of clonidine .",
    "Patient with type 2 diabetes mellitus and chronic kidney disease was started on metformin 500 mg BID .",
    "IL - 2 gene expression requires NF - kappa B in human T cells .",
    "Selegiline - induced hypotension",
    "cisplatin",
    "The combination of doxorubicin and cyclophosphamide caused acute renal failure and severe "
    "neutropenia in two patients with metastatic breast cancer .",
    "Café - au - lait spots ; hx of neurofibromatosis ( NF1 ) — seen 3 / 4 / 2021 ± 2 wks .",
]


@torch.no_grad()
def padding_check(model, seqs):
    """max |alone - padded batch| over real positions, for full logits."""
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    batched, _ = model(ids, mask, pos, empty_past(model, len(seqs)))
    worst = 0.0
    for i, s in enumerate(seqs):
        one, _ = model(torch.tensor([s]))
        worst = max(worst, float((one[0] - batched[i, :len(s)]).abs().max()))
    return worst, ids, mask, batched


def empty_past(model, B):
    c = model.cfg
    hd = c["d"] // c["heads"]
    return [(torch.zeros(B, c["heads"], 0, hd), torch.zeros(B, c["heads"], 0, hd))
            for _ in range(c["layers"])]


@torch.no_grad()
def kv_check(model, seq, split=(5, 1, 1, 3)):
    """Full-sequence logits vs prefill + incremental steps (one-token and
    multi-token) with the KV cache."""
    full, _ = model(torch.tensor([seq]))
    past = empty_past(model, 1)
    outs, p, mask = [], 0, []
    sizes = list(split) + [len(seq)]
    for n in sizes:
        if p >= len(seq):
            break
        n = min(n, len(seq) - p)
        ids = torch.tensor([seq[p:p + n]])
        mask.append(torch.ones(1, n, dtype=torch.long))
        lo, past = model(ids, torch.cat(mask, 1), torch.arange(p, p + n)[None], past)
        outs.append(lo)
        p += n
    return float((torch.cat(outs, 1) - full).abs().max())


def stage_export(args):
    import onnx
    vocab, vocab_sha = load_or_build_vocab(args, build_ok=False)
    wp = te.WordPiece(vocab)
    ck = torch.load(args.checkpoint or os.path.join(args.work, f"finetune-{args.dataset}.pt"))
    assert ck["vocab_sha256"] == vocab_sha
    facts = ck["facts"]
    if facts.get("context_pieces"):
        raise SystemExit("export: this checkpoint was trained with document context, which the bundle's "
                         "prompt block (and the TypeScript tagger) do not describe yet")
    if args.dataset not in facts.get("datasets", [facts["dataset"]]):
        raise SystemExit(f"export: the checkpoint was not trained on {args.dataset}")
    model = model_from_cfg(ck["model_cfg"])
    model.load_state_dict(ck["model"])
    model.fold_vectors()
    model.eval()
    cfg = model.cfg
    labels = LABEL_SETS[args.dataset]
    prompter = Prompter(wp, args.dataset, facts["instruction"])
    os.makedirs(args.out, exist_ok=True)
    keep = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.txt", "model.onnx", "README.md"]
    for f in os.listdir(args.out):
        if f not in keep:
            os.remove(os.path.join(args.out, f))
    params = count_params(model)

    # checks in torch: padding invariance and KV cache == full pass
    fx_words = [s.split() for s in FIXTURE_WORDS]
    _, held, _, _ = te.load_dataset(args.dataset)
    fx_words += [w for w, _ in held[:3]]  # held-out TRAIN sentences (never devel)
    seqs = []
    for ws in fx_words:
        ids, _, _ = prompter.train_example(ws, ["O"] * len(ws))
        seqs.append(ids)
    worst_pad, _, _, _ = padding_check(model, seqs)
    worst_kv = max(kv_check(model, s) for s in seqs)
    print(f"torch checks: max |alone - padded batch| = {worst_pad:.2e}; "
          f"max |KV-cache steps - full pass| = {worst_kv:.2e}", flush=True)
    assert worst_pad < 1e-4 and worst_kv < 1e-4, (worst_pad, worst_kv)
    # decoding: batched (holes in the cache) == one by one
    constrain = facts["bio_constraint"]
    tags_b, recs = greedy_decode(model, prompter, fx_words, labels, constrain, 32, record=True)
    tags_1 = [greedy_decode(model, prompter, [ws], labels, constrain, 1)[0] for ws in fx_words]
    assert tags_b == tags_1, "batched and single decoding disagree"

    # int8 storage only if the fp32 bundle would be too big
    tok_json = tokenizer_json(vocab)
    tok_bytes = len(json.dumps(tok_json, ensure_ascii=False).encode("utf8"))
    fp32_mb = (params * 4 + 2 * tok_bytes) / 1e6
    qs = None
    if args.quantize == "int8" or (args.quantize == "auto" and fp32_mb > args.max_mb):
        qs = td.fake_quantize(model, min_numel=4096)
        print(f"int8 weights: {len(qs)} matrices (fp32 bundle would be {fp32_mb:.1f} MB)", flush=True)
        tags_b, recs = greedy_decode(model, prompter, fx_words, labels, constrain, 32, record=True)

    # ONNX export (traced with a non-empty past so the cache path is in the graph)
    B, T, P = 2, 3, 2
    hd = cfg["d"] // cfg["heads"]
    ex_ids = torch.tensor([[10, 11, 12], [13, 14, 0]])
    ex_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    ex_pos = torch.tensor([[2, 3, 4], [2, 3, 4]])
    ex_past = []
    for _ in range(cfg["layers"]):
        ex_past += [torch.randn(B, cfg["heads"], P, hd), torch.randn(B, cfg["heads"], P, hd)]
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "past_sequence_length + sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(cfg["layers"]):
        for kv in ("key", "value"):
            n_in, n_out = f"past_key_values.{i}.{kv}", f"present.{i}.{kv}"
            in_names.append(n_in)
            out_names.append(n_out)
            dyn[n_in] = {0: "batch_size", 2: "past_sequence_length"}
            dyn[n_out] = {0: "batch_size", 2: "past_sequence_length + sequence_length"}
    onnx_path = os.path.join(args.out, "model.onnx")
    # no constant folding: it would store a transposed copy of the tied
    # embedding for the output layer (onnxruntime folds what it needs at load)
    torch.onnx.export(OnnxWrapper(model), (ex_ids, ex_mask, ex_pos, *ex_past), onnx_path,
                      input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                      opset_version=args.opset, do_constant_folding=False)
    onnx.checker.check_model(onnx.load(onnx_path))
    if qs:
        names = td.quantize_onnx(onnx_path, model, qs)
        print(f"int8 matrices in the graph: {len(names)}", flush=True)

    # reference logits for the Node check: a right-padded prefill batch
    # (prompt + first word + [TAB]) and the restricted logits of every step
    with torch.no_grad():
        pre = [r["chunks"][0] for r in recs]
        Tm = max(len(s) for s in pre)
        ids = torch.zeros(len(pre), Tm, dtype=torch.long)
        mask = torch.zeros(len(pre), Tm, dtype=torch.long)
        for i, s in enumerate(pre):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        lo, _ = model(ids, mask, pos, empty_past(model, len(pre)))
        last_logits = [lo[i, len(s) - 1].tolist() for i, s in enumerate(pre)]

    mean_len = facts["tokens_per_epoch"] / max(1, facts["train_sequences"])
    fpt_full = flops_per_token(cfg, mean_len / 2, True)
    fpt_body = flops_per_token(cfg, mean_len / 2, False)
    multi = len(facts.get("datasets", [])) > 1
    d = facts["devel"][args.dataset] if multi else facts["devel"]
    ft_key = facts.get("finetune_name", facts["dataset"])
    if multi or ft_key != args.dataset:  # a multi-task run's commands (its finetune key names all its tasks)
        args.commands = [c for k in ("vocab", "pretrain", f"finetune:{ft_key}", f"export:{args.dataset}")
                         for c in args.history.get(k, [])]
    enc_cfg = os.path.join(REPO, "models", f"{args.dataset}-encoder", "config.json")
    enc_params = 1770000
    if os.path.exists(enc_cfg):
        with open(enc_cfg) as f:
            enc_params = json.load(f).get("bioner", {}).get("params", enc_params)
    meta = {
        "name": f"{args.dataset}-generative",
        "version": args.version,
        "dataset": args.dataset,
        "seed": facts["seed"],
        "params": params,
        "flops_per_token": fpt_full,
        "flops_per_token_without_lm_head": fpt_body,
        "flops_mean_context": round(mean_len / 2, 1),
        "encoder_reference_params": enc_params,
        "multitask": ({"datasets": facts["datasets"], "mix": facts["mix"], "extra": facts.get("extra")}
                      if multi or facts.get("extra") else None),
        "pretraining": facts["pretraining"],
        "finetune": {k: facts[k] for k in ("train_sequences", "tokens_per_epoch", "epochs_run",
                                           "best_epoch", "heldout_f1", "finetune_seconds",
                                           "finetune_tok_s", "lr", "batch_tokens", "dropout",
                                           "history", "limit")},
        "devel_f1": d["f1"], "devel_precision": d["precision"], "devel_recall": d["recall"],
        "devel_f1_by_entity_words": {k: v["f1"] for k, v in d["by_entity_words"].items()},
        "devel_recall_by_entity_words": {k: v["recall"] for k, v in d["by_entity_words"].items()},
        "devel": d,
        "devel_decoding": "constrained greedy, KV cache (torch, fp32 weights"
                          + (", scored before int8 rounding; not re-scored" if qs else "") + ")"
                          + ("; BIO constraint" if constrain else ""),
        "vocab_sha256": vocab_sha,
        "quantization": "int8 + per-row scale" if qs else None,
        "torch": torch.__version__,
        "commands": args.commands,
    }
    config = {
        "architectures": ["GenerativeDecoderForCausalLM"],
        "model_type": "bioner-generative-decoder",
        "task": "text-generation (NER answer lines: word [TAB] tag [NL])",
        "vocab_size": len(vocab),
        "n_layer": cfg["layers"], "n_head": cfg["heads"], "n_embd": cfg["d"],
        "n_inner": cfg["ff"], "head_dim": hd,
        "num_hidden_layers": cfg["layers"], "num_attention_heads": cfg["heads"],
        "hidden_size": cfg["d"], "num_key_value_heads": cfg["heads"],
        "activation_function": "gelu", "position_embedding_type": "rotary",
        "rope_theta": cfg["rope_base"], "rotary_dim": hd, "rope_layout": "rotate_half (GPT-NeoX)",
        "tie_word_embeddings": True, "use_cache": True,
        "max_position_embeddings": 2048,
        "trained_sequence_length": (facts["pretraining"] or {}).get("seq_len"),
        "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID,
        "unk_token_id": UNK_ID, "sep_token_id": SEP_ID, "tab_token_id": TAB_ID,
        "newline_token_id": NL_ID,
        "tag_tokens": {t: TAG_ID[t] for t in ALL_TAGS},
        "tag_token_strings": {t: TAG_TOKEN[t] for t in ALL_TAGS},
        "label_sets": LABEL_SETS,
        "labels": labels,
        "label_token_ids": [TAG_ID[l] for l in labels],
        "prompt": {
            "layout": "[BOS] instruction sentence-pieces [SEP] (word-pieces [TAB] tag [NL])* [EOS]",
            "prefix_ids": prompter.prefix,
            "suffix_ids": [SEP_ID],
            "instruction": [vocab[i] for i in prompter.prefix[1:]],
            "word_pieces": "tokenizer.encode(word, {add_special_tokens: false}) per BERT-basic word",
            "decode": "feed prompt + word_1 pieces + [TAB]; tag_1 = argmax over label_token_ids of the "
                      "last logits (I-X only after B-X/I-X); then feed [tag_k-1] [NL] word_k pieces [TAB], ...",
            "bio_constraint": constrain,
        },
        "onnx": {
            "inputs": in_names, "outputs": out_names, "opset": args.opset,
            "past_shape": "[batch, n_head, past_len, head_dim] float32; empty (past_len 0) for the prefill",
            "attention_mask": "[batch, past_len + seq], 1 = real token; pads may stay in the cache as holes",
            "position_ids": "[batch, seq], number of real tokens before each token",
            "weights": "int8 + per-row fp32 scale (Cast * scale, folded at load)" if qs else "float32",
        },
        "bioner": meta,
    }
    te.write_json(os.path.join(args.out, "config.json"), config)
    te.write_json(os.path.join(args.out, "tokenizer.json"), tok_json)
    te.write_json(os.path.join(args.out, "tokenizer_config.json"), TOKENIZER_CONFIG)
    te.write_json(os.path.join(args.out, "special_tokens_map.json"), SPECIAL_TOKENS_MAP)
    with open(os.path.join(args.out, "vocab.txt"), "w", encoding="utf8") as f:
        f.write("\n".join(vocab) + "\n")
    write_model_card(args, config, meta, facts, worst_pad, worst_kv)
    fixture = {
        "bundle": os.path.abspath(args.out),
        "labels": labels,
        "label_token_ids": [TAG_ID[l] for l in labels],
        "bio_constraint": constrain,
        "prefix_ids": prompter.prefix,
        "words": fx_words,
        "pieces": [[wp.encode_word(w) for w in ws] for ws in fx_words],
        "tags": tags_b,
        "steps": recs,
        "prefill_last_logits": last_logits,
    }
    fx_path = args.fixture or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                           os.path.basename(os.path.abspath(args.out)) + "-fixture.json")
    te.write_json(fx_path, fixture, indent=None)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"bundle {args.out}: {total / 1e6:.2f} MB ({params:,} params, "
          f"{'int8' if qs else 'fp32'}); fixture {fx_path}", flush=True)
    for ws, tg in list(zip(fx_words, tags_b))[:3]:
        print("  " + " ".join(f"{w}/{t}" for w, t in zip(ws, tg)), flush=True)
    assert total <= 25e6 or args.quantize == "none", f"bundle {total / 1e6:.1f} MB > 25 MB"


def write_model_card(args, config, meta, facts, worst_pad, worst_kv):
    d = meta["devel"]
    pre = meta["pretraining"] or {}
    ft = meta["finetune"]
    ds = te.DATASETS[args.dataset]
    by = d["by_entity_words"]
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        f"From-scratch **generative decoder-only LM** for biomedical NER on `{args.dataset}`: it "
        "reads a sentence and writes one `word [TAB] tag [NL]` line per word, the answer format of "
        "the generative LLM route. The tags are chosen by constrained greedy decoding over the "
        "dataset's tag tokens. Trained on CPU with no pretrained weights from elsewhere. "
        "**A reference/test model, not clinical-grade**: trained on PubMed text, not clinical notes, "
        "and never validated for clinical use.",
        "",
        "## Data",
        "",
        "- Pretraining (shared by the three datasets' bundles): `/tmp/bioner-pretrain/corpus.txt`, "
        "built by `training/build_pretrain_corpus.py` from pubmed-unlabeled, the train splits of "
        "BC5CDR, NCBI-disease and JNLPBA, extra-labeled train tokens and mtsamples (no devel text).",
        f"- Fine-tuning: {ds['desc']} (`/work/shared/data/{ds['dir']}`), train split; its last 10% "
        "held out for checkpoint selection; devel decoded once for the score below.",
        f"- Licence: see `/work/shared/data/{ds['licence']}`. No corpus text is in this bundle; "
        "the vocabulary is derived from it.",
        "",
        "## Model",
        "",
        f"- Decoder-only pre-LN transformer: {config['n_layer']} layers, d={config['n_embd']}, "
        f"{config['n_head']} heads, GELU MLP {config['n_inner']}, rotary positions, tied "
        f"input/output embeddings; {meta['params']:,} parameters "
        f"({meta['params'] / meta['encoder_reference_params']:.1f}x the {meta['encoder_reference_params'] / 1e6:.2f}M "
        f"{meta['dataset']} encoder).",
        f"- About {meta['flops_per_token'] / 1e6:.1f} MFLOPs per token with full-vocabulary logits "
        f"({meta['flops_per_token_without_lm_head'] / 1e6:.1f} without the output layer) at a "
        f"mean context of {meta['flops_mean_context']:.0f} tokens.",
        f"- Vocabulary: {config['vocab_size']} cased WordPiece entries (BERT basic words), including "
        "[PAD] [UNK] [BOS] [EOS] [SEP] [TAB] [NL] and one [TAG:x] token per BIO tag of the union of "
        "the three label sets (`config.json` `tag_tokens`).",
        f"- Labels of this bundle: {', '.join(config['labels'])}.",
        "",
        "## Prompt and decoding",
        "",
        "```",
        config["prompt"]["layout"],
        "```",
        "",
        f"Prefix ids (BOS + instruction `{' '.join(config['prompt']['instruction'])}`): "
        f"`{config['prompt']['prefix_ids']}`. Feed the prompt, the first word's pieces and [TAB]; pick "
        "the tag as the argmax of the last logits over `label_token_ids` only "
        + ("(I-X only after B-X or I-X); " if config["prompt"]["bio_constraint"] else "; ")
        + "then feed `[tag] [NL]` + next word's pieces + [TAB], and so on.",
        "",
        "## ONNX interface (`model.onnx`, opset "
        f"{config['onnx']['opset']})",
        "",
        "- inputs: `input_ids` int64 [batch, seq], `attention_mask` int64 [batch, past_len + seq], "
        "`position_ids` int64 [batch, seq], `past_key_values.{i}.key|value` float32 "
        "[batch, heads, past_len, head_dim] (empty tensors, past_len 0, for the prefill).",
        "- outputs: `logits` float32 [batch, seq, vocab], `present.{i}.key|value` "
        "[batch, heads, past_len + seq, head_dim].",
        "- Right-padded batches are exact: pads get attention_mask 0 (and may stay in the cache as "
        "holes); position ids count real tokens only. Checked in torch: max |alone - padded batch| "
        f"= {worst_pad:.1e}, max |KV-cache steps - full pass| = {worst_kv:.1e}.",
        f"- Weights: {config['onnx']['weights']}.",
        "",
        "## Training",
        "",
        f"- Pretraining: causal LM, {pre.get('tokens', 0):,} tokens ({pre.get('steps', 0)} steps of "
        f"{pre.get('batch_size')} x {pre.get('seq_len')}), {pre.get('minutes')} min on 2 shared CPU "
        f"cores, final validation loss {pre.get('val_loss')}.",
        f"- Fine-tuning: loss on the tag tokens only; {ft['epochs_run']} epoch(s), best "
        f"{ft['best_epoch']} by held-out F1 {ft['heldout_f1']}; {ft['finetune_seconds'] / 60:.1f} min, "
        f"{ft['finetune_tok_s']:.0f} tokens/s.",
        "",
        "## Results (devel, strict entity F1, conlleval chunks, script-computed)",
        "",
        f"- **F1 {d['f1']}** (P {d['precision']}, R {d['recall']}; {d['gold']} gold entities).",
        "- By entity length 1 / 2 / 3+ words: F1 "
        f"{by['1']['f1']} / {by['2']['f1']} / {by['3+']['f1']}, recall "
        f"{by['1']['recall']} / {by['2']['recall']} / {by['3+']['recall']}.",
        "- Per type: " + ", ".join(f"{t} {v['f1']} (n={v['gold']})" for t, v in d["per_type"].items()) + ".",
        "",
        "## Reproduce",
        "",
        "```",
        *meta["commands"],
        "```",
        "",
    ]
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf8") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(
        description="Generative decoder-only NER LM for bioner-router: vocab, pretrain, finetune, "
        "export stages (design: the module docstring; plan: training/README-generative.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("common")
    g.add_argument("--stage", required=True, choices=["vocab", "pretrain", "finetune", "export"],
                   help="vocab: build the WordPiece vocabulary; pretrain: causal LM on the corpus; "
                        "finetune: NER answer format on --dataset; export: ONNX bundle for --dataset")
    g.add_argument("--work", default="/tmp/bioner-gen",
                   help="state directory: vocab.txt, tokenizer.json, corpus id cache, pretrain.pt, "
                        "finetune-<dataset>.pt")
    g.add_argument("--corpus", default="/tmp/bioner-pretrain/corpus.txt",
                   help="pretraining corpus, one sentence a line, BERT-basic words separated by spaces "
                        "(training/build_pretrain_corpus.py)")
    g.add_argument("--seed", type=int, default=13, help="seed of every random choice")
    g.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on the shared 2-core box)")
    g.add_argument("--limit", type=int, default=0,
                   help="smoke runs: vocab/pretrain use the first N corpus lines; finetune the first N "
                        "train sentences and max(50, N/5) held-out and devel sentences (0 = all)")
    g.add_argument("--time-budget", type=float, default=0,
                   help="minutes. pretrain: total training minutes over all resumed runs; the LR "
                        "schedule follows the clock and the run stops when it ends. finetune: the LR "
                        "schedule follows the clock and training stops before an eval interval that "
                        "would overrun (0 = off)")
    g = ap.add_argument_group("vocabulary")
    g.add_argument("--vocab-words", type=int, default=5000, help="most frequent whole words (seen >= 2 times)")
    g.add_argument("--vocab-pieces", type=int, default=2800,
                   help="word prefixes and ## substrings added after the words")
    g = ap.add_argument_group("model (pretrain; later stages read it from the checkpoint)")
    g.add_argument("--hidden", type=int, default=256, help="model width d")
    g.add_argument("--layers", type=int, default=5, help="transformer blocks")
    g.add_argument("--heads", type=int, default=4, help="attention heads")
    g.add_argument("--ff", type=int, default=1024, help="MLP width")
    g.add_argument("--rope-base", type=float, default=10000.0, help="rotary base (theta)")
    g.add_argument("--vectors", default=None,
                   help="fastText .bin (training/train_vectors.sh): frozen sub-word vectors projected and added to "
                        "the tied token embedding (folded into it at export; the bundle is unchanged in shape)")
    g = ap.add_argument_group("optimisation (pretrain and finetune)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 pretrain, 5e-4 finetune)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decay on matrices")
    g.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    g.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default 100 pretrain, 50 finetune)")
    g.add_argument("--final-lr-frac", type=float, default=0.1, help="cosine decay ends at lr x this")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout on embeddings and residual branches (default 0.0 pretrain, 0.1 finetune)")
    g.add_argument("--attn-dropout", type=float, default=0.0,
                   help="dropout on attention probabilities (costly on CPU: Bernoulli over B x H x T x T)")
    g.add_argument("--log-every", type=int, default=None, help="log every N steps (default 10 pretrain, 50 finetune)")
    g = ap.add_argument_group("pretrain")
    g.add_argument("--seq-len", type=int, default=256, help="packed sequence length")
    g.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    g.add_argument("--steps", type=int, default=100000,
                   help="planned steps (the schedule's length when no --time-budget; a cap otherwise)")
    g.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps")
    g.add_argument("--eval-every", type=int, default=200, help="validation loss every N steps (0 = only at the end)")
    g.add_argument("--val-chunks", type=int, default=64, help="chunks held out for the validation loss")
    g.add_argument("--resume", action="store_true", help="continue from --work/pretrain.pt")
    g.add_argument("--grow-from", default=None,
                   help="start a deeper model (--layers) from this shallower pretrain.pt (depth up-scaling); "
                        "the data stream continues where that run stopped")
    g = ap.add_argument_group("finetune")
    g.add_argument("--dataset", help="finetune / export: the NER dataset (" + ", ".join(sorted(te.DATASETS))
                   + "); finetune also takes a comma list for one multi-task model")
    g.add_argument("--mix", default=None,
                   help="multi-task: comma list of epochs-per-epoch for each --dataset (e.g. 2,2,0.5); "
                        "a fraction takes a seeded random share each epoch")
    g.add_argument("--extra", default=None,
                   help="multi-corpus: also train on these extra-labeled corpora, comma-separated, or all "
                        "(" + ", ".join(EXTRA_CORPORA) + "), each with its own type names as the "
                        "instruction; trained on, not evaluated")
    g.add_argument("--extra-mix", default=None,
                   help="share of each --extra corpus per epoch, like --mix (one number: all alike; default 1)")
    g.add_argument("--context-pieces", type=int, default=0,
                   help="document context: prepend up to N pieces of the preceding sentences to the prompt")
    g.add_argument("--init", default=None,
                   help="pretrained checkpoint to start from (default --work/pretrain.pt; 'none' = random)")
    g.add_argument("--epochs", type=int, default=6, help="planned epochs (the schedule's length without --time-budget)")
    g.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per batch")
    g.add_argument("--max-batch", type=int, default=32, help="sequences per batch at most")
    g.add_argument("--max-len", type=int, default=1024, help="drop training sequences longer than this")
    g.add_argument("--evals-per-epoch", type=int, default=2, help="held-out evaluations per epoch")
    g.add_argument("--eval-batch", type=int, default=32, help="sentences per decoding batch")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="on the tag cross-entropy")
    g.add_argument("--tag-noise", type=float, default=0.0,
                   help="probability of feeding a random tag instead of the gold previous tag "
                        "(against exposure bias; targets stay gold)")
    g.add_argument("--no-instruction", action="store_true", help="no entity-type instruction in the prompt")
    g.add_argument("--no-bio-constraint", action="store_true", help="allow I-X after O / another type when decoding")
    g.add_argument("--no-tag-init", action="store_true",
                   help="keep the random init of the tag tokens (default: add the mean embedding of the type name)")
    g = ap.add_argument_group("export")
    g.add_argument("--out", default=None, help="bundle directory (default --work/<dataset>-generative)")
    g.add_argument("--checkpoint", default=None,
                   help="fine-tuned checkpoint (default --work/finetune-<dataset>.pt; a multi-task one works too)")
    g.add_argument("--fixture", default=None, help="fixture path (default <out>-fixture.json)")
    g.add_argument("--opset", type=int, default=14, help="ONNX opset")
    g.add_argument("--max-mb", type=float, default=25.0, help="int8 weights if the fp32 bundle would exceed this")
    g.add_argument("--quantize", choices=["auto", "int8", "none"], default="auto", help="weight storage")
    g.add_argument("--version", default="0.1.0", help="bundle version")
    args = ap.parse_args()

    pre = args.stage in ("vocab", "pretrain")
    if args.lr is None:
        args.lr = 1e-3 if pre else 5e-4
    if args.warmup_steps is None:
        args.warmup_steps = 100 if pre else 50
    if args.dropout is None:
        args.dropout = 0.0 if pre else 0.1
    if args.log_every is None:
        args.log_every = 10 if pre else 50
    if args.init is None:
        args.init = os.path.join(args.work, "pretrain.pt")
    if args.stage in ("finetune", "export") and not args.dataset:
        ap.error("--dataset is required for finetune and export")
    args.datasets = args.dataset.split(",") if args.dataset else []
    for d in args.datasets:
        if d not in te.DATASETS:
            ap.error(f"--dataset: unknown dataset {d!r} (choose from {', '.join(sorted(te.DATASETS))})")
    if args.stage == "export" and len(args.datasets) != 1:
        ap.error("--dataset: export takes one dataset (use --checkpoint for a multi-task model)")
    if args.mix is not None:
        args.mix = [float(x) for x in args.mix.split(",")]
        if len(args.mix) != len(args.datasets) or min(args.mix) <= 0:
            ap.error("--mix: one positive number per --dataset")
    args.extra = [x for x in (args.extra or "").split(",") if x]
    if args.extra == ["all"]:
        args.extra = list(EXTRA_CORPORA)
    for x in args.extra:
        if x not in EXTRA_CORPORA:
            ap.error(f"--extra: unknown corpus {x!r} (choose from all, {', '.join(EXTRA_CORPORA)})")
    if args.extra and args.stage != "finetune":
        ap.error("--extra: finetune only")
    if args.extra_mix is not None:
        args.extra_mix = [float(x) for x in args.extra_mix.split(",")]
        if len(args.extra_mix) == 1:
            args.extra_mix = args.extra_mix * len(args.extra)
        if len(args.extra_mix) != len(args.extra) or min(args.extra_mix) <= 0:
            ap.error("--extra-mix: one positive number per --extra corpus (or one for all)")
    if args.stage == "export" and not args.out:
        args.out = os.path.join(args.work, f"{args.dataset}-generative")
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)
    cmd = "nice -n 10 /usr/bin/python3 training/train_generative.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    print(cmd, flush=True)
    hist_path = os.path.join(args.work, "commands.json")
    hist = {}
    if os.path.exists(hist_path):
        with open(hist_path) as f:
            hist = json.load(f)
    key = args.stage + (f":{finetune_name(args)}" if args.stage == "finetune"
                        else f":{args.dataset}" if args.stage == "export" else "")
    if args.stage == "pretrain" and args.resume and "pretrain" in hist:
        hist["pretrain"] = hist["pretrain"] + [cmd]
    else:
        hist[key] = [cmd]
    te.write_json(hist_path, hist)
    args.history = hist
    args.commands = [c for k in ("vocab", "pretrain", f"finetune:{args.dataset}", f"export:{args.dataset}")
                     for c in hist.get(k, [])]
    {"vocab": lambda a: load_or_build_vocab(a, build_ok=True), "pretrain": stage_pretrain,
     "finetune": stage_finetune, "export": stage_export}[args.stage](args)


if __name__ == "__main__":
    main()
