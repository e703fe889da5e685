"""Pure: a ConnectionBudget (and the plan and sizing files it wrote) as the ledger people read.

`ledger(budget, files, now)` turns the budget object as the API server returns it (a dict) and
the ConfigMaps named in its ``status.files`` into one structured ledger (what `poolwarden
status -o json` prints); `render(ledger)` is the text: the budget line, then per consumer what
was planned (server pool per PgBouncer pod, pool+overflow per worker), its plan file, the pods
still lagging, and what is in use (server connections active and idle, clients waiting, the
peaks); then PgBouncer's sizing and, per PgBouncer pod, whether it applied its sizing file.

Status parts the operator has not written yet (no plan, no ``inUse``, no per-pod list) are
shown as "not sampled yet" / "not planned yet", never as zeros. Every list is cut at `LISTED`
entries (the rest counted) and every cell at a bounded width, so a hand-edited status cannot
make the output unbounded. No I/O here: `poolwarden.kube` reads the cluster.
"""

from __future__ import annotations

import datetime
from typing import Any

from poolwarden import pgbouncer_ini, planfile

LISTED = 10
"""Entries shown of any list (consumers, pods, lagging pods); the operator writes no more."""
NAME_WIDTH = 40
"""A name cell at most (Kubernetes names are up to 253 characters)."""
MESSAGE_WIDTH = 72
"""A message cell at most."""
NOT_SAMPLED = "not sampled yet"
NOT_PLANNED = "not planned yet"
DASH = "-"

Files = dict[str, "dict[str, str] | str"]
"""``status.files`` ref -> the ConfigMap's ``data``, or why it could not be read."""


