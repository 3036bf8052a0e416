"""The observability files under deploy/ and the compose stack that runs them.

- The Prometheus rules pass `promtool check rules` and their unit tests
  (`promtool test rules`); the config passes `promtool check config`; every dashboard
  query parses as PromQL. promtool comes from Debian's `prometheus` package: .ci/run
  installs it. Without it these tests skip on a developer's machine and fail when `CI` is
  set (as tests/support.py does for PostgreSQL and Redis).
- Every metric a panel or a rule names is on the API's /metrics: a running app is scraped
  after a send and its delivery.
- compose.yaml: `docker compose config` where a client exists, and always its structure:
  a healthcheck on every long-running service, conditions on every dependency, the
  provisioning paths it mounts exist here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.factories import World
from tests.support import Stack
from worker.domain.metrics import WAIT_BUCKETS
from worker.models import EmailStatus

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "securesend.json"

# The sample names (as /metrics prints them) that deploy/ uses, in rule and panel queries.
# test_the_metric_sets_here_are_what_deploy_uses keeps these sets equal to what the files name.
METRICS_ON_METRICS_TODAY = {
    "securesend_sends_total",
    "securesend_jobs_unfinished",
    "securesend_outbox_emails",
    "securesend_email_retries_total",
    "securesend_email_failures_total",
    "securesend_takeovers_total",
    "securesend_workers_alive",
    "securesend_broker_queue_length",
}
# Expected, added by issue 18 part 2: the histogram `securesend_queue_wait_seconds`
# (labels `queue`: send, mail; `lane`: interactive, bulk). Until it lands, /metrics has a
# gauge of that name with `quantile` labels, which has none of these series, and the
# scrape test fails for them.
ADDED_BY_ISSUE_18_PART_2 = {
    "securesend_queue_wait_seconds_bucket",
    "securesend_queue_wait_seconds_sum",
    "securesend_queue_wait_seconds_count",
}
# Issue 25, delivery at the relay's pace: always on /metrics once an email was delivered...
PACE_METRICS = {
    "securesend_mail_relay_emails_total",
    "securesend_mail_relay_up",
    "securesend_mail_active_relay",
}
# ...and only where a limit is set or a relay throttled (tests/test_pace.py scrapes them).
PACE_METRICS_WHEN_LIMITED = {"securesend_mail_pace", "securesend_mail_domain_emails_total"}
# Issue 27, bounces, suppressions and webhooks: always on /metrics (every label value
# the queries select, at 0 when there is none)...
REPUTATION_AND_WEBHOOK_METRICS = {
    "securesend_email_bounces",
    "securesend_suppressions",
    "securesend_webhook_backlog",
    "securesend_webhook_endpoints",
}
# ...and, one series per endpoint and outcome, only where a webhook endpoint exists
# (tests/worker/test_metrics.py reads them).
WEBHOOK_METRICS_WITH_ENDPOINTS = {"securesend_webhook_deliveries"}
# On /metrics only in some states: the scrape test does not ask for them.
METRICS_NOT_ALWAYS_THERE = PACE_METRICS_WHEN_LIMITED | WEBHOOK_METRICS_WITH_ENDPOINTS
DEPLOY_METRICS = (
    METRICS_ON_METRICS_TODAY
    | ADDED_BY_ISSUE_18_PART_2
    | PACE_METRICS
    | REPUTATION_AND_WEBHOOK_METRICS
    | METRICS_NOT_ALWAYS_THERE
)

REQUIRED_ALERTS = {
    "SecuresendNoWorkerAlive",
    "SecuresendInteractiveWaitHigh",
    "SecuresendQueueWaitHigh",
    "SecuresendEmailFailuresRising",
    "SecuresendJobsStuck",
    "SecuresendBounceRateHigh",
    "SecuresendWebhookEndpointDisabled",
}
# Services that run once and exit; the others run for good and need a healthcheck.
ONE_SHOT_SERVICES = {"migrate"}

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])securesend_[a-z0-9_]*[a-z0-9]")
# An equality or regex label matcher right after a metric name: name{label="value", ...}
SELECTOR = re.compile(r"(securesend_[a-z0-9_]*[a-z0-9])\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|=|!=|!~)\s*"((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# --- reading the files -----------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alert_rules() -> list[dict[str, Any]]:
    groups = _yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # the panels of a collapsed row
    return panels


def _dashboard_queries() -> dict[str, str]:
    """'panel title / refId' -> PromQL."""
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in _panels()
        for target in panel.get("targets", [])
    }


def _deploy_queries() -> dict[str, str]:
    rules = {f"alert {rule['alert']}": str(rule["expr"]) for rule in _alert_rules()}
    panels = {f"panel {where}": expr for where, expr in _dashboard_queries().items()}
    return rules | panels


def _compose() -> dict[str, Any]:
    return dict(_yaml(ROOT / "compose.yaml"))


# --- promtool ---------------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = (
            "promtool is not on PATH (Debian: apt-get install --no-install-recommends "
            "prometheus; .ci/run does it)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI needs it", pytrace=False)
        pytest.skip(reason)
    return found


def _run_promtool(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_alert_rules_pass_promtool_check() -> None:
    output = _run_promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert f"SUCCESS: {len(_alert_rules())} rules found" in output


def test_alert_rules_pass_their_unit_tests() -> None:
    _run_promtool("test", "rules", "deploy/prometheus/alerts_test.yml")


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    alerts = {rule["alert"] for rule in _alert_rules()}
    assert REQUIRED_ALERTS <= alerts
    fires: set[str] = set()
    silent: set[str] = set()
    for case in _yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - fires == set(), "alerts no test fires"
    assert alerts - silent == set(), "alerts no test shows silent"


def test_alert_rules_say_how_bad_and_what_happened() -> None:
    for rule in _alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheus_config_passes_promtool_check() -> None:
    # Checks the rule files it names too; resolves no host.
    _run_promtool("check", "config", "deploy/prometheus/prometheus.yml")
    config = _yaml(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "securesend-api"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8080"]
    assert "8080:8080" in _compose()["services"]["api"]["ports"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no command for a bare query: check them as recording rules.
    queries = _dashboard_queries()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries.values())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", str(path))


# --- the dashboard and its provisioning ---------------------------------------------------


def test_dashboard_has_the_panels_operations_needs() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "securesend"
    panels = [p for p in _panels() if p["type"] != "row"]
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queries = " ".join(_dashboard_queries().values())
    for what in (
        "securesend_sends_total",  # sends by result code
        "securesend_queue_wait_seconds_bucket",  # queue wait p50 / p95
        "securesend_jobs_unfinished",  # backlog
        "securesend_broker_queue_length",
        "securesend_outbox_emails",  # email outcomes
        "securesend_email_retries_total",
        "securesend_email_failures_total",
        "securesend_workers_alive",
        "securesend_takeovers_total",
        "securesend_email_bounces",  # bounces by kind
        "securesend_suppressions",
        "securesend_webhook_deliveries",  # by endpoint and outcome
        "securesend_webhook_backlog",
        'securesend_webhook_endpoints{state="disabled"}',
    ):
        assert what in queries, what
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0


def test_dashboard_uses_the_provisioned_datasource() -> None:
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")["datasources"]
    (prometheus,) = [s for s in sources if s["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in _compose()["services"]
    for panel in _panels():
        targets = panel.get("targets", [])
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in targets)]:
            if ref is not None:
                assert ref == {"type": "prometheus", "uid": prometheus["uid"]}, panel["title"]


def test_grafana_provisioning_is_mounted_where_it_points() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if ":" in volume)
    for source in mounts:
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), f"compose mounts {source}, missing here"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "securesend.yml")["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert "${GRAFANA_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


# --- queue wait by lane ----------------------------------------------------------------------

QUEUE_WAIT_BUCKET = "securesend_queue_wait_seconds_bucket"
# histogram_quantile(0.95, ... {selector}[window]))) > threshold
QUANTILE_RULE = re.compile(
    r"histogram_quantile\(0\.95, sum by \(le, queue, lane\) \(rate\("
    + QUEUE_WAIT_BUCKET
    + r"\{([^}]*)\}\[\w+\]\)\)\) (>=?) ([0-9.]+)"
)


def _queue_wait_conditions() -> dict[tuple[str, str], tuple[str, str, float, str]]:
    """(queue, lane) -> (alert, comparison, threshold, severity), for every queue-wait rule."""
    conditions: dict[tuple[str, str], tuple[str, str, float, str]] = {}
    for rule in _alert_rules():
        expr = str(rule["expr"])
        if QUEUE_WAIT_BUCKET not in expr:
            continue
        found = QUANTILE_RULE.findall(expr)
        assert found, f"{rule['alert']}: not p95 by (le, queue, lane) against a threshold"
        # Each `or` branch is one p95 and its threshold.
        assert len(found) == expr.count("histogram_quantile"), rule["alert"]
        for selector, comparison, threshold in found:
            labels = {label: value for label, op, value in MATCHER.findall(selector) if op == "="}
            key = (labels["queue"], labels["lane"])
            assert key not in conditions, f"{key} has two queue-wait conditions"
            severity = rule["labels"]["severity"]
            conditions[key] = (rule["alert"], comparison, float(threshold), severity)
    return conditions


def test_queue_wait_alerts_split_by_lane() -> None:
    conditions = _queue_wait_conditions()
    # Every queue and lane has exactly one condition (the `sum by` keeps both labels).
    assert set(conditions) == {
        (q, lane) for q in ("send", "mail") for lane in ("interactive", "bulk")
    }
    # The page: a caller waits on HTTP, p95 above 2 s.
    assert conditions["send", "interactive"] == (
        "SecuresendInteractiveWaitHigh",
        ">",
        2.0,
        "critical",
    )
    for key in (("send", "bulk"), ("mail", "interactive"), ("mail", "bulk")):
        alert, _, _, severity = conditions[key]
        assert (alert, severity) == ("SecuresendQueueWaitHigh", "warning"), key
    # Bulk waits during a batch are expected: its thresholds are far above the interactive ones.
    assert conditions["send", "bulk"][2] > 10 * conditions["send", "interactive"][2]
    assert conditions["mail", "bulk"][2] > conditions["mail", "interactive"][2]
    for key, (alert, comparison, threshold, _) in conditions.items():
        # Exact, not interpolated: a bound of the histogram the API serves.
        assert threshold in WAIT_BUCKETS, (key, threshold)
        # histogram_quantile answers the last finite bound for a p95 beyond it: `>` that
        # bound could never fire.
        if threshold == max(WAIT_BUCKETS):
            assert comparison == ">=", (key, alert)
    (page,) = [r for r in _alert_rules() if r["alert"] == "SecuresendInteractiveWaitHigh"]
    assert page["for"] == "5m"
    assert "securesend.send.interactive" in page["annotations"]["description"]


def test_dashboard_shows_queue_wait_by_lane() -> None:
    wait_queries = {
        where: expr
        for where, expr in _dashboard_queries().items()
        if "securesend_queue_wait" in expr
    }
    assert wait_queries
    for where, expr in wait_queries.items():
        assert re.search(r"by \((le, )?queue, lane\)", expr), f"{where} is not split by lane"
    legends = [
        target.get("legendFormat", "")
        for panel in _panels()
        for target in panel.get("targets", [])
        if "securesend_queue_wait" in target["expr"]
    ]
    assert all("{{lane}}" in legend and "{{queue}}" in legend for legend in legends), legends
    # The paging quantity on its own, with its 2 s line: the alert's own expression.
    (page,) = [r for r in _alert_rules() if r["alert"] == "SecuresendInteractiveWaitHigh"]
    page_query = str(page["expr"]).strip().removesuffix("> 2").strip()
    shown = [p for p in _panels() if any(t["expr"] == page_query for t in p.get("targets", []))]
    assert shown, "no panel shows the expression of SecuresendInteractiveWaitHigh"
    for panel in shown:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1] == {"color": "red", "value": 2}, panel["title"]


# --- every metric the deploy files name is on /metrics -------------------------------------


def test_the_metric_sets_here_are_what_deploy_uses() -> None:
    used = {name for expr in _deploy_queries().values() for name in METRIC_NAME.findall(expr)}
    assert used == DEPLOY_METRICS, (
        f"deploy/ names {sorted(used - DEPLOY_METRICS)} not listed here, "
        f"and no longer names {sorted(DEPLOY_METRICS - used)}"
    )


def _scrape_text(stack: Stack) -> str:
    with stack.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def _samples(text: str) -> list[tuple[str, dict[str, str]]]:
    samples = []
    for line in text.splitlines():
        if line and not line.startswith("#") and (match := SAMPLE.match(line)):
            samples.append((match[1], dict(LABEL.findall(match[2] or ""))))
    return samples


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _problems(text: str) -> list[str]:
    """What the exposition `text` lacks of what deploy/ uses: the sample names, a
    histogram's type, and the label values the queries select."""
    samples = _samples(text)
    names = {name for name, _ in samples}
    missing = sorted(DEPLOY_METRICS - METRICS_NOT_ALWAYS_THERE - names)
    problems = [
        f"{name}: expected, added by issue 18 part 2 (the securesend_queue_wait_seconds "
        "histogram), not on /metrics yet"
        if name in ADDED_BY_ISSUE_18_PART_2
        else f"{name}: not on /metrics"
        for name in missing
    ]
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name in sorted(DEPLOY_METRICS & names):
        if name.endswith("_bucket"):
            family = name.removesuffix("_bucket")
            if types.get(family) != "histogram":
                problems.append(f"{name}: {family} is a {types.get(family)}, not a histogram")
    # The label values the queries select must exist too (status="failed", queue="send").
    for where, expr in _deploy_queries().items():
        for name, selector in SELECTOR.findall(expr):
            if name not in names:
                continue  # reported above
            for label, op, value in MATCHER.findall(selector):
                if op not in ("=", "=~"):
                    continue
                wanted = value.split("|") if op == "=~" else [value]
                seen = {labels.get(label) for n, labels in samples if n == name}
                absent = [w for w in wanted if w not in seen]
                if absent:
                    problems.append(f"{where}: {name} has no {label}={absent} (has {seen})")
    return problems


