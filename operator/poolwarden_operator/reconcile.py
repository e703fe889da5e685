"""One reconcile pass for one ConnectionBudget: read, plan, write what changed.

Always level-based: every pass reads the budget and its Deployments fresh from the API, so the
pass that runs last (passes for one budget never overlap, see ``coalesce``) writes the plan for
the latest state. Writes happen only where bytes differ.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from poolwarden import pgbouncer_ini, planfile, planner
from poolwarden_operator import applied, ask, bouncers, desired, kube, names, status

log = logging.getLogger(__name__)


async def reconcile(
    client: kube.Kube, namespace: str, name: str, watched: tuple[str, ...] = ()
) -> kube.JSON | None:
    """One pass; ``watched`` are the other namespaces the operator watches (and may write in).

    Returns the budget as the pass left it (its status merged with what was reported), or None
    when the budget is gone.
    """
    budget = await client.get_budget(namespace, name)
    if budget is None:
        return None  # deleted; its ConfigMaps go with it (owner references)
    listed, previous = budget["spec"], budget.get("status") or {}
    observed = int(budget["metadata"].get("generation") or 0)
    wanted = desired.deployment_names(listed)
    named = desired.with_discovered(listed, desired.Discovery())  # the listed consumers only
    # The listed consumers' files are read with their Deployments; those of Deployments joined
    # by label once they are known (each ConfigMap once per pass).
    found, joined, files_listed = await asyncio.gather(
        asyncio.gather(*(client.get_deployment(namespace, d) for d in wanted)),
        _joined(client, namespace, name, listed, watched),
        _owned_configmaps(client, namespace, name, named),
    )
    deployments = dict(zip(wanted, found, strict=True)) | dict(joined.deployments)
    spec = desired.with_discovered(listed, joined)
    discovery = status.discovery_condition(joined, observed)
    await _report_discovery(client, budget, discovery, previous)
    # The consumer pods are asked while the pass reads and writes; awaited before the status.
    asking = asyncio.create_task(_consumer_reports(client, namespace, spec, deployments))
    started: list[asyncio.Task[Any]] = [asking]  # the pass's tasks, ended with it
    try:
        return await _plan_and_write(
            client, budget, spec, deployments, joined, discovery, observed, asking, started,
            files_listed,
        )
    finally:
        for task in started:
            if not task.done():
                task.cancel()
        await asyncio.gather(*started, return_exceptions=True)


async def _plan_and_write(
    client: kube.Kube,
    budget: kube.JSON,
    spec: dict[str, Any],
    deployments: dict[str, Any],
    joined: desired.Discovery,
    discovery: dict[str, Any],
    observed: int,
    asking: asyncio.Task[list[applied.Report]],
    started: list[asyncio.Task[Any]],
    files_listed: dict[str, kube.JSON | None],
) -> kube.JSON:
    namespace, name = budget["metadata"]["namespace"], budget["metadata"]["name"]
    previous = budget.get("status") or {}
    (pods, bouncer_pods), others, configmaps, max_replicas = await asyncio.gather(
        _pgbouncer_pods(client, namespace, spec, deployments),
        _overlapping(client, namespace, name, spec),
        _owned_configmaps(client, namespace, name, spec, files_listed),
        _max_replicas(client, namespace, spec),
    )
    pods = desired.with_held(pods, previous)
    overlap = status.overlap_condition(others, observed)
    written = _written_generation(name, spec, configmaps)
    try:
        desired.check_configmaps(name, spec)
        plan = planner.plan(*desired.planner_inputs(spec, deployments, pods, max_replicas))
        generation, files = desired.files(namespace, name, spec, plan, previous, written)
    except (desired.SpecError, planner.PlannerError) as exc:
        reason = exc.reason if isinstance(exc, desired.SpecError) else "InvalidBudget"
        inputs = (deployments, pods, [overlap, discovery], configmaps, written)
        reported = await _invalid(client, budget, spec, exc, reason, observed, *inputs)
        return _after(budget, reported)

    # The ready PgBouncer pods' exporters are asked while the files are written, like the
    # consumer pods: a sizing file this pass changes is not on any pod yet.
    bouncer_targets, unconfirmable = bouncers.targets(bouncer_pods)
    asking_bouncers = asyncio.create_task(ask.bouncer_reports(bouncer_targets))
    started.append(asking_bouncers)
    changed = await _write_files(client, budget, files, configmaps)
    rollout = {c["name"] for c in spec["consumers"] if c.get("reloadMode") == "rollout"}
    # The pods are nudged at once, while the status waits for their answers (``asking``).
    nudging = asyncio.create_task(_refresh(client, namespace, spec, deployments, files, rollout))
    try:
        new_status = await _report(
            client, budget, spec, deployments, joined, discovery, observed, asking,
            plan, generation, files, pods, overlap, asking_bouncers, unconfirmable, rollout,
        )  # fmt: skip
        await nudging
    finally:
        if not nudging.done():
            nudging.cancel()
        await asyncio.gather(nudging, return_exceptions=True)
    if changed:
        log.info("budget %s/%s: wrote %s", namespace, name, ", ".join(changed))
    return _after(budget, new_status)


async def _report(
    client: kube.Kube,
    budget: kube.JSON,
    spec: dict[str, Any],
    deployments: dict[str, Any],
    joined: desired.Discovery,
    discovery: dict[str, Any],
    observed: int,
    asking: asyncio.Task[list[applied.Report]],
    plan: planner.Plan,
    generation: int,
    files: list[desired.File],
    pods: desired.Pods,
    overlap: dict[str, Any],
    asking_bouncers: asyncio.Task[list[bouncers.Report]],
    unconfirmable: list[str],
    rollout: set[str],
) -> dict[str, Any]:
    """Rollout templates, then the status (once the pods have answered) and the plan Event."""
    namespace, name = budget["metadata"]["namespace"], budget["metadata"]["name"]
    previous = budget.get("status") or {}
    for item in spec["consumers"]:
        deployment = deployments.get(item["deployment"])
        if item["name"] in rollout and deployment is not None:
            await _set_template(client, namespace, deployment, plan.consumer(item["name"]))

    new_status = status.applied(spec, generation, observed, plan, files, previous, _now(), pods)
    # Asked at the start of the pass: a file this pass changed is not on any pod yet (lagging
    # until a later pass, see handlers' recheck, finds every worker on it).
    reports = await asking
    expected = {f.consumer: f.generation for f in files if f.consumer is not None}
    workers = {str(c["name"]): int(c.get("workersPerPod", 1)) for c in spec["consumers"]}
    sizing = next(f for f in files if f.consumer is None)
    judged = bouncers.judged(
        await asking_bouncers, pgbouncer_ini.parse(sizing.text), sizing.generation, unconfirmable
    )
    on_plan = bouncers.condition(applied.condition(expected, workers, reports, observed), judged)
    new_status["conditions"] = status.merge_conditions(
        new_status["conditions"], [overlap, discovery, on_plan], _now()
    )
    new_status["discovered"] = status.discovered(joined)
    new_status["applied"] = applied.summary(expected, workers, reports) | bouncers.summary(judged)
    new_status["pgbouncer"]["readyPods"] = bouncers.pods_status(judged)
    await _report_overlap(client, budget, overlap, previous)
    if _differs(new_status, previous):
        await client.patch_budget_status(namespace, name, new_status)
    if generation != previous.get("planGeneration"):
        kind, reason, message = status.plan_event(plan, generation)
        await client.post_event(budget, kind, reason, message)
        log.info("budget %s/%s: %s", namespace, name, message)
    return new_status


async def _refresh(
    client: kube.Kube,
    namespace: str,
    spec: dict[str, Any],
    deployments: dict[str, Any],
    files: list[desired.File],
    rollout: set[str],
) -> None:
    """Prompt the kubelet to refresh mounted ConfigMaps: live consumers and PgBouncer."""
    refresh = [spec["pgbouncer"]["deployment"]]
    refresh += [c["deployment"] for c in spec["consumers"] if c["name"] not in rollout]
    generations = {f.consumer: f.generation for f in files}
    by_deployment = {spec["pgbouncer"]["deployment"]: generations[None]}
    by_deployment |= {c["deployment"]: generations[c["name"]] for c in spec["consumers"]}
    await asyncio.gather(
        *(
            _annotate_pods(client, _namespace_of(deployments[d], namespace), deployments[d],
                           by_deployment[d])
            for d in refresh
            if deployments.get(d) is not None
        )
    )  # fmt: skip


def _after(budget: kube.JSON, reported: dict[str, Any]) -> kube.JSON:
    """The budget with ``reported`` merged into its status, as the merge patch leaves it."""
    return {**budget, "status": {**(budget.get("status") or {}), **reported}}


async def _joined(
    client: kube.Kube, namespace: str, name: str, spec: dict[str, Any], watched: tuple[str, ...]
) -> desired.Discovery:
    """The Deployments labelled poolwarden.io/budget=<name> in the budget's namespace and in
    those of spec.discovery.namespaces the operator watches."""
    accepted = [n for n in (spec.get("discovery") or {}).get("namespaces") or [] if n != namespace]
    looked = [namespace, *(n for n in accepted if n in watched)]
    selector = f"{names.BUDGET_LABEL}={name}"
    found = await asyncio.gather(*(client.list_deployments(n, selector) for n in looked))
    labelled = [d for page in found for d in page]
    unwatched = tuple(n for n in accepted if n not in watched)
    return desired.discover(namespace, name, spec, labelled, unwatched)


def _namespace_of(deployment: dict[str, Any], default: str) -> str:
    return str((deployment.get("metadata") or {}).get("namespace") or default)


def _configmap_refs(name: str, spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """status.files name (``desired.file_ref``) -> (namespace or "", ConfigMap) of every file."""
    refs = {}
    for item in spec["consumers"]:
        cm = names.plan_configmap_name(name, item["name"], item.get("planConfigMap"))
        ns = str(item.get("namespace") or "")
        refs[desired.file_ref(ns, cm)] = (ns, cm)
    cm = names.sizing_configmap_name(name, spec["pgbouncer"].get("sizingConfigMap"))
    refs[cm] = ("", cm)
    return refs


async def _owned_configmaps(
    client: kube.Kube,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    known: dict[str, kube.JSON | None] | None = None,
) -> dict[str, kube.JSON | None]:
    """Every ConfigMap the budget writes, as it is now: read once per pass, concurrently;
    those in ``known`` (read earlier in the pass) are not read again."""
    known = known or {}
    refs = _configmap_refs(name, spec)
    missing = [ref for ref in refs if ref not in known]
    found = await asyncio.gather(
        *(client.get_configmap(refs[r][0] or namespace, refs[r][1]) for r in missing)
    )
    read = dict(zip(missing, found, strict=True))
    return {ref: known[ref] if ref in known else read[ref] for ref in refs}


async def _consumer_reports(
    client: kube.Kube, namespace: str, spec: dict[str, Any], deployments: dict[str, Any]
) -> list[applied.Report]:
    """Each ready consumer pod's worker generations, asked once (``ask``)."""
    found: list[applied.Target] = []
    listed = []
    for item in spec.get("consumers") or []:
        deployment = deployments.get(item["deployment"])
        selector = kube.label_selector(deployment) if deployment is not None else ""
        if deployment is not None and selector:
            listed.append((str(item["name"]), _namespace_of(deployment, namespace), selector))
    pods = await asyncio.gather(*(client.list_pods(ns, sel) for _, ns, sel in listed))
    for (consumer, _, _), page in zip(listed, pods, strict=True):
        found += applied.targets(consumer, page)
    return await ask.reports(found)


