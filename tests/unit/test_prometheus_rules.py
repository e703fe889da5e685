"""The chart's alerting rules through Debian's `promtool test rules`, and their series names.

The rules are the ones the chart renders (`helm template`, the rules ConfigMap, which carries the
same text as the PrometheusRule), not a copy. promtool comes from the trixie root (`make
trixie-root`, package `promtool`) and runs there through tools/devstack/chroot-run.sh. For every
alert the test series make it fire once and stay silent once (below its threshold, or with the
series of another release or role around it), at the thresholds read from values.yaml and at
changed ones. A second test checks that every `poolwarden_*` series a rule reads is one the
operator (`poolwarden_operator.metrics.EXPOSED`) or the library (`poolwarden.metrics`) defines.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_chart_render import CHART, FULL, HELM, NAMESPACE, PGBOUNCER, POSTGRESQL, ROOT, ci, render

TRIXIE_ROOT = Path(os.environ.get("TRIXIE_ROOT", ROOT / ".tools" / "trixie-root"))
PROMTOOL = TRIXIE_ROOT / "usr" / "bin" / "promtool"
CHROOT_RUN = ROOT / "tools" / "devstack" / "chroot-run.sh"
RULES_CM = f"{FULL}-prometheus-rules"

pytestmark = [
    pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}"),
    pytest.mark.skipif(
        not PROMTOOL.exists() and not os.environ.get("CI"),
        reason=f"promtool not in the trixie root ({PROMTOOL}): run `make trixie-root`",
    ),
]

BUDGET = 90  # poolwarden_budget_connections of the test series
INTERVAL = 15  # seconds between test samples
PGB_PODS = (f"{PGBOUNCER}-5f7d9c-abcde", f"{PGBOUNCER}-5f7d9c-fghij")
PG_POD = f"{POSTGRESQL}-0"
ROLE = "poolwarden"  # postgresql.auth.username
OURS = {"namespace": NAMESPACE, "budget": FULL}


def rendered_rules(sets: dict[str, str]) -> str:
    # --set-json: `--set` would turn 0.5 into a string
    typed = []
    for key, raw in sets.items():
        typed += ["--set-json", f"{key}={json.dumps(typed_value(key, raw))}"]
    r = render(ci("metrics"), sets={"monitoring.rulesConfigMap.enabled": "true"}, extra_args=typed)
    [cm] = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"] == RULES_CM]
    return cm["data"]["poolwarden.rules.yaml"]


def seconds(duration: str) -> int:
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return math.ceil(sum(int(n) * unit[u] for n, u in parts))


def series(name: str, value: float, **labels: str) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "value": value}


def go_value(v: float) -> str:
    """How Prometheus' templates print $value (Go's %v of a float64) for these cases."""
    return str(int(v)) if float(v).is_integer() else repr(v)


def expand(text: str, value: float, labels: dict[str, str]) -> str:
    """The few template forms the rules' annotations use, as Prometheus expands them."""
    text = text.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    text = text.replace("{{ $value }}", go_value(value))
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    assert "{{" not in text, f"a template form this test does not expand: {text}"
    return text


class Case:
    """One promtool test group: input series, one alert evaluated at one time; with `value`
    (the alert's $value) it must fire, without it it must not."""

    def __init__(self, alert, what, input_series, eval_s, value=None, labels=None):
        self.alert, self.what, self.input, self.eval_s = alert, what, input_series, eval_s
        self.fires, self.value, self.labels = value is not None, value, labels or {}