def _exposition(
    *,
    queue_wait: str,
    queues: tuple[str, ...] = ("send", "mail"),
    lanes: tuple[str, ...] = ("interactive", "bulk"),
) -> str:
    """A /metrics text like the API's, with today's queue-wait gauge or with the
    histogram of issue 18 part 2 observed on `queues` and `lanes` (none: a histogram
    without the `lane` label)."""
    registry = CollectorRegistry()
    Counter("securesend_sends", "", ["code"], registry=registry).labels("OK").inc()
    Gauge("securesend_jobs_unfinished", "", registry=registry)
    outbox = Gauge("securesend_outbox_emails", "", ["status"], registry=registry)
    for status in EmailStatus:
        outbox.labels(status.value)
    Counter("securesend_email_retries", "", registry=registry)
    Counter("securesend_email_failures", "", registry=registry)
    takeovers = Counter("securesend_takeovers", "", ["kind"], registry=registry)
    for kind in ("jobs", "emails"):
        takeovers.labels(kind)
    Gauge("securesend_workers_alive", "", registry=registry)
    Gauge("securesend_broker_queue_length", "", ["queue"], registry=registry).labels("x")
    relay = ["relay", "host"]
    Counter("securesend_mail_relay_emails", "", [*relay, "event"], registry=registry).labels(
        "0", "smtp:25", "sent"
    ).inc()
    Gauge("securesend_mail_relay_up", "", relay, registry=registry).labels("0", "smtp:25")
    Gauge("securesend_mail_active_relay", "", registry=registry)
    for name, label, label_values in (
        ("securesend_email_bounces", "kind", ("hard", "soft", "complaint")),
        ("securesend_suppressions", "source", ("manual", "bounce", "complaint")),
        ("securesend_webhook_endpoints", "state", ("enabled", "disabled")),
    ):
        gauge = Gauge(name, "", [label], registry=registry)
        for value in label_values:
            gauge.labels(value)
    Gauge("securesend_webhook_backlog", "", registry=registry)
    if queue_wait == "histogram":
        labels = ["queue", "lane"] if lanes else ["queue"]
        series = [(q, lane) for q in queues for lane in lanes] if lanes else [(q,) for q in queues]
        wait = Histogram(
            "securesend_queue_wait_seconds", "", labels, buckets=WAIT_BUCKETS, registry=registry
        )
        for values in series:
            wait.labels(*values).observe(0.2)
    else:
        gauge = Gauge("securesend_queue_wait_seconds", "", ["quantile"], registry=registry)
        gauge.labels("0.5").set(0.2)
    return generate_latest(registry).decode()


