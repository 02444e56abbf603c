"""Root-cause inference: a failure report's text -> a fingerprint {domain, root_cause}.

Deterministic and explainable: each known root cause (models/data/root_causes.json) lists
signals, regular expressions with weights. A report scores the sum of the weights of the
distinct signals found in it (title hits count 1.5x: titles are written to say what broke).
A root cause may also list "against" signals: counter-evidence (e.g. "the query itself is
fast" against a slow-query cause) whose weights are subtracted the same way. The best root
cause wins if it reaches min_score and beats the runner-up by min_margin; the issue keeps
the matched signals (and any counter-evidence) as its explanation. No branch in this file
knows any root cause.
"""
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field

try:  # the stdlib regex parser, used only to derive literal pre-filters (see _gate)
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - older/other Pythons: no pre-filter, same results
    _sre_parse = None

VOCABULARY_PATH = os.path.join(os.path.dirname(__file__), "data", "root_causes.json")
TITLE_WEIGHT = 1.5
WORD = re.compile(r"[a-z0-9][a-z0-9_.'-]*[a-z0-9]|[a-z0-9]")


@dataclass(frozen=True)
class RootCause:
    domain: str
    root_cause: str
    name: str
    signals: tuple  # ((alternatives, source text, weight, gate), ...); see _compile
    against: tuple = ()  # counter-evidence, same shape; weights are subtracted


@dataclass
class Detection:
    domain: str
    root_cause: str
    score: float
    matched: list = field(default_factory=list)
    runner_up: dict | None = None
    against: list = field(default_factory=list)

    @property
    def fingerprint(self):
        return {"domain": self.domain, "root_cause": self.root_cause}

    def explain(self):
        explanation = {"method": "vocabulary", "score": round(self.score, 2), "matched": self.matched,
                       "runner_up": self.runner_up}
        if self.against:
            explanation["against"] = self.against
        return explanation


def _required(items):
    """Literals one of which every match of the parsed regex `items` must contain, or None.

    Walks the stdlib parse tree: a sequence needs all its parts, so any one part's requirement
    will do (the most selective is kept); an alternation needs one of its branches'."""
    best, run = None, []

    def consider(candidate):
        nonlocal best
        if candidate and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            run.append(chr(av))
            continue
        consider(frozenset(["".join(run).casefold()]) if run else None)
        run = []
        if name == "SUBPATTERN":
            consider(_required(av[-1]))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            consider(_required(av[2]))
        elif name == "BRANCH":
            branches = [_required(branch) for branch in av[1]]
            consider(None if None in branches else frozenset().union(*branches))
    consider(frozenset(["".join(run).casefold()]) if run else None)
    return best


def _gate(signal):
    """A cheap necessary condition for `signal` to match: a set of literals, one of which must
    occur in the case-folded text (None: always run the regex). Only skips regexes that cannot
    match, so results are the same with or without it; it makes inference several times faster."""
    if _sre_parse is None:
        return None
    try:
        gate = _required(_sre_parse.parse(signal, re.IGNORECASE))
    except Exception:  # pragma: no cover - parser internals changed: no pre-filter
        return None
    return gate if gate and all(gate) else None


def _alternatives(signal):
    """The top-level alternatives of a regex source (`a|b(c|d)` -> `a`, `b(c|d)`): a text
    matches the whole iff it matches one of them. [signal] where splitting could change a
    meaning: global inline flags, backreferences and conditionals number or span groups."""
    if re.search(r"^\(\?[a-zA-Z]+\)|\\[1-9]|\(\?P=|\(\?\(", signal):
        return [signal]
    parts, depth, start, index, in_class = [], 0, 0, 0, False
    while index < len(signal):
        char = signal[index]
        if char == "\\":
            index += 1  # the escaped character is a literal
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            index += signal[index + 1:index + 2] == "^"
            index += signal[index + 1:index + 2] == "]"  # a leading ] is a member, not the end
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            parts.append(signal[start:index])
            start = index + 1
        index += 1
    return parts + [signal[start:]]


