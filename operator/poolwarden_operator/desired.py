"""Pure: from a ConnectionBudget and its Deployments to planner inputs, and from a plan to the
ConfigMaps, pod-template annotations, status and Event text the operator should write.

Every function takes plain dicts (the objects as the API serves them) and returns plain data;
nothing here talks to the API, so all of it is tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from poolwarden import pgbouncer_ini, planfile, planner
from poolwarden_operator import names

DEFAULT_REPLICAS = 1  # what the API server defaults a Deployment's spec.replicas to


class SpecError(ValueError):
    """The budget cannot be planned as it stands; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class File:
    """One ConfigMap the operator owns, with the single key it writes."""

    configmap: str
    key: str
    text: str
    digest: str
    generation: int
    consumer: str | None  # None for PgBouncer's sizing include
    namespace: str = ""
    """The ConfigMap's namespace when it is not the budget's (a consumer joined by label)."""
    owner: dict[str, Any] | None = None
    """Its owner reference when not the budget (a Deployment of another namespace)."""

    @property
    def ref(self) -> str:
        """How ``status.files`` names it: the ConfigMap, ``<namespace>/<name>`` in another one."""
        return file_ref(self.namespace, self.configmap)


def file_ref(namespace: str, configmap: str) -> str:
    return f"{namespace}/{configmap}" if namespace else configmap


def deployment_names(spec: dict[str, Any]) -> list[str]:
    """Every Deployment a budget depends on, PgBouncer's first."""
    found = [spec["pgbouncer"]["deployment"]]
    found += [c["deployment"] for c in spec.get("consumers", [])]
    return found


def surge_of(deployment: dict[str, Any], replicas: int | None = None) -> int:
    """Extra pods a rollout of ``deployment`` may add at ``replicas`` (default: its own count)."""
    spec = deployment.get("spec", {})
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    max_surge = (strategy.get("rollingUpdate") or {}).get("maxSurge")
    counted = replicas_of(deployment) if replicas is None else replicas
    return planner.resolve_surge(counted, kind, max_surge)


def replicas_of(deployment: dict[str, Any]) -> int:
    replicas = deployment.get("spec", {}).get("replicas")
    return DEFAULT_REPLICAS if replicas is None else int(replicas)


