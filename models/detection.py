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

import ahocorasick

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


_ESCAPED_CHAR = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")


class _Unsupported(Exception):
    """A regex construct the literal extraction does not model: that signal goes ungated."""


def _required(source):
    """Literals one of which every match of the regex `source` must contain (ASCII, case-folded),
    or None when none can be derived. A small, conservative reading of the regex syntax: a
    sequence needs all its parts, so any one part's requirement will do (the most selective is
    kept); an alternation needs one of its branches'; anything optional, or not understood
    (classes, lookarounds, escapes like \\d, non-ASCII characters), requires nothing."""
    try:
        requirement, index = _branches(source, 0)
    except _Unsupported:
        return None
    return requirement if index == len(source) else None


def _best(best, candidate):
    """The more selective requirement: longer shortest literal, then fewer literals."""
    def key(literals):
        return min(map(len, literals)), -len(literals)
    if candidate and (best is None or key(candidate) > key(best)):
        return candidate
    return best


def _branches(source, index):
    """Parse an alternation from `index` up to an unmatched ")" or the end: (requirement, index)."""
    requirements = []
    while True:
        requirement, index = _sequence(source, index)
        requirements.append(requirement)
        if index < len(source) and source[index] == "|":
            index += 1
            continue
        break
    if None in requirements:
        return None, index
    return frozenset().union(*requirements), index


def _sequence(source, index):
    best, run = None, []

    def flush():
        nonlocal best, run
        if run:
            best = _best(best, frozenset(["".join(run).casefold()]))
        run = []

    while index < len(source) and source[index] not in "|)":
        char = source[index]
        literal, requirement = None, None  # the atom: a literal character, or what it requires
        if char == "\\":
            index += 1
            if index >= len(source):
                raise _Unsupported(source)
            escaped = source[index]
            if escaped in _ESCAPED_CHAR:
                literal = _ESCAPED_CHAR[escaped]
            elif escaped.isalnum():
                if escaped in "xuUN":  # \xhh, \uhhhh, \N{...}: a character we do not decode
                    raise _Unsupported(source)
                literal = None  # \b \d \w \s \1 ...: no literal
            else:
                literal = escaped
            index += 1
        elif char == "[":
            index = _skip_class(source, index)
        elif char == "(":
            index, requirement = _group(source, index)
        elif char in ".^$":
            index += 1
        elif char in "*+?":
            raise _Unsupported(source)  # a quantifier without an atom
        elif char == "{" and _QUANTIFIER.match(source, index) and any(_QUANTIFIER.match(source, index).group(1, 3)):
            raise _Unsupported(source)
        else:
            literal = char
            index += 1
        minimum, index = _quantifier(source, index)
        if literal is not None and literal.isascii() and minimum is None:
            run.append(literal)
            continue
        if literal is not None and literal.isascii() and minimum >= 1:
            run.append(literal)  # "ab+c" needs "ab"; what follows the repeat starts a new run
            flush()
            continue
        flush()
        if minimum is None or minimum >= 1:
            best = _best(best, requirement)
    flush()
    return best, index


def _quantifier(source, index):
    """(minimum repeats or None if no quantifier, index after it and its lazy/possessive suffix)."""
    if index >= len(source):
        return None, index
    char = source[index]
    if char in "*?":
        minimum, index = 0, index + 1
    elif char == "+":
        minimum, index = 1, index + 1
    else:
        match = _QUANTIFIER.match(source, index)
        if not match or not any(match.group(1, 3)):
            return None, index
        minimum = int(match.group(1) or 0)  # {m}, {m,}, {m,n}: m; {,n}: 0
        index = match.end()
    if index < len(source) and source[index] in "?+":
        index += 1
    if index < len(source) and source[index] in "*+?{" and _quantifier(source, index)[0] is not None:
        raise _Unsupported(source)  # stacked quantifiers
    return minimum, index


def _skip_class(source, index):
    index += 1
    if index < len(source) and source[index] == "^":
        index += 1
    if index < len(source) and source[index] == "]":
        index += 1
    while index < len(source) and source[index] != "]":
        index += 2 if source[index] == "\\" else 1
    if index >= len(source):
        raise _Unsupported(source)
    return index + 1