def test_the_metrics_check_wants_the_histogram_of_issue_18() -> None:
    assert _problems(_exposition(queue_wait="histogram")) == []
    today = _problems(_exposition(queue_wait="gauge"))
    assert len(today) == len(ADDED_BY_ISSUE_18_PART_2)
    assert all("expected, added by issue 18 part 2" in problem for problem in today)
    send_only = _problems(_exposition(queue_wait="histogram", queues=("send",)))
    assert send_only and all("queue=['mail']" in problem for problem in send_only)
    # The queries select by lane: a histogram without that label, or without bulk, falls short.
    no_lanes = _problems(_exposition(queue_wait="histogram", lanes=()))
    assert any("lane=['interactive']" in problem for problem in no_lanes)
    assert any("lane=['bulk']" in problem for problem in no_lanes)
    interactive_only = _problems(_exposition(queue_wait="histogram", lanes=("interactive",)))
    assert interactive_only and all("lane=['bulk']" in p for p in interactive_only)


def test_every_metric_deploy_uses_is_on_metrics(postgres_stack: Stack, unique: str) -> None:
    """A real scrape after a send and the delivery of its email, so that the labelled
    series exist."""
    sent = 'securesend_outbox_emails{status="sent"}'
    before = _value(_scrape_text(postgres_stack), sent)
    world = World(postgres_stack, unique).setup()
    assert world.send(world.draft(to=[world.user("r")])).status_code == 200
    deadline = time.monotonic() + 30
    while (text := _scrape_text(postgres_stack)) and _value(text, sent) <= before:
        assert time.monotonic() < deadline, "the send's email was not delivered in 30 s"
        time.sleep(0.2)

    problems = _problems(text)
    assert not problems, "\n".join(problems)


