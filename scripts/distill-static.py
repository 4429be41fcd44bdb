#!/usr/bin/env python3
"""Distils all-MiniLM-L6-v2 into a static embedding model (one vector per vocabulary token).

Reproducible and CPU-only: numpy is the only dependency. For every WordPiece token t the
BERT encoder is run on "[CLS] t [SEP]" (6 layers, 384 dimensions, read from the
safetensors file directly), the outputs are mean-pooled as the sentence-transformer does,
the 30522 vectors are reduced to DIM dimensions by PCA, and each is scaled by a smooth
inverse frequency weight (Zipf over the vocabulary order, as model2vec does), so that
frequent tokens count less in a mean. memproxy mean-pools these vectors and normalises.

Usage: distill-static.py MODEL_DIR OUT_DIR
Writes OUT_DIR/vectors.bin (header "MPXSTAT1", u32 vocab size, u32 dims, then f32
little-endian rows in vocabulary order) and OUT_DIR/vocab.txt (copied).
"""
import json
import shutil
import struct
import sys

import numpy as np

DIM = 256
SIF = 1e-4
BATCH = 2048


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"]).astype(np.float32)
    return out


def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def erf(x):
    # Numerical Recipes' erfc approximation (fractional error < 1.2e-7); numpy has no erf.
    s = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.5 * a)
    y = 1.0 - t * np.exp(
        -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
            -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
                -0.82215223 + t * 0.17087277)))))))))
    return (s * y).astype(np.float32)


def encode(w, ids, heads=12, layers=6):
    n, seq = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.position_embeddings.weight"][:seq][None]
    x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = x.shape[-1]
    hd = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        def lin(h, name):
            # One 2-D product per layer (a stacked 3-D matmul is many small ones).
            wt = w[p + name + ".weight"]
            flat = h.reshape(-1, h.shape[-1]) @ wt.T + w[p + name + ".bias"]
            return flat.reshape(h.shape[:-1] + (wt.shape[0],))

        q = lin(x, "attention.self.query").reshape(n, seq, heads, hd).transpose(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(n, seq, heads, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.self.value").reshape(n, seq, heads, hd).transpose(0, 2, 1, 3)
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(n, seq, d)
        x = layer_norm(x + lin(ctx, "attention.output.dense"),
                       w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.float32(np.sqrt(2.0))))
        x = layer_norm(x + lin(h, "output.dense"),
                       w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return x.mean(1)  # mean pooling over [CLS] t [SEP], all unmasked


def main():
    model_dir, out_dir = sys.argv[1], sys.argv[2]
    w = load(f"{model_dir}/model.safetensors")
    vocab = [l.rstrip("\n") for l in open(f"{model_dir}/vocab.txt", encoding="utf-8")]
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    n = len(vocab)
    out = np.zeros((n, w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
    for start in range(0, n, BATCH):
        ids = np.arange(start, min(n, start + BATCH))
        batch = np.stack([np.full_like(ids, cls), ids, np.full_like(ids, sep)], axis=1)
        out[ids] = encode(w, batch)
        print(f"\r{min(n, start + BATCH)}/{n} tokens", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    # PCA to DIM dimensions (centred; components by SVD of the covariance).
    centred = out - out.mean(0)
    cov = centred.T.astype(np.float64) @ centred.astype(np.float64) / n
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:DIM]
    reduced = (centred @ vecs[:, order].astype(np.float32)).astype(np.float32)
    # Smooth inverse frequency with Zipf probabilities over the vocabulary order.
    rank = np.arange(2, n + 2, dtype=np.float64)
    proba = (1.0 / rank) / (1.0 / rank).sum()
    reduced *= (SIF / (SIF + proba)).astype(np.float32)[:, None]
    with open(f"{out_dir}/vectors.bin", "wb") as f:
        f.write(b"MPXSTAT1")
        f.write(struct.pack("<II", n, DIM))
        f.write(reduced.astype("<f4").tobytes())
    shutil.copy(f"{model_dir}/vocab.txt", f"{out_dir}/vocab.txt")


if __name__ == "__main__":
    main()
