#!/usr/bin/env python3
"""One encoder bundle out of several trained with the same vocabulary (same
data and corpus words, different seeds): the members' graphs run side by side
in one model.onnx and its `logits` output is the mean of their log-softmax,
so the bundle keeps the HF token-classification interface (input_ids,
attention_mask -> logits [batch, positions, labels]) and the pipeline's
softmax + constrained Viterbi read it as they read one model (softmax of the
mean log-probability: the members' normalised geometric mean).

  /usr/bin/python3 training/ensemble_encoders.py --members DIR_A DIR_B \
      --fixtures A.json B.json --out models/ncbi-disease-encoder --fixture /tmp/ens.json

Members must have identical tokenizer.json and labels (checked). Each member's
fixture (written by train_encoder.py) gives torch's logits on the fixture texts;
the ensemble's fixture is their mean log-softmax, which training/verify_bundle.mjs
then checks against onnxruntime-node.
"""
import argparse
import json
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def read_json(path):
    with open(path, encoding="utf8") as f:
        return json.load(f)


def merge(models, opset):
    """Nodes of every member, fed from the shared inputs; logits = mean log-softmax."""
    nodes, inits = [], []
    lsm = []
    for k, m in enumerate(models):
        p = f"m{k}/"
        g = onnx.compose.add_prefix(m, p).graph  # every name prefixed: members never clash
        for inp in g.input:
            nodes.append(helper.make_node("Identity", [inp.name[len(p):]], [inp.name], name=f"{p}feed_{inp.name[len(p):]}"))
        nodes.extend(g.node)
        inits.extend(g.initializer)
        (out,) = g.output
        nodes.append(helper.make_node("LogSoftmax", [out.name], [f"{p}logprob"], axis=-1, name=f"{p}logsoftmax"))
        lsm.append(f"{p}logprob")
    nodes.append(helper.make_node("Sum", lsm, ["logprob_sum"], name="sum"))
    inits.append(helper.make_tensor("inv_members", TensorProto.FLOAT, [], [1.0 / len(models)]))
    nodes.append(helper.make_node("Mul", ["logprob_sum", "inv_members"], ["logits"], name="mean"))
    first = models[0].graph
    graph = helper.make_graph(nodes, "bilstm_ensemble", list(first.input), list(first.output), inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                            producer_name="bioner-router ensemble_encoders.py")
    out.ir_version = models[0].ir_version
    onnx.checker.check_model(out)
    return out


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", nargs="+", required=True, help="encoder bundle directories (2 or more)")
    ap.add_argument("--fixtures", nargs="+", required=True, help="each member's fixture json, in the same order")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixture", required=True, help="where the ensemble's fixture goes")
    ap.add_argument("--name", default=None, help="bioner.name in config.json (default: the first member's)")
    ap.add_argument("--devel", default=None, help="a json of the ensemble's measured devel figures, kept in config.json")
    args = ap.parse_args()
    if len(args.members) < 2 or len(args.members) != len(args.fixtures):
        ap.error("--members: at least two, and one --fixtures entry each")

    configs = [read_json(os.path.join(d, "config.json")) for d in args.members]
    for d, c in zip(args.members[1:], configs[1:]):
        for f in FILES:
            with open(os.path.join(args.members[0], f), "rb") as a, open(os.path.join(d, f), "rb") as b:
                if a.read() != b.read():
                    raise SystemExit(f"ensemble: {d}/{f} differs from {args.members[0]}/{f}: members need one vocabulary")
        if c["id2label"] != configs[0]["id2label"]:
            raise SystemExit(f"ensemble: {d} has labels {c['id2label']}, not {configs[0]['id2label']}")

    models = [onnx.load(os.path.join(d, "model.onnx")) for d in args.members]
    opset = max(o.version for m in models for o in m.opset_import if o.domain in ("", "ai.onnx"))
    merged = merge(models, opset)

    os.makedirs(args.out, exist_ok=True)
    onnx.save(merged, os.path.join(args.out, "model.onnx"))
    for f in FILES:
        shutil.copyfile(os.path.join(args.members[0], f), os.path.join(args.out, f))
    config = dict(configs[0])
    config["architectures"] = ["BiLSTMEnsembleForTokenClassification"]
    meta = dict(config["bioner"])
    members = [c["bioner"] for c in configs]
    for m in members:
        m.pop("devel", None)  # each member's detail stays in its own log; the ensemble's figures are measured on it
    meta.update({
        "name": args.name or meta.get("name"),
        "ensemble": {"members": members, "combine": "mean of log-softmax"},
        "seed": [m.get("seed") for m in members],
        "params": sum(m.get("params", 0) for m in members),
        "flops_per_token": sum(m.get("flops_per_token", 0) for m in members),
        "trained_seconds": round(sum(m.get("trained_seconds", 0) for m in members), 1),
    })
    for k in ("devel_f1", "devel_precision", "devel_recall", "heldout_f1", "best_epoch", "epochs_run", "command"):
        meta.pop(k, None)
    if args.devel:
        meta["devel"] = read_json(args.devel)
    config["bioner"] = meta
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    fixtures = [read_json(p) for p in args.fixtures]
    for p, fx in zip(args.fixtures[1:], fixtures[1:]):
        if fx["input_ids"] != fixtures[0]["input_ids"]:
            raise SystemExit(f"ensemble: {p} encodes the fixture texts differently")
    mean = sum(log_softmax(fx["logits"]) for fx in fixtures) / len(fixtures)
    fixture = dict(fixtures[0])
    fixture["bundle"] = os.path.abspath(args.out)
    fixture["logits"] = mean.astype(np.float32).tolist()
    with open(args.fixture, "w", encoding="utf8") as f:
        json.dump(fixture, f)

    lines = [
        f"# {meta['name']} (ensemble of {len(members)})",
        "",
        f"{len(members)} encoders trained by `training/train_encoder.py` with the same data, vocabulary and",
        "recipe and different seeds, run side by side in one `model.onnx`; `logits` is the mean of their",
        "log-softmax (the HF token-classification interface is unchanged). Made by",
        "`training/ensemble_encoders.py`; the members' commands:",
        "",
    ]
    lines += [f"- seed {m.get('seed')}: `{m.get('command', '')}`" for m in members]
    lines += ["", f"{meta['params']:,} parameters in all. Reference model, **not clinical-grade** (PubMed abstracts).", ""]
    if args.devel:
        d = meta["devel"]
        lines += [f"Devel strict F1 (pipeline `eval`): {d.get('f1')}", ""]
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf8") as f:
        f.write("\n".join(lines))
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"ensemble {args.out}: {len(members)} members, {total / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