def cases(values: dict) -> list[Case]:
    """Firing and silent cases for every alert, at the thresholds in `values` (monitoring.rules)."""
    def after(key):  # evaluated once the alert's `for` has passed
        return seconds(values[key]["for"]) + 60

    budget = [series("poolwarden_budget_connections", BUDGET, **OURS)]
    out: list[Case] = []

    # PoolwardenBudgetNearlyUsed: server connections of every PgBouncer pod / budget > ratio
    ratio = values["budgetNearlyUsed"]["ratio"]
    held_max = math.floor(BUDGET * ratio + 1e-9)  # at most ratio x budget: silent
    def pgbouncer_servers(total, noise=True):
        active, idle = total // 2, total - total // 2
        s = [
            series("pgbouncer_pools_server_active_connections", active, namespace=NAMESPACE,
                   pod=PGB_PODS[0], database="app", user=ROLE),
            series("pgbouncer_pools_server_idle_connections", idle, namespace=NAMESPACE,
                   pod=PGB_PODS[1], database="app", user=ROLE),
            series("pgbouncer_pools_server_used_connections", 0, namespace=NAMESPACE,
                   pod=PGB_PODS[1], database="app", user=ROLE),
        ]
        if noise:  # another release in the namespace, the same names in another namespace
            s += [
                series("pgbouncer_pools_server_active_connections", 1000, namespace=NAMESPACE,
                       pod="other-poolwarden-pgbouncer-1-a", database="app", user=ROLE),
                series("pgbouncer_pools_server_active_connections", 1000, namespace="elsewhere",
                       pod=PGB_PODS[0], database="app", user=ROLE),
            ]
        return s

    a, key = "PoolwardenBudgetNearlyUsed", "budgetNearlyUsed"
    out.append(Case(a, "above the ratio for long enough", budget + pgbouncer_servers(held_max + 1),
                    after(key), value=(held_max + 1) / BUDGET))
    out.append(Case(a, "at most the ratio, other releases' pods around",
                    budget + pgbouncer_servers(held_max), after(key)))
    if seconds(values[key]["for"]) >= 2 * INTERVAL:
        out.append(Case(a, "above the ratio, not yet for long enough",
                        budget + pgbouncer_servers(held_max + 1),
                        seconds(values[key]["for"]) // 2))

    # PoolwardenClientsWaiting: waiting clients per database alias > above
    above = values["clientsWaiting"]["above"]
    def waiting(app_total, worker_total):
        s = []
        for database, total in (("app", app_total), ("worker", worker_total)):
            first = total // 2
            for pod, n in zip(PGB_PODS, (first, total - first), strict=True):
                s.append(series("pgbouncer_pools_client_waiting_connections", n,
                                namespace=NAMESPACE, pod=pod, database=database, user=ROLE))
        s.append(series("pgbouncer_pools_client_waiting_connections", 50, namespace="elsewhere",
                        pod=PGB_PODS[0], database="worker", user=ROLE))
        return s

    a, key = "PoolwardenClientsWaiting", "clientsWaiting"
    out.append(Case(a, "one alias above, one at the threshold", waiting(above + 1, above),
                    after(key), value=above + 1, labels={"database": "app"}))
    out.append(Case(a, "both aliases at the threshold, another namespace far above",
                    waiting(above, above), after(key)))

    # PoolwardenBudgetOvercommitted / NotReady / PlanNotApplied: the operator's flags
    other = {"namespace": NAMESPACE, "budget": "other-poolwarden"}
    for a, key, name, bad, good in (
        ("PoolwardenBudgetOvercommitted", "overcommitted", "poolwarden_budget_overcommitted", 1, 0),
        ("PoolwardenBudgetNotReady", "notReady", "poolwarden_budget_ready", 0, 1),
        ("PoolwardenPlanNotApplied", "notApplied", "poolwarden_budget_plan_applied", 0, 1),
    ):
        out.append(Case(a, "this budget", [series(name, bad, **OURS)], after(key), value=bad))
        out.append(Case(a, "this budget fine, another one not",
                        [series(name, good, **OURS), series(name, bad, **other)], after(key)))

    # PoolwardenBackstopMissing: the app role's CONNECTION LIMIT missing, above budget, superuser
    def role(limit, superuser, name=ROLE, namespace=NAMESPACE):
        labels = {"namespace": namespace, "pod": PG_POD, "rolname": name}
        return [series("pg_role_connection_limit", limit, **labels),
                series("pg_role_superuser", superuser, **labels)]

    noise = role(-1, 1, name="postgres") + role(-1, 0, namespace="elsewhere")
    a, key = "PoolwardenBackstopMissing", "backstopMissing"
    out.append(Case(a, "no CONNECTION LIMIT", budget + role(-1, 0), after(key), value=-1))
    out.append(Case(a, "a limit above the budget", budget + role(BUDGET + 1, 0), after(key),
                    value=BUDGET + 1))
    out.append(Case(a, "a superuser", budget + role(BUDGET, 1), after(key), value=1))
    out.append(Case(a, "the limit is the budget, other roles unlimited",
                    budget + role(BUDGET, 0) + noise, after(key)))
    return out


def promtool_test_file(rules_text: str, all_cases: list[Case]) -> dict:
    rules = {r["alert"]: r for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"]}
    groups = []
    for case in all_cases:
        rule = rules[case.alert]
        samples = case.eval_s // INTERVAL + 4
        expected = []
        if case.fires:
            labels = {**rule["labels"], **case.labels}
            annotations = {k: expand(v, case.value, labels) for k, v in rule["annotations"].items()}
            expected = [{"exp_labels": labels, "exp_annotations": annotations}]
        groups.append({
            "name": f"{case.alert}: {case.what}",
            "interval": f"{INTERVAL}s",
            "input_series": [
                {"series": s["series"], "values": f"{s['value']}x{samples}"} for s in case.input
            ],
            "alert_rule_test": [
                {"eval_time": f"{case.eval_s}s", "alertname": case.alert, "exp_alerts": expected}
            ],
        })
    return {"rule_files": ["rules.yaml"], "evaluation_interval": f"{INTERVAL}s", "tests": groups}


def promtool(tmp_path: Path, rules_text: str, test_file: dict) -> subprocess.CompletedProcess:
    if not PROMTOOL.exists():
        pytest.fail(f"promtool not in the trixie root ({PROMTOOL}): run `make trixie-root`")
    ro, state = tmp_path / "ro", tmp_path / "state"
    ro.mkdir()
    state.mkdir()
    (ro / "rules.yaml").write_text(rules_text)
    (ro / "tests.yaml").write_text(yaml.safe_dump(test_file, sort_keys=False))
    for path in (tmp_path, ro, ro / "rules.yaml", ro / "tests.yaml"):
        path.chmod(0o755)
    state.chmod(0o777)
    return subprocess.run(
        [str(CHROOT_RUN), str(TRIXIE_ROOT), str(state), str(ro), "--",
         "sh", "-c",
         "cd /mnt/ro && promtool check rules rules.yaml && promtool test rules tests.yaml"],
        capture_output=True, text=True, timeout=120,
    )


DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["rules"]
CHANGED = {
    "monitoring.rules.budgetNearlyUsed.ratio": "0.5",
    "monitoring.rules.budgetNearlyUsed.for": "90s",
    "monitoring.rules.clientsWaiting.above": "3",
    "monitoring.rules.overcommitted.for": "0s",
    "monitoring.rules.notApplied.for": "3m",
    "monitoring.rules.backstopMissing.for": "10m",
}


def typed_value(key: str, raw: str):
    return raw if key.endswith(".for") else yaml.safe_load(raw)


def values_with(sets: dict[str, str]) -> dict:
    values = yaml.safe_load(yaml.safe_dump(DEFAULTS))
    for key, raw in sets.items():
        *path, leaf = key.removeprefix("monitoring.rules.").split(".")
        node = values
        for p in path:
            node = node[p]
        node[leaf] = typed_value(key, raw)
    return values


@pytest.mark.parametrize("sets", [{}, CHANGED], ids=["defaults", "changed-thresholds"])
def test_every_alert_fires_and_stays_silent_under_promtool(tmp_path, sets):
    rules_text = rendered_rules(sets)
    all_cases = cases(values_with(sets))
    alerts = {r["alert"] for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"]}
    assert len(alerts) == 6, alerts
    assert {c.alert for c in all_cases if c.fires} == alerts
    assert {c.alert for c in all_cases if not c.fires} == alerts
    proc = promtool(tmp_path, rules_text, promtool_test_file(rules_text, all_cases))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_promtool_fails_when_a_rule_misses_its_threshold(tmp_path):
    """The harness is not a rubber stamp: a rule with a moved threshold fails its cases."""
    rules_text = rendered_rules({})
    ratio = DEFAULTS["budgetNearlyUsed"]["ratio"]
    broken = rules_text.replace(f") > {ratio}\n", f") > {ratio + 0.05:.2f}\n")
    assert broken != rules_text
    proc = promtool(tmp_path, broken, promtool_test_file(broken, cases(DEFAULTS)))
    assert proc.returncode != 0
    failed = proc.stdout + proc.stderr
    assert "PoolwardenBudgetNearlyUsed: above the ratio for long enough" in failed


# --- series names: the rules read only what the operator and the library define ----------------

SERIES_NAME = re.compile(r"(?<![\w:])(poolwarden_[a-zA-Z0-9_]+)")


def library_series() -> set[str]:
    from poolwarden.metrics import PoolMetrics

    names = set()
    for family in PoolMetrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def poolwarden_series(expr: str) -> set[str]:
    """The poolwarden_* metric names an expression reads (string literals are not names)."""
    for matcher in re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr):
        assert "poolwarden" not in matcher, f"a series named by a regex escapes this check: {expr}"
    return set(SERIES_NAME.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))


def test_the_name_scanner_sees_names_and_ignores_label_values():
    expr = 'max(poolwarden_budget_conections{budget="poolwarden_x"}) / pg_poolwarden_y'
    assert poolwarden_series(expr) == {"poolwarden_budget_conections"}


def test_every_poolwarden_series_in_the_rules_is_defined_by_the_operator_or_the_library():
    from poolwarden_operator.metrics import EXPOSED

    known = set(EXPOSED) | library_series()
    assert "poolwarden_pool_checked_out" in known and "poolwarden_budget_ready" in known
    rules = yaml.safe_load(rendered_rules({}))
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = poolwarden_series(rule["expr"])
            assert names <= known, (rule["alert"], sorted(names - known))
            used |= names
    # the rules really read the operator's series (the check above is not vacuous)
    assert {"poolwarden_budget_connections", "poolwarden_budget_overcommitted",
            "poolwarden_budget_ready", "poolwarden_budget_plan_applied"} <= used
