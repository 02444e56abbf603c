import json, random, re, sys
from collections import Counter, defaultdict
sys.path.insert(0, "/work/labelled/fresh/src")
from notes import NOTES
# Alert integrations that send only a title (no description) for these monitors.
NO_BODY = {"[FIRING:2] CoreDNSErrorsHigh kube-system", "accounts-db-replica-2: long-running query > 30m from user bi_reader",
           "[FIRING:1] PostgresBlockedQueries catalog-db", "[FIRING:1] RedisMemoryHigh redis-main", "[FIRING:3] RabbitmqDiskAlarm",
           "[FIRING:1] CPUThrottlingHigh pricing/pricing-service", "[FIRING:1] PrometheusNotIngestingSamples prometheus-k8s-1",
           "coredns: container.cpu.throttled > 60% for 30m"}
import g1, g2, g3, g4, g5, g6, g7
groups = g1.GROUPS + g2.GROUPS + g3.GROUPS + g4.GROUPS + g5.GROUPS + g6.GROUPS + g7.GROUPS
recs = []
for g in groups:
    for r in g["reports"]:
        r = dict(domain=g["domain"], root_cause=g["root_cause"], **r)
        if r["hard"] and not r["note"]:
            r["note"] = next((v for (rc, t), v in NOTES.items() if rc == r["root_cause"] and r["title"].startswith(t)), "")
        if r["title"] in NO_BODY:
            r["body"] = ""
        recs.append(r)
rng = random.Random(20240917)
rng.shuffle(recs)
out = []
for i, r in enumerate(recs, 1):
    out.append({"id": f"fr{i:03d}", "domain": r["domain"], "root_cause": r["root_cause"], "source": r["source"],
                "severity": r["severity"], "title": r["title"], "body": r["body"], "hard": r["hard"], "note": r["note"]})
with open("/work/labelled/fresh/reports.jsonl", "w", encoding="utf-8") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")

# README
src = Counter(r["source"] for r in out); sev = Counter(r["severity"] for r in out)
tags = Counter(t for r in out for t in r["hard"]); tagged = sum(1 for r in out if r["hard"])
L = ["# Labelled failure reports (`fr` set)", "",
     f"{len(out)} reports in {len(groups)} groups across {len({g['domain'] for g in groups})} domains. "
     "One JSON object per line in `reports.jsonl`; the pair (`domain`, `root_cause`) is the group label. "
     "Ids were assigned after a seeded shuffle (seed 20240917), so id order carries no information. "
     "Validate with `python3 check.py` (stdlib only; exits non-zero on a problem).", "",
     "Sources (`src/g1.py` … `src/g7.py`) hold the report texts; `src/assemble.py` rebuilds `reports.jsonl` and this README.", "",
     "## Groups", "", "| domain | root_cause | meaning | count |", "|---|---|---|---|"]
for g in sorted(groups, key=lambda g: (g["domain"], g["root_cause"])):
    L.append(f"| {g['domain']} | {g['root_cause']} | {g['meaning']} | {len(g['reports'])} |")
L += ["", "## Sources", "", "| source | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in src.most_common()]
L += ["", "## Severities", "", "| severity | count |", "|---|---|"] + [f"| {k} | {sev[k]} |" for k in ("critical", "high", "medium", "low")]
L += ["", "## Hard cases", "", f"{tagged} of {len(out)} reports ({100*tagged/len(out):.0f}%) carry at least one tag.", "",
      "| tag | reports |", "|---|---|"] + [f"| {k} | {tags[k]} |" for k in ("worded_many_ways", "several_domains", "shared_surface_words", "body_only_clue")]
L += ["", "Deliberate pairs that share a mechanism or surface words but are separate groups:", "",
      "- Connection pool exhaustion: `database/orders_db_pool_held_by_bulk_export` (SQLAlchemy DB pool) vs `payments/adyen_http_client_pool_exhausted` (outbound HTTP pool to the PSP).",
      "- Expired certificates: `network/wildcard_cert_expired_renewal_failed` (edge TLS) vs `mobile/apns_certificate_expired` (APNs client cert) vs `auth/okta_saml_signing_cert_rotated` (IdP signing cert).",
      "- 401s: `auth/gateway_stale_jwks_after_key_rotation` vs `payments/stripe_restricted_key_revoked` vs SSO failures.",
      "- OOM: `compute/image_resizer_memory_leak` vs `caching/redis_noeviction_maxmemory_reached` vs `observability/prometheus_cardinality_from_user_id_label`.",
      "- No space left on device / disk full: `ci/self_hosted_runner_disk_full` vs `storage/logrotate_broken_api_hosts_disk_full` vs `search/es_flood_stage_watermark_read_only`.",
      "- 429 / rate limits: `email/ses_rate_shared_with_marketing_blast`, `ci/docker_hub_anonymous_pull_limit`, the Redis-backed rate limiter, ES bulk rejections.",
      "- Missing emails: DKIM loss, SES throttling, RabbitMQ publisher block, Stripe webhook rejection, duplicate sends from SQS redelivery.",
      "- Pods not starting / restarting: `deploy/helm_release_references_missing_secret` vs `compute/image_resizer_memory_leak`.",
      "- Latency pages: DB pool, missing index, CPU throttling, RabbitMQ publish blocking, migration lock queue.", ""]
open("/work/labelled/fresh/README.md", "w").write("\n".join(L))

# leakage check: words present in every report of a group
def words(r): return set(re.findall(r"[a-z][a-z0-9_.-]{3,}", (r["title"] + " " + r["body"]).lower()))
by = defaultdict(list)
for r in out: by[(r["domain"], r["root_cause"])].append(words(r))
for k, ws in by.items():
    common = set.intersection(*ws)
    frac = Counter(w for s in ws for w in s)
    top = [(w, c) for w, c in frac.most_common(3)]
    print(k, len(ws), "ALL:", sorted(common), "top:", top)