async def _max_replicas(client: kube.Kube, namespace: str, spec: dict[str, Any]) -> dict[str, int]:
    """The HPAs' maxReplicas by Deployment, read only when a consumer is sized for them."""
    if not desired.sized_deployments(spec):
        return {}
    return desired.hpa_max_replicas(await client.list_hpas(namespace))


def _written_generation(
    name: str, spec: dict[str, Any], configmaps: dict[str, kube.JSON | None]
) -> int:
    """The highest generation in the plan and sizing ConfigMaps as they are now."""
    found = [0]
    for item in spec["consumers"]:
        ref = names.plan_configmap_name(name, item["name"], item.get("planConfigMap"))
        cm = configmaps.get(desired.file_ref(str(item.get("namespace") or ""), ref))
        text = ((cm or {}).get("data") or {}).get(names.PLAN_KEY)
        if text:
            try:
                found.append(planfile.parse(text).generation)
            except planfile.PlanFileError:
                pass  # hand-edited into nonsense: it will be rewritten
    cm = configmaps.get(names.sizing_configmap_name(name, spec["pgbouncer"].get("sizingConfigMap")))
    try:
        found.append(
            pgbouncer_ini.generation(((cm or {}).get("data") or {}).get(names.SIZING_KEY, ""))
        )
    except pgbouncer_ini.SizingError:
        pass  # hand-edited into nonsense: it will be rewritten
    return max(found)


