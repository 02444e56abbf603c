"""Which text representation to store per issue: quality against bytes, on the tuning sets.

Not the grouping itself: a measurement that decides what `Issue` stores for similarity
(issue 11). For each tuning set (never the fresh acceptance set), each true group is split in
two halves (seeded); a report of the second half is classified to the group whose first-half
centroid is nearest (cosine), the learning setting a team's corrections create. Printed: the
accuracy of each representation, float and quantised, with its bytes per issue.

    .venv/bin/python bench/representation.py [--seed 1]

Notes: what else was tried for grouping, on the tuning sets only (dev / eval), before the fresh
set was measured once with the chosen settings (README, "Grouping"):

- Cold start, online placement, best F1 at pairwise precision >= 0.70: raw vectors 0.08 / 0.02;
  centred per source (shipped) 0.35 / 0.24; plus IDF weights on the hashed bits 0.35 / 0.22;
  dense weight 0.3 or 0.7 instead of 0.5: no better; centring by half the mean: worse. Offline
  average-linkage clustering (an upper bound for any online order) of TF-IDF words: 0.27 / 0.12.
- A within-cause whitening of the dense part learned on one tuning set and applied to the
  other (LDA-style, shrinkage 0.05-0.5): worse on both (dev 0.40 -> 0.30-0.36 best F1).
- The learning protocol's ranking (half of each group as labelled members): nearest centroid
  0.75-0.78; 1-NN 0.59-0.69, 5-NN 0.60-0.75, per-source sub-centroids 0.67-0.76, logistic
  regression on the members 0.72-0.80: no better than the centroid. A pinned member weighing 3
  or 10 instead of 1: 0.73 / 0.74 and 0.68 / 0.72 at home instead of 0.75 / 0.78.
"""
import argparse
import collections
import json
import os
import re
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = {"dev": os.path.join(ROOT, "bench", "data", "dev", "reports.jsonl"),
        "eval": os.path.join(ROOT, "bench", "data", "eval_reports.jsonl")}
MASKS = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f-]{27,}\b", " "), (r"\b0x[0-9a-f]+\b", " "),
    (r"\b[0-9a-f]{12,}\b", " "), (r"\d+(\.\d+)*", " 0 "))]
TOKEN = re.compile(r"[a-z][a-z0-9_]+")


def normalised(text):
    """Lower case, ids and numbers masked: they differ between reports of one cause."""
    text = text.lower()
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def hashed(text, dims):
    """Signed feature hashing of words, word bigrams and character 4-grams, sublinear counts."""
    vector = np.zeros(dims, np.float32)
    tokens = TOKEN.findall(text)
    features = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]
    for word in set(tokens):
        padded = f" {word} "
        features += [padded[i:i + 4] for i in range(len(padded) - 3)]
    for feature, count in collections.Counter(features).items():
        code = zlib.crc32(feature.encode())
        vector[code % dims] += (1 if (code >> 16) & 1 else -1) * (1 + np.log(count))
    return vector


def unit(matrix):
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)


def quantised(matrix, levels):
    """Symmetric per-vector quantisation to integers in [-levels, levels]."""
    return np.round(matrix / np.abs(matrix).max(1, keepdims=True) * levels)


def centroid_accuracy(vectors, labels, seed):
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        first += list(members[:len(members) // 2])
        second += list(members[len(members) // 2:])
    groups = sorted(set(labels))
    centroids = unit(np.array([vectors[first][labels[first] == g].sum(0) for g in groups]))
    guesses = np.array(groups)[(vectors[second] @ centroids.T).argmax(1)]
    return float(np.mean(guesses == labels[second]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import wordllama
    from wordllama import WordLlama

    model = WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)
    for name, path in SETS.items():
        with open(path) as handle:
            reports = [json.loads(line) for line in handle]
        labels = np.array([f"{r['domain']}/{r['root_cause']}" for r in reports])
        texts = [normalised(f"{r['title']}\n{r['body']}") for r in reports]
        dense = model.embed(texts, norm=True)
        sparse = {dims: unit(np.array([hashed(t, dims) for t in texts])) for dims in (256, 1024)}
        candidates = {
            "WordLlama 256-d float32 (1024 B)": dense,
            "WordLlama 256-d int8 (256 B)": unit(quantised(dense, 127)),
            "WordLlama 256-d int4 (128 B)": unit(quantised(dense, 7)),
            "WordLlama 256-d sign (32 B)": unit(np.sign(dense)),
            "hashed 1024-d float32 (4096 B)": sparse[1024],
            "hashed 256-d float32 (1024 B)": sparse[256],
            "both, float32 (5120 B)": unit(np.hstack([0.5 * dense, 0.5 * sparse[1024]])),
            "both, int4 + ternary hashed 1024 (384 B)": unit(np.hstack([
                0.5 * unit(quantised(dense, 7)), 0.5 * unit(np.sign(sparse[1024]))])),
            "both, int4 + ternary hashed 512 (256 B)": unit(np.hstack([
                0.5 * unit(quantised(dense, 7)), 0.5 * unit(np.sign(unit(np.array(
                    [hashed(t, 512) for t in texts]))))])),
        }
        print(f"{name}: {len(reports)} reports, {len(set(labels))} groups; "
              f"half-split nearest-centroid accuracy (seed {args.seed})")
        for label, vectors in candidates.items():
            print(f"  {label:44} {centroid_accuracy(vectors, labels, args.seed):.3f}")


if __name__ == "__main__":
    main()