def watched_fields(deployment: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a Deployment the plan depends on; other changes are ignored."""
    spec = deployment.get("spec", {})
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return (spec.get("replicas"), strategy.get("type"), str(rolling.get("maxSurge")))


SIZE_FOR_MAX_REPLICAS = "maxReplicas"
"""``spec.consumers[].sizeFor``: plan for the HPA's maxReplicas instead of the live count."""


def hpa_target(hpa: dict[str, Any]) -> str | None:
    """The Deployment an autoscaling/v2 HorizontalPodAutoscaler scales, or None."""
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    group = str(ref.get("apiVersion") or "").split("/")[0]
    if ref.get("kind") != "Deployment" or group != "apps" or not ref.get("name"):
        return None
    return str(ref["name"])


def hpa_fields(hpa: dict[str, Any]) -> tuple[str | None, int | None]:
    """The parts of an HPA the plan depends on: its target Deployment and maxReplicas."""
    value = (hpa.get("spec") or {}).get("maxReplicas")
    return hpa_target(hpa), (_int(value) or None)


def hpa_max_replicas(hpas: list[dict[str, Any]]) -> dict[str, int]:
    """Deployment name -> the maxReplicas of the HPA(s) scaling it (the largest, if several).

    Kubernetes refuses to act on two HPAs for one Deployment (AmbiguousSelector); planning for
    the larger maximum is the safe reading meanwhile.
    """
    found: dict[str, int] = {}
    for hpa in hpas:
        target, value = hpa_fields(hpa)
        if target is not None and value is not None:
            found[target] = max(found.get(target, 0), value)
    return found


def sized_deployments(spec: dict[str, Any]) -> list[str]:
    """The consumer Deployments planned for their HPA's maxReplicas (``sizeFor: maxReplicas``)."""
    return [
        c["deployment"]
        for c in spec.get("consumers") or []
        if c.get("sizeFor") == SIZE_FOR_MAX_REPLICAS
    ]


def owning_deployment(pod: dict[str, Any]) -> str | None:
    """The Deployment of a pod: its owner ReplicaSet's name minus ``-<pod-template-hash>``."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if not template_hash:
        return None
    for owner in meta.get("ownerReferences") or []:
        name = owner.get("name") or ""
        if owner.get("kind") == "ReplicaSet" and name.endswith(f"-{template_hash}"):
            return name[: -len(template_hash) - 1] or None
    return None


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


@dataclasses.dataclass(frozen=True)
class Pods:
    """The pods of the PgBouncer Deployment that exist now."""

    live: int = 0
    terminating: int = 0
    terminating_names: tuple[str, ...] = ()
    held: tuple[tuple[str, int], ...] = ()
    """(pod, max_db_connections it may still hold) for the terminating pods whose limit is known."""


def count_pods(pods: list[dict[str, Any]], deployment: str) -> Pods:
    """Live and terminating pods owned by ``deployment`` (pods of other owners are ignored)."""
    mine = [p for p in pods if owning_deployment(p) == deployment]
    names_ = tuple(sorted(p["metadata"]["name"] for p in mine if is_terminating(p)))
    return Pods(live=len(mine) - len(names_), terminating=len(names_), terminating_names=names_)


def with_held(pods: Pods, status: dict[str, Any]) -> Pods:
    """The limit each terminating pod may still hold, from the budget's status.

    A pod keeps the limit recorded when it was first seen terminating; a pod seen terminating
    now may hold the current limit or the one before it (it may not have read the last file
    yet), so it gets the larger of the two. Without a status (the first plan) it is unknown.
    """
    bouncer = status.get("pgbouncer") or {}
    known = bouncer.get("terminatingHeld") or {}
    recent = max(
        _int(bouncer.get("maxDbConnections")), _int(bouncer.get("previousMaxDbConnections"))
    )
    held = []
    for name in pods.terminating_names:
        value = _int(known.get(name)) or recent
        if value > 0:
            held.append((name, value))
    return dataclasses.replace(pods, held=tuple(held))


def planner_inputs(
    spec: dict[str, Any],
    deployments: dict[str, dict[str, Any] | None],
    pods: Pods = Pods(),
    max_replicas: dict[str, int] | None = None,
) -> tuple[planner.Budget, planner.PgBouncer, list[planner.Consumer]]:
    """Planner inputs; a missing consumer Deployment counts as scaled to zero.

    ``pods`` are the PgBouncer pods that exist (terminating ones hold server connections until
    they are gone, see ``planner.pods_that_may_hold``). ``max_replicas`` maps a Deployment to
    its HPA's maxReplicas (``hpa_max_replicas``): a consumer with ``sizeFor: maxReplicas`` is
    planned for the larger of that and its live count (the live count without an HPA); its
    rollout surge is counted at that size too.
    """
    database = spec["database"]
    bouncer_spec = spec["pgbouncer"]
    bouncer = deployments.get(bouncer_spec["deployment"])
    if bouncer is None:
        raise SpecError(
            "PgBouncerMissing",
            f"PgBouncer Deployment {bouncer_spec['deployment']!r} not found: create it or fix "
            "spec.pgbouncer.deployment",
        )
    consumers = []
    for item in spec["consumers"]:
        found = deployments.get(item["deployment"])
        replicas = 0 if found is None else replicas_of(found)
        if found is not None and item.get("sizeFor") == SIZE_FOR_MAX_REPLICAS:
            replicas = max(replicas, (max_replicas or {}).get(item["deployment"], 0))
        consumers.append(
            planner.Consumer(
                name=item["name"],
                replicas=replicas,
                workers=item.get("workersPerPod", 1),
                weight=item.get("weight", 1),
                surge=0 if found is None else surge_of(found, replicas),
                overflow=item.get("overflow", "none"),
                threads=item.get("threadsPerWorker", 0),
                max_pool_per_worker=item.get("maxPoolPerWorker", 0),
            )
        )
    return (
        planner.Budget(database["maxConnections"], database.get("reserved", 0)),
        planner.PgBouncer(
            replicas_of(bouncer),
            surge_of(bouncer),
            bouncer_spec.get("maxClientConn", planner.DEFAULT_MAX_CLIENT_CONN),
            live=pods.live,
            terminating=pods.terminating,
            held=tuple(limit for _, limit in pods.held),
        ),
        consumers,
    )


def safe_pgbouncer(
    spec: dict[str, Any], deployments: dict[str, dict[str, Any] | None], pods: Pods
) -> planner.SafeSizing:
    """PgBouncer's sizing when the budget cannot be planned: it never depends on the consumers.

    Whatever is wrong (too many PgBouncer pods, maxConnections too low, a consumer error), the
    pods that exist get ``max(1, budget // pods)`` so that old, larger limits are never kept.
    """
    database = spec.get("database") or {}
    bouncer_spec = spec.get("pgbouncer") or {}
    available = _int(database.get("maxConnections")) - _int(database.get("reserved"))
    found = deployments.get(bouncer_spec.get("deployment", ""))
    replicas, surge = 0, 0
    if found is not None:
        replicas = replicas_of(found)
        try:
            surge = surge_of(found)
        except planner.PlannerError:
            surge = replicas  # a strategy we cannot read: assume a whole second set of pods
    wanted = _int(bouncer_spec.get("maxClientConn", planner.DEFAULT_MAX_CLIENT_CONN))
    bouncer = planner.PgBouncer(
        replicas, surge, max(1, wanted), live=pods.live, terminating=pods.terminating,
        held=tuple(limit for _, limit in pods.held),
    )  # fmt: skip
    return planner.safe_pgbouncer(available, bouncer)


def check_configmaps(name: str, spec: dict[str, Any]) -> None:
    """Every consumer needs its own plan ConfigMap, and none may be the sizing ConfigMap.

    Two consumers writing one ConfigMap would flip its file back and forth on every pass. The
    CRD rejects this too (CEL); this check also covers objects stored before that rule.
    """
    budget = name
    sizing = names.sizing_configmap_name(
        budget, (spec.get("pgbouncer") or {}).get("sizingConfigMap")
    )
    owners: dict[str, str] = {sizing: "spec.pgbouncer.sizingConfigMap"}
    for item in spec.get("consumers") or []:
        cm = names.plan_configmap_name(budget, item.get("name", ""), item.get("planConfigMap"))
        cm = file_ref(str(item.get("namespace") or ""), cm)
        if cm in owners:
            raise SpecError(
                "ConfigMapConflict",
                f"consumer {item.get('name')!r} would write ConfigMap {cm!r}, which "
                f"{owners[cm]} already names: give each consumer its own "
                "spec.consumers[].planConfigMap",
            )
        owners[cm] = f"consumer {item.get('name')!r}"


# --- Deployments that join a budget by label ------------------------------------------------

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

# annotation -> (consumer field, minimum, maximum, what it is)
_NUMBERS = {
    names.WORKERS_ANNOTATION: ("workersPerPod", 1, 64, "gunicorn workers per pod"),
    names.THREADS_ANNOTATION: ("threadsPerWorker", 0, 1024, "threads per worker, 0 for async"),
    names.WEIGHT_ANNOTATION: ("weight", 1, 100, "its relative share of the budget"),
    names.MAX_POOL_ANNOTATION: ("maxPoolPerWorker", 1, 10000, "cap of an async worker's pool"),
}


def joined_budget(deployment: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the budget a Deployment joins by label, or None."""
    meta = deployment.get("metadata") or {}
    budget = (meta.get("labels") or {}).get(names.BUDGET_LABEL)
    if not budget:
        return None
    namespace = (meta.get("annotations") or {}).get(names.BUDGET_NAMESPACE_ANNOTATION)
    return (namespace or str(meta.get("namespace") or ""), str(budget))


def join_fields(deployment: dict[str, Any]) -> tuple[Any, ...]:
    """The label and annotations a joined Deployment's plan depends on."""
    meta = deployment.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        (meta.get("labels") or {}).get(names.BUDGET_LABEL),
        tuple(annotations.get(key) for key in names.JOIN_ANNOTATIONS),
    )


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What the labelled Deployments add to a budget: consumers, and the ones refused."""

    consumers: tuple[dict[str, Any], ...] = ()
    """Consumer items like spec.consumers[] (``deployment`` is ``<namespace>/<name>`` for
    another namespace, which also gives ``namespace`` and ``owner``)."""
    deployments: tuple[tuple[str, dict[str, Any]], ...] = ()
    """(key in ``consumers[].deployment``, the Deployment) of each consumer."""
    problems: tuple[str, ...] = ()
    """One sentence per refused Deployment: the annotation or name at fault and the fix."""


def discover(
    namespace: str,
    name: str,
    spec: dict[str, Any],
    labelled: list[dict[str, Any]],
    unwatched: tuple[str, ...] = (),
) -> Discovery:
    """The consumers that Deployments labelled ``poolwarden.io/budget=<name>`` add.

    ``labelled`` are the Deployments found by that label in the budget's namespace and the
    namespaces it accepts (spec.discovery.namespaces); one of another namespace joins only when
    its ``poolwarden.io/budget-namespace`` annotation names the budget's. A Deployment that
    spec.consumers already lists is not added twice. A bad annotation refuses that Deployment
    alone, with a problem naming the annotation and the fix; the others are planned.
    ``unwatched`` are accepted namespaces the operator does not watch (each one a problem).
    """
    listed = {str(c.get("name")) for c in spec.get("consumers") or []}
    listed_deployments = {str(c.get("deployment")) for c in spec.get("consumers") or []}
    bouncer = str((spec.get("pgbouncer") or {}).get("deployment") or "")
    database = str((spec.get("database") or {}).get("name") or "")
    sizing = names.sizing_configmap_name(name, (spec.get("pgbouncer") or {}).get("sizingConfigMap"))
    configmaps = {sizing} | {
        names.plan_configmap_name(name, str(c.get("name")), c.get("planConfigMap"))
        for c in spec.get("consumers") or []
    }
    problems = [
        f"namespace {ns!r} is in spec.discovery.namespaces but the operator does not watch it: "
        "add it to the operator's namespaces (chart value discovery.namespaces, which also "
        "grants the operator's RBAC there) or remove it"
        for ns in unwatched
    ]
    consumers: list[dict[str, Any]] = []
    found: list[tuple[str, dict[str, Any]]] = []
    taken: dict[str, str] = {}

    def ordered(d: dict[str, Any]) -> tuple[str, str]:
        meta = d.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    for deployment in sorted(labelled, key=ordered):
        meta = deployment.get("metadata") or {}
        ns, dname = ordered(deployment)
        if joined_budget(deployment) != (namespace, name):
            continue  # labelled for a budget of the same name in another namespace
        where = dname if ns == namespace else f"{ns}/{dname}"
        what = f"Deployment {where}"
        if ns == namespace and dname in listed_deployments:
            continue  # spec.consumers lists it already
        if ns == namespace and dname == bouncer:
            problems.append(
                f"{what} is the budget's PgBouncer and cannot also be a consumer: remove its "
                f"label {names.BUDGET_LABEL}"
            )
            continue
        annotations = meta.get("annotations") or {}
        item, problem = _consumer_of(what, dname, annotations)
        if problem is None:
            consumer = item["name"]
            if consumer in listed or consumer in taken:
                other = "spec.consumers" if consumer in listed else taken[consumer]
                problem = (
                    f"{what}: consumer name {consumer!r} is already used by {other}: set the "
                    f"annotation {names.CONSUMER_ANNOTATION} to another name"
                )
            elif consumer in (database, "pgbouncer"):
                problem = (
                    f"{what}: consumer name {consumer!r} is PgBouncer's own "
                    f"{'database' if consumer == database else 'admin console'}: set the "
                    f"annotation {names.CONSUMER_ANNOTATION} to another name"
                )
        if problem is None:
            cm = names.plan_configmap_name(name, item["name"], item.get("planConfigMap"))
            if ns == namespace and cm in configmaps:
                problem = (
                    f"{what}: its plan ConfigMap {cm!r} is already written for another consumer "
                    f"or PgBouncer: set the annotation {names.PLAN_CONFIGMAP_ANNOTATION} to "
                    "another name"
                )
            configmaps.add(file_ref("" if ns == namespace else ns, cm))
        if problem is not None:
            problems.append(problem)
            continue
        key = dname if ns == namespace else f"{ns}/{dname}"
        item["deployment"] = key
        if ns != namespace:
            item["namespace"] = ns
            item["owner"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": dname,
                "uid": str(meta.get("uid") or ""),
            }
        taken[item["name"]] = what
        consumers.append(item)
        found.append((key, deployment))
    return Discovery(tuple(consumers), tuple(found), tuple(problems))


def _consumer_of(
    what: str, deployment: str, annotations: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """A consumer item from a Deployment's annotations, or the first problem with them."""
    given = annotations.get(names.CONSUMER_ANNOTATION)
    consumer = given or deployment
    item: dict[str, Any] = {"name": consumer, "discovered": True}
    if not re.fullmatch(pgbouncer_ini.ALIAS_PATTERN, consumer):
        where = (
            f"annotation {names.CONSUMER_ANNOTATION} is {consumer!r}"
            if given
            else f"its name {consumer!r} (the default consumer name) is not one"
        )
        return item, (
            f"{what}: {where}: a consumer name is a PgBouncer database alias "
            f"({pgbouncer_ini.ALIAS_PATTERN}): set the annotation {names.CONSUMER_ANNOTATION}, "
            f"e.g. {names.CONSUMER_ANNOTATION}={_alias_hint(consumer)}"
        )
    for annotation, (field, low, high, meaning) in _NUMBERS.items():
        raw = annotations.get(annotation)
        if raw is None:
            continue
        text = str(raw).strip()
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            return item, (
                f"{what}: annotation {annotation} is {raw!r}: it must be a whole number from "
                f"{low} to {high} ({meaning}); fix it, e.g. kubectl annotate deployment "
                f"{deployment} {annotation}={max(low, 1)} --overwrite"
            )
        item[field] = int(text)
    overflow = annotations.get(names.OVERFLOW_ANNOTATION)
    if overflow is not None:
        if overflow not in planner.OVERFLOW_POLICIES:
            return item, (
                f"{what}: annotation {names.OVERFLOW_ANNOTATION} is {overflow!r}: it must be one "
                f"of {', '.join(planner.OVERFLOW_POLICIES)}; fix it, e.g. kubectl annotate "
                f"deployment {deployment} {names.OVERFLOW_ANNOTATION}=none --overwrite"
            )
        item["overflow"] = overflow
    cm = annotations.get(names.PLAN_CONFIGMAP_ANNOTATION)
    if cm is not None:
        if len(cm) > 253 or not re.fullmatch(DNS_SUBDOMAIN, cm):
            return item, (
                f"{what}: annotation {names.PLAN_CONFIGMAP_ANNOTATION} is {cm!r}: it must be a "
                "ConfigMap name (lowercase letters, digits, '-' and '.'); fix it or remove it"
            )
        item["planConfigMap"] = cm
    elif "_" in consumer:
        return item, (
            f"{what}: consumer name {consumer!r} contains '_', which the default plan ConfigMap "
            f"name cannot: set the annotation {names.PLAN_CONFIGMAP_ANNOTATION}"
        )
    return item, None


def _alias_hint(text: str) -> str:
    hint = re.sub(r"[^a-z0-9_-]", "-", text.lower()).strip("-") or "consumer"
    return hint if hint[0].isalpha() else f"c-{hint}"[:63]


def with_discovered(spec: dict[str, Any], found: Discovery) -> dict[str, Any]:
    """The spec as the planner sees it: spec.consumers, then the consumers joined by label."""
    return {**spec, "consumers": [*(spec.get("consumers") or []), *found.consumers]}


def database_identity(namespace: str, spec: dict[str, Any]) -> tuple[str, int, str, str] | None:
    """(host, port, database, role) of a budget, or None when the spec does not say.

    Hosts are compared without case, a trailing dot, and the in-cluster suffixes of this
    namespace, so ``pg`` and ``pg.<namespace>.svc.cluster.local`` are the same server.
    """
    database = spec.get("database") or {}
    host = str(database.get("host") or "").strip().lower().rstrip(".")
    if not host or not database.get("name") or not database.get("role"):
        return None
    for suffix in (f".{namespace}.svc.cluster.local", f".{namespace}.svc", f".{namespace}"):
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    return (host, _int(database.get("port", 5432)), str(database["name"]), str(database["role"]))


def overlapping(
    namespace: str, name: str, spec: dict[str, Any], budgets: list[dict[str, Any]]
) -> list[str]:
    """The other budgets of ``budgets`` for the same database and role, sorted by name."""
    mine = database_identity(namespace, spec)
    if mine is None:
        return []
    return sorted(
        b["metadata"]["name"]
        for b in budgets
        if b["metadata"]["name"] != name
        and not b["metadata"].get("deletionTimestamp")
        and database_identity(namespace, b.get("spec") or {}) == mine
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


def sizing_file(
    namespace: str,
    name: str,
    spec: dict[str, Any],
    bouncer: planner.PgBouncerPlan,
    status: dict[str, Any],
    written: int = 0,
) -> tuple[int, File]:
    """The sizing include alone (the fail-safe path), versioned like ``files``.

    Every consumer keeps its alias (``safe_pools``), so no app loses the database it connects
    to while the budget cannot be planned.
    """
    ref = names.budget_ref(namespace, name)
    cm = names.sizing_configmap_name(name, (spec.get("pgbouncer") or {}).get("sizingConfigMap"))
    databases = aliases(spec, safe_pools(spec, bouncer.max_db_connections), strict=False)
    generation, versioned = _versioned(
        [(cm, names.SIZING_KEY, None, lambda g: _sizing_text(ref, bouncer, databases, g))],
        status,
        written,
    )
    return generation, versioned[0]


def safe_pools(spec: dict[str, Any], max_db: int) -> dict[str, int]:
    """The fail-safe alias pools: an even split of the safe ``max_db`` over every consumer
    listed, at least 1 each (``max_user_connections = max_db`` still caps their sum)."""
    listed = [str(c.get("name")) for c in spec.get("consumers") or [] if c.get("name")]
    each = max(1, max_db // max(1, len(listed)))
    return {consumer: each for consumer in listed}


def aliases(
    spec: dict[str, Any], pools: dict[str, int], *, strict: bool = True
) -> tuple[pgbouncer_ini.Database, ...]:
    """One PgBouncer database alias per consumer (named like it), pointing at spec.database.

    ``strict=False`` (the fail-safe path, which must never raise) leaves out what cannot be an
    alias (a name stored before the CRD's pattern, a database without host or name).
    """
    database = spec.get("database") or {}
    if strict and not (database.get("host") and database.get("name")):
        raise SpecError(
            "DatabaseUnnamed",
            "spec.database.host and spec.database.name are needed: each consumer connects to "
            "PgBouncer through a database alias that points at them",
        )
    found = []
    for consumer, pool_size in sorted(pools.items()):
        try:
            found.append(
                pgbouncer_ini.Database(
                    name=consumer,
                    host=str(database.get("host") or ""),
                    port=_int(database.get("port", 5432)),
                    dbname=str(database.get("name") or ""),
                    pool_size=pool_size,
                )
            )
        except pgbouncer_ini.SizingError as exc:
            if strict:
                raise SpecError(
                    "InvalidAlias",
                    f"consumer {consumer!r}: {exc}; fix spec.database (host, port, name) or "
                    "the consumer's name",
                ) from exc
    return tuple(found)


def _sizing_text(
    ref: str,
    part: planner.PgBouncerPlan,
    databases: tuple[pgbouncer_ini.Database, ...],
    generation: int,
) -> str:
    sizing = pgbouncer_ini.Sizing(
        default_pool_size=part.default_pool_size,
        max_db_connections=part.max_db_connections,
        reserve_pool_size=part.reserve_pool_size,
        max_client_conn=part.max_client_conn,
        max_user_connections=part.max_user_connections,
        databases=databases,
    )
    return pgbouncer_ini.render(sizing, budget=ref, generation=generation)


def _versioned(
    drafts: list[tuple[str, str, str | None, Any]],
    status: dict[str, Any],
    written: int,
    placed: dict[str | None, tuple[str, dict[str, Any] | None]] | None = None,
) -> tuple[int, list[File]]:
    """Give each draft (configmap, key, consumer, text(generation)) its generation.

    ``placed`` maps a consumer to (namespace, owner reference) when its ConfigMap lives outside
    the budget's namespace (a Deployment of another namespace joined by label).
    """
    placed = placed or {}
    previous = status.get("files") or {}
    current = max(int(status.get("planGeneration") or 0), written)
    refs = {cm: file_ref(placed.get(consumer, ("", None))[0], cm) for cm, _, consumer, _ in drafts}
    digests = {refs[cm]: _digest(text(0)) for cm, _, _, text in drafts}
    changed = any((previous.get(ref) or {}).get("digest") != digests[ref] for ref in digests)
    generation = current + 1 if changed else max(current, 1)
    result = []
    for cm, key, consumer, text in drafts:
        ref = refs[cm]
        kept = previous.get(ref) or {}
        file_generation = (
            kept.get("generation", generation) if kept.get("digest") == digests[ref] else generation
        )
        namespace, owner = placed.get(consumer, ("", None))
        result.append(
            File(
                cm, key, text(file_generation), digests[ref], file_generation, consumer,
                namespace, owner,
            )
        )  # fmt: skip
    return generation, result


def files(
    namespace: str,
    name: str,
    spec: dict[str, Any],
    plan: planner.Plan,
    status: dict[str, Any],
    written: int = 0,
) -> tuple[int, list[File]]:
    """The plan files and the budget's new planGeneration.

    A file keeps the generation it was last written with while its content stays the same, so
    its bytes are identical and nothing is rewritten or reloaded; any changed file bumps the
    budget's generation and carries the new number. `written` is the highest generation found
    in the ConfigMaps: after a crash between writing a file and recording it in the status,
    the next plan still gets a higher number than any file the pods may already have.
    """
    ref = names.budget_ref(namespace, name)
    drafts: list[tuple[str, str, str | None, Any]] = []
    for item in spec["consumers"]:
        cm = names.plan_configmap_name(name, item["name"], item.get("planConfigMap"))
        part = plan.consumer(item["name"])
        drafts.append(
            (cm, names.PLAN_KEY, item["name"], lambda g, p=part: _plan_text(ref, plan, p, g))
        )
    sizing_cm = names.sizing_configmap_name(name, spec["pgbouncer"].get("sizingConfigMap"))
    databases = aliases(spec, {c.name: c.server_pool for c in plan.consumers})
    drafts.append(
        (
            sizing_cm,
            names.SIZING_KEY,
            None,
            lambda g: _sizing_text(ref, plan.pgbouncer, databases, g),
        )
    )
    placed = {
        str(item["name"]): (str(item["namespace"]), item.get("owner"))
        for item in spec["consumers"]
        if item.get("namespace") and item["namespace"] != namespace
    }
    return _versioned(drafts, status, written, placed)


def _plan_text(ref: str, plan: planner.Plan, part: planner.ConsumerPlan, generation: int) -> str:
    return planfile.render(
        planfile.PoolPlan(
            pool_size=part.pool_size,
            max_overflow=part.max_overflow,
            generation=generation,
            budget=ref,
            consumer=part.name,
            overcommitted=plan.overcommitted,
            explanation=consumer_explanation(ref, plan, part),
        )
    )


def consumer_explanation(ref: str, plan: planner.Plan, part: planner.ConsumerPlan) -> str:
    """A consumer's own paragraph: it depends only on this consumer's numbers and the budget."""
    text = (
        f"Each of the {part.workers} worker(s) per pod of {part.name} may hold {part.share} "
        f"connection(s) to PgBouncer database {part.name} (pool_size {part.pool_size} + "
        f"max_overflow {part.max_overflow}), {part.per_pod} per pod; PgBouncer gives "
        f"{part.name} {part.server_pool} server connection(s) per PgBouncer pod (weight "
        f"{part.weight}) and queues the rest; the budget {ref} holds {plan.budget}; "
        "kubectl get connectionbudget shows the whole plan."
    )
    if plan.overcommitted:
        text += " The budget is overcommitted: pools are at their smallest."
    return text


def template_annotations(part: planner.ConsumerPlan) -> dict[str, str]:
    """For reloadMode ``rollout``: the pool size in the pod template (a rolling restart)."""
    return {
        names.POOL_SIZE_ANNOTATION: str(part.pool_size),
        names.MAX_OVERFLOW_ANNOTATION: str(part.max_overflow),
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
