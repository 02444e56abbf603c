"""Root-cause inference (models/detection.py): the engine on a small synthetic vocabulary, and
a few smoke checks of the shipped vocabulary on texts written for these tests (not taken from
bench/data/eval_reports.jsonl)."""
import json
import os
import re

import pytest

from models import detection

VOCAB = {
    "min_score": 3,
    "min_margin": 1,
    "root_causes": [
        {"domain": "garden", "root_cause": "aphids", "name": "Aphids",
         "signals": {r"\baphids?\b": 3, r"sticky leaves|honeydew": 2, r"\bleaves\b": 0.5},
         "against": {r"\bladybirds? ate\b": 2.5}},
        {"domain": "garden", "root_cause": "frost", "name": "Frost damage",
         "signals": {r"\bfrost\b|below freezing": 3, r"black(ened)? leaves": 2, r"\bleaves\b": 0.5}},
        {"domain": "kitchen", "root_cause": "burnt_toast", "name": "Burnt toast",
         "signals": {r"\btoast(er)?\b": 1.5, r"smoke alarm|burn(t|ed)": 2}},
    ],
}


@pytest.fixture()
def vocab(tmp_path):
    path = tmp_path / "root_causes.json"
    path.write_text(json.dumps(VOCAB))
    yield str(path)
    detection.vocabulary.cache_clear()
    detection._prefilter.cache_clear()


def test_winner_is_explained_by_the_signals_that_fired(vocab):
    found = detection.infer("Roses covered in aphids", "the leaves are sticky leaves everywhere", path=vocab)
    assert found.fingerprint == {"domain": "garden", "root_cause": "aphids"}
    assert found.matched == [r"\baphids?\b", "sticky leaves|honeydew", r"\bleaves\b"]
    # title hits count 1.5x: 3 * 1.5 + 2 + 0.5
    assert found.score == pytest.approx(7.0)
    assert found.explain()["method"] == "vocabulary"
    assert found.explain()["runner_up"] == {"domain": "garden", "root_cause": "frost", "score": 0.5}
    assert "against" not in found.explain()


def test_deterministic(vocab):
    texts = [("Aphids again", "honeydew on the leaves"), ("Toaster set off the smoke alarm", "")]
    first = [detection.infer(t, b, path=vocab).explain() for t, b in texts]
    for _ in range(3):
        assert [detection.infer(t, b, path=vocab).explain() for t, b in texts] == first


def test_none_when_nothing_is_convincing(vocab):
    assert detection.infer("", "", path=vocab) is None
    assert detection.infer("Weekly planning notes", "nothing about plants here", path=vocab) is None
    # only a weak generic word: below min_score
    assert detection.infer("Some leaves fell", "", path=vocab) is None


def test_margin_rule(vocab):
    # aphids 3 vs frost 3 (+ the shared weak word): a tie is not a decision
    assert detection.infer("Garden report", "aphids on the roses and a night of frost", path=vocab) is None
    # the same evidence plus one more discriminating signal for frost decides it
    found = detection.infer("Garden report", "aphids on the roses, frost, blackened leaves", path=vocab)
    assert found.root_cause == "frost" and found.runner_up["root_cause"] == "aphids"


def test_counter_evidence_is_subtracted_and_reported(vocab):
    found = detection.infer("Frost last night", "a few aphids, but the ladybirds ate them", path=vocab)
    assert found.root_cause == "frost"
    assert found.runner_up == {"domain": "garden", "root_cause": "aphids", "score": 0.5}
    aphids = detection.infer("Aphids", "ladybirds ate some of them", path=vocab)
    assert aphids is None  # 4.5 - 2.5 = 2.0 < min_score
    assert detection.infer("Aphids", "honeydew; the ladybirds ate some", path=vocab).explain()["against"] == [
        r"\bladybirds? ate\b"]


TEXTS = ["Deadlock found", "DEADLOCKS", "sorry, too many clients already", "QUEUEPOOL LIMIT of size 5",
         "RSS keeps growing", "memory: grows", "STRIPE_KEY missing", "stripe_key", "550 5.7.1 blocked",
         "Certificate has EXPIRED", "abababc", "dd", "y", "", "CAF\u00c9 Strasse open", "caf\u00e9 strasse OPEN"]


@pytest.mark.parametrize("signal", [
    r"\bdeadlock", r"too many (clients|connections)|QueuePool limit", r"(memory|rss)\b.{0,40}\b(grow|climb)",
    r"(?-i:\b[A-Z][A-Z0-9]*_(KEY|TOKEN)\b)", r"\b[45]\.[1-7]\.\d{1,2}\b", r"cert(ificate)?s? (has )?expired",
    r"x?y", r"(ab)+c|d{2,}", r"(?:caf\u00e9|STRASSE) open"])
def test_literal_prefilter_never_changes_a_result(signal):
    gate = detection._gate(signal)
    regex = re.compile(signal, re.IGNORECASE)
    for text in TEXTS:
        folded = text.casefold()
        passes = gate is None or any(literal in folded for literal in gate)
        assert passes or not regex.search(text), (signal, text, gate)


SPLITS = [
    (r"a|b(c|d)", [r"a", r"b(c|d)"]),
    (r"[|(]x|\|y|z", [r"[|(]x", r"\|y", r"z"]),
    (r"[]|]|q|[^]|]", [r"[]|]", r"q", r"[^]|]"]),
    (r"(?-i:A|B)|c", [r"(?-i:A|B)", r"c"]),
    (r"(?i)a|b", [r"(?i)a|b"]),  # a global flag belongs to every alternative
    (r"(a)x\1|b", [r"(a)x\1|b"]),  # group numbers span alternatives
    (r"(?P<n>a)(?P=n)|b", [r"(?P<n>a)(?P=n)|b"]),
    (r"(a)?(?(1)b|c)|d", [r"(a)?(?(1)b|c)|d"]),
]