async def _overlapping(
    client: kube.Kube, namespace: str, name: str, spec: dict[str, Any]
) -> list[str]:
    """Other budgets for the same database and role (none to look for without an identity)."""
    if desired.database_identity(namespace, spec) is None:
        return []
    return desired.overlapping(namespace, name, spec, await client.list_budgets(namespace))


async def _pgbouncer_pods(
    client: kube.Kube, namespace: str, spec: dict[str, Any], deployments: dict[str, Any]
) -> tuple[desired.Pods, list[kube.JSON]]:
    """The PgBouncer Deployment's pods that exist, terminating ones included: counted, and as
    listed (their exporters are asked what they run)."""
    name = spec["pgbouncer"]["deployment"]
    deployment = deployments.get(name)
    # Without the Deployment its pods (being garbage-collected) are found by owner alone.
    selector = kube.label_selector(deployment) if deployment is not None else ""
    if deployment is not None and not selector:
        return desired.Pods(), []
    listed = await client.list_pods(namespace, selector)
    return desired.count_pods(listed, name), [
        p for p in listed if desired.owning_deployment(p) == name
    ]


async def _write_files(
    client: kube.Kube,
    budget: dict[str, Any],
    files: list[desired.File],
    configmaps: dict[str, kube.JSON | None],
) -> list[str]:
    """Create or patch the files whose bytes differ from ``configmaps`` (read this pass)."""
    namespace, name = budget["metadata"]["namespace"], budget["metadata"]["name"]
    changed = []
    for f in files:
        current = configmaps.get(f.ref)
        if current is not None and (current.get("data") or {}).get(f.key) == f.text:
            continue
        await client.write_configmap(
            f.namespace or namespace,
            f.configmap,
            {f.key: f.text},
            names.managed_labels(name),
            f.owner or kube.owner_reference(budget),
            exists=current is not None,
        )
        changed.append(f.ref)
    return changed