# --- compose -------------------------------------------------------------------------------


def _compose_client() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return command
    return None


def test_compose_config_is_valid() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip(
            "no docker compose client here; test_compose_structure checks the file's structure"
        )
    env = {
        **os.environ,
        "SECRET_KEY": "x",
        "FLOWER_PASSWORD": "x",
        "GRAFANA_PASSWORD": "x",
    }
    result = subprocess.run(
        [*client, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_structure() -> None:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    assert {"prometheus", "grafana", "jaeger", "mailcatcher"} <= set(services)
    for name, service in services.items():
        if name not in ONE_SHOT_SERVICES:
            assert "healthcheck" in service, f"{name} runs for good and has no healthcheck"
            test = service["healthcheck"]["test"]
            assert test and test[0] in ("CMD", "CMD-SHELL"), name
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, condition in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency in ONE_SHOT_SERVICES:
                assert condition == {"condition": "service_completed_successfully"}, name
            else:
                assert condition == {"condition": "service_healthy"}, (name, dependency)
    for one_shot in ONE_SHOT_SERVICES:
        assert "restart" not in services[one_shot]
    # The workers deliver to the mail catcher: they start once it answers.
    assert "mailcatcher" in services["worker"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]

    # Prometheus reads the repository's config and rules.
    prometheus = services["prometheus"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts == {"./deploy/prometheus": "/etc/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])

    # The services export traces to Jaeger, each under its own name.
    for name, service_name in (("api", "securesend-api"), ("worker", "securesend-worker")):
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert env["OTEL_SERVICE_NAME"] == service_name
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