def cut(text: object, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (``...`` marks a cut)."""
    value = " ".join(str(text).split())
    return value if len(value) <= width else value[: max(0, width - 3)] + "..."


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_deployment(pod: str) -> str:
    """The Deployment a pod belongs to: its name without ``-<pod-template-hash>-<suffix>``."""
    parts = pod.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else pod


def file_refs(budget: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(ref, namespace, ConfigMap) of every file the budget's status records, sorted; a ref
    ``<namespace>/<name>`` is a consumer's file in another namespace (``status.files``)."""
    namespace = str(_dict(budget.get("metadata")).get("namespace", ""))
    refs = []
    for ref in sorted(_dict(_dict(budget.get("status")).get("files"))):
        ns, _, name = str(ref).rpartition("/")
        refs.append((str(ref), ns or namespace, name))
    return refs[: 2 * LISTED + 1]  # bounded reads: listed and discovered consumers, PgBouncer


def _read_files(files: Files) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """(consumer -> its plan file, PgBouncer's sizing file) from the ConfigMaps read."""
    plans: dict[str, dict[str, Any]] = {}
    sizing: dict[str, Any] | None = None
    for ref, data in sorted(files.items()):
        if isinstance(data, str):  # could not be read: keep why, keyed by the ConfigMap
            plans.setdefault(f"?{ref}", {"configmap": ref, "error": data})
            continue
        if pgbouncer_ini.FILE_NAME in data:
            text = data[pgbouncer_ini.FILE_NAME]
            try:
                parsed = pgbouncer_ini.parse(text)
                sizing = {
                    "configmap": ref,
                    "generation": pgbouncer_ini.generation(text),
                    "maxDbConnections": parsed.max_db_connections,
                    "maxUserConnections": parsed.max_user_connections,
                    "aliases": {d.name: d.pool_size for d in parsed.databases},
                }
            except pgbouncer_ini.SizingError as exc:
                sizing = {"configmap": ref, "error": str(exc)}
        elif planfile.FILE_NAME in data:
            try:
                plan = planfile.parse(data[planfile.FILE_NAME])
            except planfile.PlanFileError as exc:
                plans[f"?{ref}"] = {"configmap": ref, "error": str(exc)}
                continue
            plans[plan.consumer] = {
                "configmap": ref,
                "generation": plan.generation,
                "poolSize": plan.pool_size,
                "maxOverflow": plan.max_overflow,
            }
    return plans, sizing


def _deployments(budget: dict[str, Any]) -> dict[str, str]:
    """consumer name -> its Deployment (listed in spec, or joined by label)."""
    found = {}
    for item in _list(_dict(budget.get("spec")).get("consumers")):
        if isinstance(item, dict) and item.get("name"):
            found[str(item["name"])] = str(item.get("deployment", item["name"]))
    for item in _list(_dict(budget.get("status")).get("discovered")):
        if isinstance(item, dict) and item.get("name"):
            found.setdefault(str(item["name"]), str(item.get("deployment", item["name"])))
    return found


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in _list(status.get("conditions")):
        if isinstance(item, dict) and item.get("type") == kind:
            return item
    return None


def _age(sampled: object, now: datetime.datetime) -> int | None:
    if not isinstance(sampled, str):
        return None
    try:
        at = datetime.datetime.fromisoformat(sampled)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return max(0, int((now - at).total_seconds()))


def ledger(budget: dict[str, Any], files: Files, now: datetime.datetime) -> dict[str, Any]:
    """The ledger of one budget: plain data, every list at most `LISTED` long."""
    meta = _dict(budget.get("metadata"))
    spec = _dict(budget.get("spec"))
    status = _dict(budget.get("status"))
    database = _dict(spec.get("database"))
    applied = _dict(status.get("applied"))
    in_use = _dict(status.get("inUse"))
    bouncer = _dict(status.get("pgbouncer"))
    plans, sizing = _read_files(files)
    deployments = _deployments(budget)
    lagging = [str(p) for p in _list(applied.get("lagging"))][:LISTED]
    used = {
        str(c.get("name")): c for c in _list(in_use.get("consumers")) if isinstance(c, dict)
    }
    consumers = []
    for item in _list(status.get("consumers"))[:LISTED]:
        if not isinstance(item, dict):
            continue
        name = str(item.get("name", ""))
        deployment = deployments.get(name, name)
        use = used.get(name)
        consumers.append({
            "name": name,
            "deployment": deployment,
            "replicas": _int(item.get("replicas")),
            "surge": _int(item.get("surge")),
            "serverPool": _int(item.get("serverPool")),
            "poolSize": _int(item.get("poolSize")),
            "maxOverflow": _int(item.get("maxOverflow")),
            "planFile": plans.get(name),
            "lagging": [p for p in lagging if pod_deployment(p) == deployment],
            "inUse": None if use is None else {
                key: _int(use.get(key))
                for key in ("serverActive", "serverIdle", "clientsActive", "clientsWaiting",
                            "peakServer", "peakWaiting")
            },
        })  # fmt: skip
    # the ready PgBouncer pods judged against the sizing file: ``readyPods`` (the operator's
    # name; ``pods`` stays the count that may hold server connections), or a list in ``pods``
    pods_listed = bouncer.get("readyPods")
    if not isinstance(pods_listed, list):
        pods_listed = bouncer.get("pods")
    held = _dict(bouncer.get("terminatingHeld"))
    pods = None
    if isinstance(pods_listed, list):
        pods = [
            {
                "name": str(p.get("name", "")),
                "applied": p.get("applied") if isinstance(p.get("applied"), bool) else None,
                "generation": _int(p.get("generation")),
                "message": str(p.get("message", "")),
                "maxDbConnections": _int(held.get(str(p.get("name", ""))))
                or _int(bouncer.get("maxDbConnections")),
                "terminating": str(p.get("name", "")) in held,
            }
            for p in pods_listed[:LISTED]
            if isinstance(p, dict)
        ]
    condition = _condition(status, "Applied")
    ready = _condition(status, "Ready")
    max_connections = _int(database.get("maxConnections"))
    reserved = _int(database.get("reserved")) or 0
    return {
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        # an Invalid budget keeps the last plan's consumers in status (merge patches): not a plan
        "planned": bool(_list(status.get("consumers"))) and status.get("state") != "Invalid",
        "state": str(status.get("state", "")) or None,
        "ready": None if ready is None else {
            "status": ready.get("status"), "message": str(ready.get("message", ""))
        },
        "planGeneration": _int(status.get("planGeneration")),
        "maxConnections": max_connections,
        "reserved": reserved,
        "budget": _int(status.get("budget"))
        or (max_connections - reserved if max_connections is not None else None),
        "serverTotal": _int(status.get("serverTotal")),
        "utilization": status.get("utilization"),
        "applied": {
            "status": None if condition is None else condition.get("status"),
            "reason": None if condition is None else condition.get("reason"),
            "readyPods": _int(applied.get("readyPods")),
            "laggingPods": _int(applied.get("laggingPods")),
            "lagging": lagging,
            "pgbouncerPods": _int(applied.get("pgbouncerPods")),
            "pgbouncerLaggingPods": _int(applied.get("pgbouncerLaggingPods")),
            "pgbouncerLagging": [str(p) for p in _list(applied.get("pgbouncerLagging"))][:LISTED],
        },
        "inUse": None if not in_use else {
            "sampledAt": in_use.get("sampledAt"),
            "ageSeconds": _age(in_use.get("sampledAt"), now),
            "windowSeconds": _int(in_use.get("windowSeconds")),
            "pgbouncerPods": _int(in_use.get("pgbouncerPods")),
            "serverActive": _int(in_use.get("serverActive")),
            "serverIdle": _int(in_use.get("serverIdle")),
            "clientsWaiting": _int(in_use.get("clientsWaiting")),
        },
        "consumers": consumers,
        "consumersMore": max(0, len(_list(status.get("consumers"))) - LISTED),
        "pgbouncer": {
            "podsHolding": _int(bouncer.get("pods")),
            "replicas": _int(bouncer.get("replicas")),
            "surge": _int(bouncer.get("surge")),
            "maxDbConnections": _int(bouncer.get("maxDbConnections")),
            "maxUserConnections": _int(bouncer.get("maxUserConnections")),
            "defaultPoolSize": _int(bouncer.get("defaultPoolSize")),
            "reservePoolSize": _int(bouncer.get("reservePoolSize")),
            "maxClientConn": _int(bouncer.get("maxClientConn")),
            "sizingFile": sizing,
            "pods": pods,
        },
        "unreadable": sorted(
            f"{p['configmap']}: {p['error']}" for p in plans.values() if "error" in p
        )[:LISTED],
    }


def _n(value: object) -> str:
    return DASH if value is None else str(value)


def _table(rows: list[tuple[str, ...]], align: str) -> list[str]:
    """Columns padded to the widest cell, ``align`` per column: ``l`` left, ``r`` right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if a == "l" else cell.rjust(w)
            for cell, w, a in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in rows
    ]


def _head(data: dict[str, Any]) -> list[str]:
    ready = data["ready"] or {}
    applied = data["applied"]
    line = f"ConnectionBudget {cut(data['namespace'], NAME_WIDTH)}/{cut(data['name'], NAME_WIDTH)}"
    line += f"   state {cut(data['state'] or NOT_PLANNED, NAME_WIDTH)}"
    if data["planGeneration"] is not None:
        line += f"   plan generation {data['planGeneration']}"
    if applied["status"] is not None:
        line += f"   applied {applied['status']}"
        if applied["reason"]:
            line += f" ({cut(applied['reason'], NAME_WIDTH)})"
    lines = [line]
    budget = data["budget"]
    if data["maxConnections"] is not None:
        text = (f"budget {_n(budget)} (max_connections {data['maxConnections']} - reserved "
                f"{data['reserved']})")  # fmt: skip
    else:
        text = f"budget {_n(budget)}"
    if data["planned"]:
        text += (f"; planned {_n(data['serverTotal'])} server connections in steady state, "
                 f"utilization {cut(_n(data['utilization']), 8)}")  # fmt: skip
    else:
        text += "; cannot be planned" if data["state"] == "Invalid" else f"; {NOT_PLANNED}"
        if ready.get("status") == "False" and ready.get("message"):
            text += f": {cut(ready['message'], MESSAGE_WIDTH)}"
    lines.append(text)
    use = data["inUse"]
    if use is None:
        lines.append(f"in use: {NOT_SAMPLED}")
    else:
        active, idle = use["serverActive"], use["serverIdle"]
        total = None if active is None or idle is None else active + idle
        share = ""
        if total is not None and budget:
            share = f", {100 * total / budget:.0f}% of the budget"
        age = "" if use["ageSeconds"] is None else f", {use['ageSeconds']} s ago"
        window = "" if use["windowSeconds"] is None else f"; peaks over {use['windowSeconds']} s"
        if use["pgbouncerPods"] is not None:
            age += f", from {use['pgbouncerPods']} PgBouncer pod(s)"
        lines.append(
            f"in use {_n(total)} of {_n(budget)} server connections ({_n(active)} active, "
            f"{_n(idle)} idle{share}), {_n(use['clientsWaiting'])} clients waiting; sampled "
            f"{cut(_n(use['sampledAt']), 32)}{age}{window}"
        )
    return lines


CONSUMER_COLUMNS = ("consumer", "pods", "server_pool", "pool/worker", "plan_file", "lagging",
                    "active", "idle", "clients", "waiting", "peak", "peak_waiting")  # fmt: skip
"""The consumer table: planned (pods planned for + surge, ``server_pool`` per PgBouncer pod,
``pool_size+max_overflow`` per worker, the plan file's generation), applied (lagging pods
among the listed), in use (server connections active and idle over every PgBouncer pod,
clients active and waiting, the window's peaks)."""
POD_COLUMNS = ("pgbouncer_pod", "applied", "generation", "max_db", "message")


def _consumer_row(c: dict[str, Any]) -> tuple[str, ...]:
    plan = c["planFile"]
    use = c["inUse"] or {}
    pods = DASH if c["replicas"] is None else f"{c['replicas']}+{c['surge'] or 0}"
    pool = DASH if c["poolSize"] is None else f"{c['poolSize']}+{c['maxOverflow'] or 0}"
    return (
        cut(c["name"], NAME_WIDTH), pods, _n(c["serverPool"]), pool,
        DASH if plan is None else f"gen {plan['generation']}",
        str(len(c["lagging"])),
        *(_n(use.get(k)) for k in ("serverActive", "serverIdle", "clientsActive",
                                   "clientsWaiting", "peakServer", "peakWaiting")),
    )  # fmt: skip


def _pgbouncer(data: dict[str, Any]) -> list[str]:
    b = data["pgbouncer"]
    applied = data["applied"]
    if b["maxDbConnections"] is None and b["sizingFile"] is None:
        return [f"pgbouncer: {NOT_PLANNED}"]
    holding = b["podsHolding"] if b["podsHolding"] is not None else b["replicas"]
    lines = [
        f"pgbouncer: {_n(holding)} pod(s) may hold server connections ({_n(b['replicas'])} "
        f"replicas +{_n(b['surge'])} surge); per pod max_db_connections "
        f"{_n(b['maxDbConnections'])}, max_user_connections {_n(b['maxUserConnections'])}, "
        f"default_pool_size {_n(b['defaultPoolSize'])}, reserve_pool_size "
        f"{_n(b['reservePoolSize'])}, max_client_conn {_n(b['maxClientConn'])}"
    ]
    sizing = b["sizingFile"]
    if sizing is None:
        lines.append("sizing file: not read")
    elif "error" in sizing:
        lines.append(f"sizing file {cut(sizing['configmap'], NAME_WIDTH)}: "
                     f"{cut(sizing['error'], MESSAGE_WIDTH)}")  # fmt: skip
    else:
        aliases = ", ".join(
            f"{cut(name, NAME_WIDTH)} {size}"
            for name, size in list(sizing["aliases"].items())[:LISTED]
        )
        lines.append(
            f"sizing file {cut(sizing['configmap'], NAME_WIDTH)} generation "
            f"{sizing['generation']}: max_db_connections {sizing['maxDbConnections']}, "
            f"max_user_connections {sizing['maxUserConnections']}; pool_size per alias: "
            f"{aliases or 'none'}"
        )
    if b["pods"] is None:
        lines.append(f"pgbouncer pods applied: {NOT_SAMPLED}")
        return lines
    if applied["pgbouncerPods"] is not None:
        lagging = applied["pgbouncerLagging"]
        count = applied["pgbouncerLaggingPods"]
        lines.append(_applied("pgbouncer", applied["pgbouncerPods"],
                              len(lagging) if count is None else count, lagging))  # fmt: skip
    rows = [POD_COLUMNS]
    for p in b["pods"]:
        state = DASH if p["applied"] is None else ("yes" if p["applied"] else "no")
        held = _n(p["maxDbConnections"]) + (" (terminating)" if p["terminating"] else "")
        rows.append((cut(p["name"], NAME_WIDTH), state, _n(p["generation"]), held,
                     cut(p["message"], MESSAGE_WIDTH)))  # fmt: skip
    if len(rows) > 1:
        lines += _table(rows, "llrrl")
    return lines


def _applied(kind: str, ready: int, lagging: int, names: list[str]) -> str:
    """``<kind> pods applied: N of M ready; lagging: a, b and K more``."""
    text = f"{kind} pods applied: {max(0, ready - lagging)} of {ready} ready"
    if names:
        more = lagging - len(names)
        text += f"; lagging: {', '.join(cut(p, NAME_WIDTH) for p in names)}"
        text += f" and {more} more" if more > 0 else ""
    return text


def render(data: dict[str, Any]) -> str:
    """The ledger as text, every line bounded (names and messages cut, lists at `LISTED`)."""
    lines = _head(data)
    lines.append("")
    if not data["consumers"]:
        lines.append(f"consumers: {NOT_PLANNED}")
    else:
        if not data["planned"]:
            lines.append("consumers as last planned (the budget cannot be planned now):")
        lines += _table(
            [CONSUMER_COLUMNS, *(_consumer_row(c) for c in data["consumers"])], "l" + "r" * 11
        )
        if data["consumersMore"]:
            lines.append(f"... and {data['consumersMore']} more consumer(s)")
        if data["inUse"] is None:
            lines.append(f"(active, idle, clients, waiting, peaks: {NOT_SAMPLED})")
    applied = data["applied"]
    if applied["readyPods"] is not None:
        lines.append(_applied("consumer", applied["readyPods"], applied["laggingPods"] or 0,
                              applied["lagging"]))  # fmt: skip
    for problem in data["unreadable"]:
        lines.append(f"ConfigMap not readable: {cut(problem, MESSAGE_WIDTH + NAME_WIDTH)}")
    lines.append("")
    lines += _pgbouncer(data)
    return "\n".join(lines) + "\n"
