"""An issue's text as a compact vector: what similarity grouping compares.

Two parts, each a unit vector, stored together in 256 bytes per issue:

- dense: WordLlama's 256-d embedding (the wheel's own model, numpy-only inference) of the
  normalised title and description, quantised to 4 bits per dimension (128 bytes);
- hashed: the presence of words, word pairs and character 4-grams of words, hashed (CRC32) into
  1,024 bits (128 bytes) — the rare, exact tokens (a service name, a config key, an error code)
  that an average of word embeddings blurs.

`bench/representation.py` measured the choice: on the tuning sets, int4 costs under one point
of nearest-centroid accuracy against float32 (8x the bytes), and the hashed part adds 4 to 9
points to the dense part alone. The model is loaded once per process, on first use, never at
import time.
"""
import functools
import importlib.util
import os
import re
import threading
import zlib

import numpy as np

MODEL_VERSION = "wordllama-l2-256-int4+hashed-1024/1"
DENSE_DIMS = 256
HASHED_DIMS = 1024
DIMS = DENSE_DIMS + HASHED_DIMS
DENSE_LEVELS = 7  # int4: each dimension in [-7, 7], stored + 8 as a nibble
BYTES = DENSE_DIMS // 2 + HASHED_DIMS // 8
MAX_TEXT = 4_000  # characters embedded: the start of a long description says the most

_MASKS = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f-]{27,}\b", " "),  # UUIDs
    (r"\b0x[0-9a-f]+\b", " "),  # addresses
    (r"\b[0-9a-f]{12,}\b", " "),  # hashes, trace ids
    (r"\d+(\.\d+)*", " 0 "))]  # counts, timestamps, versions: they differ between reports of a cause
_TOKEN = re.compile(r"[a-z][a-z0-9_]+")

_model = None
_model_lock = threading.Lock()
_EMBED_CHUNK = 64  # texts tokenized and pooled at a time: bounds the transient memory


class Model:
    """WordLlama's bundled model (l2_supercat, 256-d): its tokenizer and its token embeddings,
    kept in float16 as the wheel stores them. An embedding is the mean of the text's token
    vectors, summed in float32: what `WordLlama.embed` computes (tests/test_grouping.py checks
    they agree), without padding every text of a batch to the longest one, and in half the
    memory (WordLlama widens the table to float32; importing its package costs another 30 MB
    that a web worker does not need)."""

    def __init__(self, folder):
        from safetensors import safe_open
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizers", "l2_supercat_tokenizer_config.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        with safe_open(os.path.join(folder, "weights", "l2_supercat_256.safetensors"), framework="np") as weights:
            self.embedding = np.ascontiguousarray(weights.get_tensor("embedding.weight"), np.float16)

    def embed(self, texts):
        """Unit vectors (n x 256, float32) for texts."""
        out = np.zeros((len(texts), self.embedding.shape[1]), np.float32)
        last = len(self.embedding) - 1
        for start in range(0, len(texts), _EMBED_CHUNK):
            encoded = self.tokenizer.encode_batch(texts[start:start + _EMBED_CHUNK], add_special_tokens=False)
            for row, encoding in enumerate(encoded, start):
                if encoding.ids:
                    ids = np.minimum(np.asarray(encoding.ids), last)
                    out[row] = self.embedding[ids].sum(0, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def model_folder():
    """The installed wordllama package's folder, found without importing it."""
    return importlib.util.find_spec("wordllama").submodule_search_locations[0]


def model():
    """The model, loaded once per process from the wordllama wheel's own files (nothing is
    fetched), on first use."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                # Tokenizing is single-threaded here; this also keeps the Rust tokenizer quiet
                # when gunicorn forks workers after the master loaded the model.
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                _model = Model(model_folder())
    return _model


def normalised(title, description=""):
    """Lower case, ids and numbers masked."""
    text = f"{title}\n{description or ''}"[:MAX_TEXT].lower()
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=16_384)
def _word_positions(word):
    """The bits of a word and of its character 4-grams (the same words recur in every report)."""
    padded = f" {word} "
    features = {word} | {padded[i:i + 4] for i in range(len(padded) - 3)}
    return [zlib.crc32(feature.encode()) % HASHED_DIMS for feature in features]


def _hashed_bits(text):
    tokens = _TOKEN.findall(text)
    positions = [zlib.crc32(f"{a} {b}".encode()) % HASHED_DIMS for a, b in set(zip(tokens, tokens[1:]))]
    for word in set(tokens):
        positions += _word_positions(word)
    bits = np.zeros(HASHED_DIMS, np.uint8)
    bits[positions] = 1
    return bits


def encode(texts):
    """Stored representations (bytes) for normalised texts."""
    if not texts:
        return []
    dense = model().embed(list(texts))
    scale = np.maximum(np.abs(dense).max(1, keepdims=True), 1e-9)
    nibbles = (np.round(dense / scale * DENSE_LEVELS) + 8).astype(np.uint8)
    packed_dense = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    packed = [np.packbits(_hashed_bits(text)) for text in texts]
    return [packed_dense[i].tobytes() + packed[i].tobytes() for i in range(len(texts))]


def represent(items):
    """Stored representations for (title, description) pairs."""
    return encode([normalised(title, description) for title, description in items])


def _unit(matrix):
    norms = np.sqrt(np.einsum("...i,...i->...", matrix, matrix))
    return matrix / np.maximum(norms, 1e-9)[..., None]


def decode_one(blob, _cache={}):
    """decode() of one stored representation, remembered (a write decodes the same issue's
    vector several times: placing it, explaining it, moving it)."""
    blob = bytes(blob)
    vector = _cache.get(blob)
    if vector is None:
        if len(_cache) >= 2_048:  # ~10 MB of vectors
            _cache.clear()
        vector = _cache[blob] = decode([blob])[0]
    return vector


def decode(blobs):
    """Raw vectors (n x DIMS, float32) for stored representations: each part a unit vector."""
    if not blobs:
        return np.zeros((0, DIMS), np.float32)
    raw = np.frombuffer(b"".join(bytes(blob) for blob in blobs), np.uint8).reshape(len(blobs), BYTES)
    half = DENSE_DIMS // 2
    nibbles = np.empty((len(blobs), DENSE_DIMS), np.float32)
    nibbles[:, 0::2] = raw[:, :half] >> 4
    nibbles[:, 1::2] = raw[:, :half] & 15
    dense = _unit(nibbles - 8)
    hashed = _unit(np.unpackbits(raw[:, half:], axis=1).astype(np.float32))
    return np.hstack([dense, hashed])


def split_unit(vectors):
    vectors = np.atleast_2d(vectors)
    return _unit(vectors[:, :DENSE_DIMS]), _unit(vectors[:, DENSE_DIMS:])

