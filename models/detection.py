"""Root-cause inference: a failure report's text -> a fingerprint {domain, root_cause}.

Deterministic and explainable: each known root cause (models/data/root_causes.json) lists
signals, regular expressions with weights. A report scores the sum of the weights of the
distinct signals found in it (title hits count 1.5x: titles are written to say what broke).
The best root cause wins if it reaches MIN_SCORE and beats the runner-up; the issue keeps
the matched signals as its explanation. No branch in this file knows any root cause.
"""
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field

VOCABULARY_PATH = os.path.join(os.path.dirname(__file__), "data", "root_causes.json")
TITLE_WEIGHT = 1.5
WORD = re.compile(r"[a-z0-9][a-z0-9_.'-]*[a-z0-9]|[a-z0-9]")


@dataclass(frozen=True)
class RootCause:
    domain: str
    root_cause: str
    name: str
    signals: tuple  # ((compiled regex, source text, weight), ...)


@dataclass
class Detection:
    domain: str
    root_cause: str
    score: float
    matched: list = field(default_factory=list)
    runner_up: dict | None = None

    @property
    def fingerprint(self):
        return {"domain": self.domain, "root_cause": self.root_cause}

    def explain(self):
        return {"method": "vocabulary", "score": round(self.score, 2), "matched": self.matched,
                "runner_up": self.runner_up}


def _compile(signal):
    """Signals match case-insensitively. Lower-casing pattern and text once is ~3x faster than
    re.IGNORECASE; a pattern with an upper-case escape (\\S, \\W, ...) keeps the flag instead."""
    if re.search(r"\\[A-Z]", signal):
        return re.compile(signal, re.IGNORECASE)
    return re.compile(signal.lower())


@functools.lru_cache(maxsize=4)
def vocabulary(path=VOCABULARY_PATH):
    with open(path) as handle:
        data = json.load(handle)
    causes = tuple(
        RootCause(entry["domain"], entry["root_cause"], entry["name"],
                  tuple((_compile(signal), signal, float(weight))
                        for signal, weight in entry["signals"].items()))
        for entry in data["root_causes"])
    return causes, float(data["min_score"]), float(data["min_margin"])


def _scores(title, body, causes):
    title = title.lower()
    text = f"{title}\n{body.lower()}"
    for cause in causes:
        score, matched = 0.0, []
        for regex, source, weight in cause.signals:
            if regex.search(text):  # one pass over everything; the title only when it hit
                score += weight * (TITLE_WEIGHT if regex.search(title) else 1.0)
                matched.append(source)
        if score:
            yield score, cause, matched


def infer(title, body=""):
    """The most likely root cause of a report, or None when nothing is convincing."""
    causes, min_score, min_margin = vocabulary()
    ranked = sorted(_scores(title or "", body or "", causes), key=lambda item: -item[0])
    if not ranked or ranked[0][0] < min_score:
        return None
    score, cause, matched = ranked[0]
    runner_up = None
    if len(ranked) > 1:
        second_score, second, _ = ranked[1]
        if score - second_score < min_margin:
            return None
        runner_up = {"domain": second.domain, "root_cause": second.root_cause, "score": round(second_score, 2)}
    return Detection(cause.domain, cause.root_cause, score, matched, runner_up)


def pattern_name(fingerprint):
    """A readable name for a pattern detection creates."""
    causes, _, _ = vocabulary()
    for cause in causes:
        if (cause.domain, cause.root_cause) == (fingerprint["domain"], fingerprint["root_cause"]):
            return cause.name
    return f"{fingerprint['root_cause'].replace('_', ' ').capitalize()} ({fingerprint['domain']})"


def words(text):
    return WORD.findall((text or "").lower())


def cosine(a, b, idf=None):
    """Cosine similarity of two bags of words, in [0, 1]; words weighted by `idf` if given."""
    if not a or not b:
        return 0.0
    weight = idf.get if idf else (lambda word, default=1.0: default)
    counts_a, counts_b = {}, {}
    for word in a:
        counts_a[word] = counts_a.get(word, 0) + 1
    for word in b:
        counts_b[word] = counts_b.get(word, 0) + 1
    vec_a = {w: c * weight(w, 1.0) for w, c in counts_a.items()}
    vec_b = {w: c * weight(w, 1.0) for w, c in counts_b.items()}
    dot = sum(value * vec_b.get(word, 0.0) for word, value in vec_a.items())
    norm = math.sqrt(sum(v * v for v in vec_a.values())) * math.sqrt(sum(v * v for v in vec_b.values()))
    return dot / norm if norm else 0.0


def idf(documents):
    """Inverse document frequency of each word over `documents` (lists of words)."""
    frequency = {}
    for words_ in documents:
        for word in set(words_):
            frequency[word] = frequency.get(word, 0) + 1
    total = len(documents)
    return {word: math.log((total + 1) / (count + 1)) + 1 for word, count in frequency.items()}