def _group(source, index):
    """Parse a group at `index` ("("): (index after it, requirement of its content or None)."""
    index += 1
    capturing = True
    if source.startswith("?", index):
        flags = re.match(r"\?(:|P<\w+>|[aiLmsu]*(-[imsx]+)?:|=|!|<=|<!|#|P=|\(|[aiLmsux]+\))", source[index:])
        if not flags:
            raise _Unsupported(source)
        kind = flags.group(1)
        if "x" in kind or kind in ("P=", "("):
            raise _Unsupported(source)  # verbose mode, named backreference, conditional
        index += len(flags.group(0))
        if kind.endswith(")"):  # a global flag group like (?i): no content
            return index, None
        capturing = kind in (":",) or kind.startswith("P<") or kind.endswith(":")
        if kind == "#":
            end = source.index(")", index)
            return end + 1, None
    requirement, index = _branches(source, index)
    if index >= len(source) or source[index] != ")":
        raise _Unsupported(source)
    return index + 1, requirement if capturing else None  # lookarounds require nothing


def _gate(signal):
    """A cheap necessary condition for `signal` to match: a set of literals, one of which must
    occur in the folded text (None: always run the regex). Only skips regexes that cannot
    match, so results are the same with or without it; it makes inference several times faster."""
    gate = _required(signal)
    return gate if gate and all(gate) else None


def _fold(text):
    """The text as the literals are compared with it: case-folded, and the dotless i (which an
    IGNORECASE "i" matches, but which case-folds to itself) as "i"."""
    folded = text.casefold()
    return folded.replace("\u0131", "i") if "\u0131" in folded else folded


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


@dataclass(frozen=True)
class _Prefilter:
    automaton: object  # an ahocorasick.Automaton of every gate literal (None: there are none)
    alternatives: tuple  # every alternative of every signal: (regex, cause position, kind, signal index)
    by_literal: dict  # gate literal -> numbers of the alternatives it gates
    ungated: tuple  # numbers of the alternatives without a gate: always run


@functools.lru_cache(maxsize=4)
def _prefilter(path=VOCABULARY_PATH):
    """One Aho-Corasick automaton over the gate literals of the whole vocabulary, so that a
    single pass over a text finds every literal it holds, and from those the alternatives
    worth running (kind 0: a signal, 1: counter-evidence)."""
    causes, _, _ = vocabulary(path)
    alternatives, by_literal, ungated = [], {}, []
    for position, cause in enumerate(causes):
        for kind, signals in enumerate((cause.signals, cause.against)):
            for index, (parts, *_) in enumerate(signals):
                for regex, gate in parts:
                    number = len(alternatives)
                    alternatives.append((regex, position, kind, index))
                    if gate is None:
                        ungated.append(number)
                    for literal in gate or ():
                        by_literal.setdefault(literal, []).append(number)
    automaton = None
    if by_literal:
        automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for literal in sorted(by_literal):
            automaton.add_word(literal, literal)
        automaton.make_automaton()
    return _Prefilter(automaton, tuple(alternatives),
                      {literal: tuple(numbers) for literal, numbers in by_literal.items()}, tuple(ungated))


def _present(text, prefilter):
    """The gate literals found in `text` (folded first), in one pass of the automaton."""
    if prefilter.automaton is None or not text:
        return frozenset()
    return frozenset(literal for _, literal in prefilter.automaton.iter(_fold(text)))


def _candidates(title, body, prefilter):
    """{cause position: {(kind, signal index): ([alternatives to run on the title], [... body])}}:
    only alternatives one of whose gate literals occurs in that text can match it."""
    found = {}
    for where, text in enumerate((title, body)):
        numbers = set(prefilter.ungated)
        for literal in _present(text, prefilter):
            numbers.update(prefilter.by_literal[literal])
        for number in numbers:
            regex, position, kind, index = prefilter.alternatives[number]
            found.setdefault(position, {}).setdefault((kind, index), ([], []))[where].append(regex)
    return found


def _compile(signals):
    """Each signal with its pre-filter, and its alternatives each compiled with their own: most
    signals list many phrasings, and a text rarely holds the literals of more than a few."""
    compiled = []
    for signal, weight in signals.items():
        alternatives = tuple((re.compile(part, re.IGNORECASE), _gate(part)) for part in _alternatives(signal))
        gates = [gate for _, gate in alternatives]
        gate = None if None in gates else frozenset().union(*gates)
        compiled.append((alternatives, signal, float(weight), gate))
    return tuple(compiled)