async def _set_template(
    client: kube.Kube, namespace: str, deployment: dict[str, Any], part: planner.ConsumerPlan
) -> None:
    wanted = desired.template_annotations(part)
    template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    current = template.get("annotations") or {}
    if any(current.get(k) != v for k, v in wanted.items()):
        await client.patch_template_annotations(namespace, deployment["metadata"]["name"], wanted)


async def _annotate_pods(
    client: kube.Kube, namespace: str, deployment: dict[str, Any], generation: int
) -> None:
    selector = kube.label_selector(deployment)
    if not selector:
        return
    value = str(generation)
    wanted = {names.PLAN_GENERATION_ANNOTATION: value}
    started = time.monotonic()
    patches: list[asyncio.Task[None]] = []
    seen = 0
    try:
        # Each page's pods are patched while the next page is read (``kube.ANNOTATING`` at once).
        async for page in client.pod_pages(namespace, selector):
            seen += len(page)
            patches += [
                asyncio.create_task(client.annotate_pod(namespace, p["metadata"]["name"], wanted))
                for p in page
                if (p["metadata"].get("annotations") or {}).get(names.PLAN_GENERATION_ANNOTATION)
                != value
                and not p["metadata"].get("deletionTimestamp")
            ]
        listed = time.monotonic()
        await asyncio.gather(*patches)
    finally:
        for task in patches:
            task.cancel()
        await asyncio.gather(*patches, return_exceptions=True)
    if patches:
        log.info(
            "%s/%s: %d of %d pods annotated with generation %s in %.2f s (listed in %.2f s)",
            namespace, deployment["metadata"]["name"], len(patches), seen, value,
            time.monotonic() - started, listed - started,
        )  # fmt: skip