@functools.lru_cache(maxsize=4)
def _literals(path=VOCABULARY_PATH):
    """Every pre-filter literal of the vocabulary, indexed by its first three characters:
    (literals shorter than that, {first three characters: literals})."""
    causes, _, _ = vocabulary(path)
    literals = sorted({literal for cause in causes for alternatives, *_, gate in cause.signals + cause.against
                       for literal_set in (gate, *(g for _, g in alternatives)) if literal_set
                       for literal in literal_set})
    by_prefix = {}
    for literal in literals:
        if len(literal) >= 3:
            by_prefix.setdefault(literal[:3], []).append(literal)
    return (tuple(literal for literal in literals if len(literal) < 3),
            {prefix: tuple(group) for prefix, group in by_prefix.items()})


def _present(folded, literals):
    """The pre-filter literals found in the case-folded text (only those whose first three
    characters occur in it are looked for)."""
    short, by_prefix = literals
    found = set(filter(folded.__contains__, short))
    for prefix in {folded[i:i + 3] for i in range(len(folded) - 2)} & by_prefix.keys():
        found.update(filter(folded.__contains__, by_prefix[prefix]))
    return found


def _compile(signals):
    """Each signal with its pre-filter, and its alternatives each compiled with their own: most
    signals list many phrasings, and a text rarely holds the literals of more than a few."""
    return tuple((tuple((re.compile(part, re.IGNORECASE), _gate(part)) for part in _alternatives(signal)),
                  signal, float(weight), _gate(signal))
                 for signal, weight in signals.items())


@functools.lru_cache(maxsize=4)
def vocabulary(path=VOCABULARY_PATH):
    with open(path) as handle:
        data = json.load(handle)
    causes = tuple(
        RootCause(entry["domain"], entry["root_cause"], entry["name"],
                  _compile(entry["signals"]), _compile(entry.get("against", {})))
        for entry in data["root_causes"])
    return causes, float(data["min_score"]), float(data["min_margin"])


def _found(text, present, alternatives):
    """Whether one of the alternatives matches `text` (`present`: its pre-filter literals)."""
    return any((gate is None or not gate.isdisjoint(present)) and regex.search(text)
               for regex, gate in alternatives)


def _evidence(title, body, present, signals):
    """Weighted sum of the distinct signals found (title hits count TITLE_WEIGHT x) and which fired.
    `present` is the pre-filter literals of (title, body): a match lies in one of them."""
    score, fired = 0.0, []
    in_title, in_body = present
    for alternatives, source, weight, gate in signals:
        if gate is not None and gate.isdisjoint(in_title) and gate.isdisjoint(in_body):
            continue
        if _found(title, in_title, alternatives):
            score += weight * TITLE_WEIGHT
            fired.append(source)
        elif _found(body, in_body, alternatives):
            score += weight
            fired.append(source)
    return score, fired


def _scores(title, body, causes, literals):
    present = (_present(title.casefold(), literals), _present(body.casefold(), literals))
    for cause in causes:
        score, matched = _evidence(title, body, present, cause.signals)
        if not score:
            continue
        penalty, against = _evidence(title, body, present, cause.against) if cause.against else (0.0, [])
        yield score - penalty, cause, matched, against


def infer(title, body="", path=VOCABULARY_PATH):
    """The most likely root cause of a report, or None when nothing is convincing."""
    causes, min_score, min_margin = vocabulary(path)
    ranked = sorted(_scores(title or "", body or "", causes, _literals(path)), key=lambda item: -item[0])
    if not ranked or ranked[0][0] < min_score:
        return None
    score, cause, matched, against = ranked[0]
    runner_up = None
    if len(ranked) > 1:
        second_score, second = ranked[1][:2]
        if score - second_score < min_margin:
            return None
        runner_up = {"domain": second.domain, "root_cause": second.root_cause, "score": round(second_score, 2)}
    return Detection(cause.domain, cause.root_cause, score, matched, runner_up, against)


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