@functools.lru_cache(maxsize=4)
def vocabulary(path=VOCABULARY_PATH):
    with open(path) as handle:
        data = json.load(handle)
    causes = tuple(
        RootCause(entry["domain"], entry["root_cause"], entry["name"],
                  _compile(entry["signals"]), _compile(entry.get("against", {})))
        for entry in data["root_causes"])
    return causes, float(data["min_score"]), float(data["min_margin"])


def _evidence(title, body, signals):
    """Weighted sum of the distinct signals found (title hits count TITLE_WEIGHT x) and which
    fired, running every regex: the reference the pre-filtered _gated_evidence must equal."""
    score, fired = 0.0, []
    for alternatives, source, weight, _ in signals:
        if any(regex.search(title) for regex, _ in alternatives):
            score += weight * TITLE_WEIGHT
            fired.append(source)
        elif any(regex.search(body) for regex, _ in alternatives):
            score += weight
            fired.append(source)
    return score, fired


def _gated_evidence(title, body, signals, candidates, kind):
    """_evidence, running only the candidate alternatives of `signals` (see _candidates)."""
    score, fired = 0.0, []
    for key in sorted(key for key in candidates if key[0] == kind):
        on_title, on_body = candidates[key]
        _, source, weight, _ = signals[key[1]]
        if any(regex.search(title) for regex in on_title):
            score += weight * TITLE_WEIGHT
            fired.append(source)
        elif any(regex.search(body) for regex in on_body):
            score += weight
            fired.append(source)
    return score, fired


def _scores(title, body, causes):
    """(score, cause, matched, counter-evidence) of every cause with evidence, running every regex."""
    for cause in causes:
        score, matched = _evidence(title, body, cause.signals)
        if not score:
            continue
        penalty, against = _evidence(title, body, cause.against) if cause.against else (0.0, [])
        yield score - penalty, cause, matched, against


def _bound(cause, found):
    """The most `cause` can score given which of its alternatives passed the pre-filter."""
    bound = 0.0
    for (kind, index), (on_title, on_body) in found.items():
        if kind == 0:
            bound += cause.signals[index][2] * (TITLE_WEIGHT if on_title else 1.0)
    return bound


def _top_two(title, body, causes, prefilter, min_score):
    """The two best-scoring causes, as sorting every cause's score would rank them (ties: the
    earlier cause first), scoring only what can matter: causes are scored in decreasing order of
    their bound and the search stops once no bound can reach the runner-up (nor, at first,
    min_score: then nothing is convincing and nothing is run)."""
    candidates = _candidates(title, body, prefilter)
    bounds = sorted(((_bound(causes[position], found), position) for position, found in candidates.items()),
                    key=lambda item: (-item[0], item[1]))
    if not bounds or bounds[0][0] + _SLACK < min_score:
        return []
    scored = []
    for bound, position in bounds:
        if len(scored) >= 2 and bound + _SLACK < scored[1][0]:
            break
        cause, found = causes[position], candidates[position]
        score, matched = _gated_evidence(title, body, cause.signals, found, 0)
        if not score:
            continue
        penalty, against = _gated_evidence(title, body, cause.against, found, 1)
        scored.append((score - penalty, position, cause, matched, against))
        scored.sort(key=lambda item: (-item[0], item[1]))
        del scored[2:]
    return [(score, cause, matched, against) for score, _, cause, matched, against in scored]


_SLACK = 1e-9  # bounds and scores add the same weights in different orders


def infer(title, body="", path=VOCABULARY_PATH, prefilter=True):
    """The most likely root cause of a report, or None when nothing is convincing.
    prefilter=False runs every regex (the result is the same, only slower: see _gate)."""
    causes, min_score, min_margin = vocabulary(path)
    title, body = title or "", body or ""
    if prefilter:
        ranked = _top_two(title, body, causes, _prefilter(path), min_score)
    else:
        ranked = sorted(_scores(title, body, causes), key=lambda item: -item[0])
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