async def _invalid(
    client: kube.Kube,
    budget: dict[str, Any],
    spec: dict[str, Any],
    error: Exception,
    reason: str,
    observed: int,
    deployments: dict[str, Any],
    pods: desired.Pods,
    conditions: list[dict[str, Any]],
    configmaps: dict[str, kube.JSON | None],
    written: int,
) -> dict[str, Any]:
    """Fail safe: PgBouncer gets ``max(1, budget // pods)``, never the old, larger limits.

    ``spec`` is the budget's with the consumers joined by label (each keeps its alias);
    ``configmaps`` and ``written`` are the pass's one read of the owned ConfigMaps.
    """
    meta = budget["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = budget.get("status") or {}
    overlap = conditions[0]
    safe = desired.safe_pgbouncer(spec, deployments, pods)
    generation, sizing = desired.sizing_file(
        namespace, name, spec, safe.pgbouncer, previous, written
    )
    await _write_files(client, budget, [sizing], configmaps)
    new_status = status.invalid(
        error, reason, observed, previous, _now(), safe, generation, sizing, pods
    )
    new_status["conditions"] = status.merge_conditions(new_status["conditions"], conditions, _now())
    await _report_overlap(client, budget, overlap, previous)
    was = {c["type"]: c for c in previous.get("conditions") or []}.get("Ready") or {}
    message = status.invalid_message(error, safe)
    if _differs(new_status, previous):
        await client.patch_budget_status(namespace, name, new_status)
    if was.get("message") != message:
        await client.post_event(budget, "Warning", reason, message)
    bouncer = deployments.get(spec["pgbouncer"]["deployment"])
    if bouncer is not None:
        await _annotate_pods(client, namespace, bouncer, sizing.generation)
    log.warning("budget %s/%s cannot be planned: %s", namespace, name, message)
    return new_status


async def _report_overlap(
    client: kube.Kube, budget: dict[str, Any], overlap: dict[str, Any], previous: dict[str, Any]
) -> None:
    """A Warning Event when the budget starts to overlap others (or the set changes)."""
    was = {c["type"]: c for c in previous.get("conditions") or []}.get("Overlapping") or {}
    if overlap["status"] == "True" and was.get("message") != overlap["message"]:
        await client.post_event(budget, "Warning", "Overlapping", overlap["message"])


async def _report_discovery(
    client: kube.Kube, budget: dict[str, Any], condition: dict[str, Any], previous: dict[str, Any]
) -> None:
    """A Warning Event when a labelled Deployment is refused (or what is refused changes)."""
    was = {c["type"]: c for c in previous.get("conditions") or []}.get("Discovery") or {}
    if condition["status"] == "False" and was.get("message") != condition["message"]:
        await client.post_event(budget, "Warning", condition["reason"], condition["message"])


def _differs(new: dict[str, Any], previous: dict[str, Any]) -> bool:
    def strip(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]

    for key, value in new.items():
        if key == "conditions":
            if strip(value) != strip(previous.get("conditions") or []):
                return True
        elif previous.get(key) != value:
            return True
    return False


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