@pytest.mark.parametrize("signal, parts", SPLITS)
def test_alternatives_split_only_at_the_top_level(signal, parts):
    assert detection._alternatives(signal) == parts


def test_a_text_matches_a_signal_exactly_when_it_matches_one_of_its_alternatives():
    causes, _, _ = detection.vocabulary()
    signals = [source for c in causes for _, source, _, _ in c.signals + c.against] + [s for s, _ in SPLITS]
    texts = TEXTS + [text for case in PLAIN_CASES for text in case[:2]] + ["AB", "ab", "qx", "|y", "]", "aaxa"]
    for signal in signals:
        whole = re.compile(signal, re.IGNORECASE)
        parts = [re.compile(part, re.IGNORECASE) for part in detection._alternatives(signal)]
        for text in texts:
            assert bool(whole.search(text)) == any(part.search(text) for part in parts), (signal, text)


PLAIN_CASES = [
    ("FATAL: remaining connection slots are reserved for non-replication superuser connections",
     "worker pods x 40 each open their own pool", "connection_pool_exhausted"),
    ("ENOSPC: no space left on device, write", "/var/lib/docker on build-host-9", "disk_full"),
    ("Nightly job fails: Deadlock found when trying to get lock; try restarting transaction",
     "two jobs update invoices and payments in opposite order", "deadlock"),
    ("Could not resolve host: api.example.test", "resolver 10.0.0.2 not answering since 02:00", "dns_resolution_failure"),
    ("x509: certificate has expired or is not yet valid", "calling https://svc.example.test", "tls_certificate_expired"),
]


@pytest.mark.parametrize("title, body, expected", PLAIN_CASES)
def test_shipped_vocabulary_on_plain_cases(title, body, expected):
    found = detection.infer(title, body)
    assert found is not None and found.root_cause == expected, found and found.explain()
    assert found.matched


def test_shipped_vocabulary_says_nothing_about_unrelated_text():
    assert detection.infer("Quarterly roadmap review", "agenda: hiring, offsite, budget") is None


def test_shipped_vocabulary_regexes_compile_and_are_gated():
    causes, min_score, min_margin = detection.vocabulary()
    assert min_score > 0 and min_margin > 0
    assert len({(c.domain, c.root_cause) for c in causes}) == len(causes)
    ungated = [source for c in causes for _, source, _, gate in c.signals + c.against if gate is None]
    assert len(ungated) <= 3, ungated


def _labelled_texts():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "data")
    for path in (os.path.join(root, "eval_reports.jsonl"), os.path.join(root, "dev", "reports.jsonl")):
        with open(path) as handle:
            for line in handle:
                if line.strip():
                    report = json.loads(line)
                    yield report["title"], report["body"]


def test_prefilter_gives_the_same_result_as_running_every_regex_on_the_labelled_sets():
    texts = list(_labelled_texts()) + [(t, "") for t in TEXTS] + [(c[0], c[1]) for c in PLAIN_CASES]
    assert len(texts) > 700
    for title, body in texts:
        gated, ungated = detection.infer(title, body), detection.infer(title, body, prefilter=False)
        assert (gated and gated.explain()) == (ungated and ungated.explain()), title


def test_every_alternative_is_gated_soundly_on_the_labelled_sets():
    """Stronger than the end result: no alternative of any signal matches a text that lacks all
    of its gate literals."""
    causes, _, _ = detection.vocabulary()
    prefilter = detection._prefilter()
    texts = [text for pair in _labelled_texts() for text in pair] + TEXTS
    alternatives = [alt for c in causes for alts, *_ in c.signals + c.against for alt in alts]
    for text in texts:
        present = detection._present(text, prefilter)
        for regex, gate in alternatives:
            if gate is not None and gate.isdisjoint(present):
                assert not regex.search(text), (regex.pattern, text)


@pytest.mark.parametrize("signal, literals", [
    (r"abc", {"abc"}), (r"ab?c", {"a"}), (r"ab+c", {"ab"}), (r"x(foo|bar)y", {"foo", "bar"}),
    (r"(foo|b)?longer", {"longer"}), (r"(?:Foo|BAR)\b", {"foo", "bar"}), (r"(?=abc)x", {"x"}),
    (r"(?!abcd)xy", {"xy"}), (r"a{0,3}bc", {"bc"}), (r"ab{2}c", {"ab"}), (r"\bkms:Decrypt\b", {"kms:decrypt"}),
    (r"[a-z]+ized", {"ized"}), ("caf\u00e9 open", {" open"}), (r"a\.b", {"a.b"}), (r"a{x", {"a{x"}),
    (r"\d+ms", {"ms"}), (r"(?-i:OOMKilled)", {"oomkilled"}), (r"(?i)abc", {"abc"}), (r"a|b\d", {"a", "b"}),
])
def test_gate_literals(signal, literals):
    assert detection._gate(signal) == literals


@pytest.mark.parametrize("signal", [r"\d+", r"(a|\d)", r"x?", r"(?P<n>a)(?P=n)", r"\x41b"])
def test_no_gate_when_nothing_is_required_or_understood(signal):
    assert detection._gate(signal) is None


def test_dotless_i_matches_as_ignorecase_does():
    # re.IGNORECASE lets "i" match U+0131, which case-folds to itself: the fold maps it
    assert re.search("invalid", "\u0131nvalid", re.IGNORECASE)
    assert "invalid" in detection._fold("\u0131nvalid")
