{{/*
Names, labels and shared fragments. Every name and label in this chart comes from here.
Selector labels are a strict subset (name, instance, component) and never carry a version.
*/}}

{{/* The chart's name, overridable with nameOverride. */}}
{{- define "poolwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name, cut to 40 characters: names append suffixes of up to 19 characters
("-pgbouncer-fallback") and a StatefulSet's name must leave room for its pods' 11-character
controller-revision-hash suffix within 63 (so "<base>-postgresql" stays within 52).
*/}}
{{- define "poolwarden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "poolwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The namespace every object goes to. */}}
{{- define "poolwarden.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/* Labels common to every object. */}}
{{- define "poolwarden.labels" -}}
helm.sh/chart: {{ include "poolwarden.chart" . }}
{{ include "poolwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: poolwarden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the release (immutable: no version here). */}}
{{- define "poolwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "poolwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component names. Suffixes: -app, -pgbouncer, -postgresql, -operator.
*/}}
{{- define "poolwarden.app.fullname" -}}
{{- printf "%s-app" (include "poolwarden.fullname" .) }}
{{- end }}

{{- define "poolwarden.pgbouncer.fullname" -}}
{{- printf "%s-pgbouncer" (include "poolwarden.fullname" .) }}
{{- end }}

{{- define "poolwarden.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "poolwarden.fullname" .) }}
{{- end }}

{{/* Headless Service that gives the StatefulSet's pod a stable DNS name. */}}
{{- define "poolwarden.postgresql.headlessName" -}}
{{- printf "%s-postgresql-hl" (include "poolwarden.fullname" .) }}
{{- end }}

{{- define "poolwarden.operator.fullname" -}}
{{- printf "%s-operator" (include "poolwarden.fullname" .) }}
{{- end }}

{{/* The ServiceAccount the operator runs as (operator-rbac.yaml binds its roles to it). */}}
{{- define "poolwarden.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "poolwarden.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false: name an existing ServiceAccount" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Alias following the prometheus-community helper set. */}}
{{- define "poolwarden.serviceAccountName" -}}
{{- include "poolwarden.operator.serviceAccountName" . }}
{{- end }}

{{/* The ConnectionBudget this release renders; the operator names its ConfigMaps after it. */}}
{{- define "poolwarden.connectionBudget.name" -}}
{{- include "poolwarden.fullname" . }}
{{- end }}

{{/*
ConfigMaps written by the operator, never by this chart (a helm upgrade would overwrite the
live plan). The chart only names them in the ConnectionBudget and mounts them optionally.
*/}}
{{- define "poolwarden.app.planConfigMapName" -}}
{{- printf "%s-app-plan" (include "poolwarden.fullname" .) }}
{{- end }}

{{- define "poolwarden.pgbouncer.sizingConfigMapName" -}}
{{- printf "%s-pgbouncer-sizing" (include "poolwarden.fullname" .) }}
{{- end }}

{{/*
The ConfigMap the chart renders for PgBouncer: its fallback sizing (key sizing.ini), used until
the operator's sizing ConfigMap exists. Mounted as a directory, so a helm upgrade that changes
the budget reaches running pods in place (the entrypoint RELOADs) instead of restarting them.
*/}}
{{- define "poolwarden.pgbouncer.fallbackConfigMapName" -}}
{{- printf "%s-pgbouncer-fallback" (include "poolwarden.fullname" .) }}
{{- end }}

{{/*
The Secret holding the database passwords: the user's existingSecret (postgresql.auth.* with the
chart's PostgreSQL, externalDatabase.* without), else `<fullname>-db`, generated once.
*/}}
{{- define "poolwarden.database.existingSecret" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.auth.existingSecret }}
{{- else }}
{{- .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{- define "poolwarden.database.secretName" -}}
{{- $existing := include "poolwarden.database.existingSecret" . }}
{{- if $existing }}
{{- $existing }}
{{- else }}
{{- printf "%s-db" (include "poolwarden.fullname" .) }}
{{- end }}
{{- end }}

{{/* Key of the app role's password in that Secret. */}}
{{- define "poolwarden.database.secretPasswordKey" -}}
{{- if not (include "poolwarden.database.existingSecret" .) -}}
password
{{- else if .Values.postgresql.enabled }}
{{- .Values.postgresql.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalDatabase.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* Key of the superuser's (`postgres`) password in that Secret (the chart's PostgreSQL only). */}}
{{- define "poolwarden.database.secretPostgresPasswordKey" -}}
{{- if .Values.postgresql.auth.existingSecret }}
{{- .Values.postgresql.auth.existingSecretPostgresPasswordKey }}
{{- else -}}
postgres-password
{{- end }}
{{- end }}

{{/* The ConfigMap with db-role.sh and the role's wanted state (role.conf). */}}
{{- define "poolwarden.database.roleConfigMapName" -}}
{{- printf "%s-db-role" (include "poolwarden.fullname" .) }}
{{- end }}

{{/* The ConfigMap with the PostgreSQL exporter's custom queries. */}}
{{- define "poolwarden.postgresql.exporterConfigMapName" -}}
{{- printf "%s-postgres-exporter" (include "poolwarden.fullname" .) }}
{{- end }}

{{/*
role.conf for db-role.sh: the consumers' role, its database, and its CONNECTION LIMIT, which is
the budget (poolwarden.budget.total, never recomputed here).
*/}}
{{- define "poolwarden.database.roleConfig" -}}
role={{ include "poolwarden.database.user" . }}
database={{ include "poolwarden.database.name" . }}
connection_limit={{ include "poolwarden.budget.total" . }}
{{- if .Values.postgresql.enabled }}
idle_in_transaction_session_timeout={{ .Values.postgresql.idleInTransactionSessionTimeoutSeconds }}
{{- end }}
{{- end }}

{{/*
Per-component labels: the common labels plus app.kubernetes.io/component.
Usage: include "poolwarden.componentLabels" (dict "context" $ "component" "app")
*/}}
{{- define "poolwarden.componentLabels" -}}
{{ include "poolwarden.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "poolwarden.componentSelectorLabels" -}}
{{ include "poolwarden.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "poolwarden.app.labels" -}}
{{ include "poolwarden.componentLabels" (dict "context" . "component" "app") }}
{{- end }}
{{- define "poolwarden.app.selectorLabels" -}}
{{ include "poolwarden.componentSelectorLabels" (dict "context" . "component" "app") }}
{{- end }}

{{- define "poolwarden.pgbouncer.labels" -}}
{{ include "poolwarden.componentLabels" (dict "context" . "component" "pgbouncer") }}
{{- end }}
{{- define "poolwarden.pgbouncer.selectorLabels" -}}
{{ include "poolwarden.componentSelectorLabels" (dict "context" . "component" "pgbouncer") }}
{{- end }}

{{- define "poolwarden.postgresql.labels" -}}
{{ include "poolwarden.componentLabels" (dict "context" . "component" "postgresql") }}
{{- end }}
{{- define "poolwarden.postgresql.selectorLabels" -}}
{{ include "poolwarden.componentSelectorLabels" (dict "context" . "component" "postgresql") }}
{{- end }}

{{- define "poolwarden.operator.labels" -}}
{{ include "poolwarden.componentLabels" (dict "context" . "component" "operator") }}
{{- end }}
{{- define "poolwarden.operator.selectorLabels" -}}
{{ include "poolwarden.componentSelectorLabels" (dict "context" . "component" "operator") }}
{{- end }}

{{/*
An image reference. global.imageRegistry wins over the image's own registry; an empty registry
leaves the reference as repository:tag; an empty tag means the chart's appVersion; a digest
pins the image.
Usage: include "poolwarden.image" (dict "image" .Values.app.image "context" $)
*/}}
{{- define "poolwarden.image" -}}
{{- $registry := .image.registry }}
{{- if .context.Values.global.imageRegistry }}
{{- $registry = .context.Values.global.imageRegistry }}
{{- end }}
{{- $tag := .context.Chart.AppVersion }}
{{- if .image.tag }}
{{- $tag = toString .image.tag }}
{{- end }}
{{- $ref := .image.repository }}
{{- if $registry }}
{{- $ref = printf "%s/%s" $registry .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $ref .image.digest }}
{{- else }}
{{- printf "%s:%s" $ref $tag }}
{{- end }}
{{- end }}

{{/* imagePullSecrets from global.imagePullSecrets. */}}
{{- define "poolwarden.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where PgBouncer sends server connections: the chart's PostgreSQL or the external one. */}}
{{- define "poolwarden.database.host" -}}
{{- if .Values.postgresql.enabled }}
{{- include "poolwarden.postgresql.fullname" . }}
{{- else }}
{{- required "externalDatabase.host is required when postgresql.enabled=false" .Values.externalDatabase.host }}
{{- end }}
{{- end }}

{{- define "poolwarden.database.port" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.service.port }}
{{- else }}
{{- .Values.externalDatabase.port }}
{{- end }}
{{- end }}

{{- define "poolwarden.database.name" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.auth.database }}
{{- else }}
{{- .Values.externalDatabase.database }}
{{- end }}
{{- end }}

{{- define "poolwarden.database.user" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.auth.username }}
{{- else }}
{{- .Values.externalDatabase.username }}
{{- end }}
{{- end }}

{{/* The database's max_connections: the top of the budget. */}}
{{- define "poolwarden.database.maxConnections" -}}
{{- if .Values.postgresql.enabled }}
{{- .Values.postgresql.maxConnections }}
{{- else }}
{{- .Values.externalDatabase.maxConnections }}
{{- end }}
{{- end }}

{{/*
The database password: the user's value, else (chart-run PostgreSQL) the one already stored in
the release's Secret, kept across upgrades, else a new random one.
*/}}
{{- define "poolwarden.database.password" -}}
{{- $given := ternary .Values.postgresql.auth.password .Values.externalDatabase.password .Values.postgresql.enabled }}
{{- if $given }}
{{- $given }}
{{- else if .Values.postgresql.enabled }}
{{- include "poolwarden.keptRandom" (dict "context" . "name" (include "poolwarden.database.secretName" .) "key" "password") }}
{{- else }}
{{- fail "externalDatabase.password (or externalDatabase.existingSecret) is required when postgresql.enabled=false: the chart cannot invent the password of a database it does not run" }}
{{- end }}
{{- end }}

{{/* The superuser's password (chart-run PostgreSQL): the user's value, else kept, else new. */}}
{{- define "poolwarden.database.postgresPassword" -}}
{{- if .Values.postgresql.auth.postgresPassword }}
{{- .Values.postgresql.auth.postgresPassword }}
{{- else }}
{{- include "poolwarden.keptRandom" (dict "context" . "name" (include "poolwarden.database.secretName" .) "key" "postgres-password") }}
{{- end }}
{{- end }}

{{/* Container securityContext shared by every container (values may add to it). */}}
{{- define "poolwarden.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A generated secret value that survives upgrades: the value already stored under `key` in the
Secret `name` of the release's namespace, else a new random one.
Usage: include "poolwarden.keptRandom" (dict "context" $ "name" "x" "key" "y")
*/}}
{{- define "poolwarden.keptRandom" -}}
{{- $existing := lookup "v1" "Secret" .context.Release.Namespace .name }}
{{- if and $existing $existing.data (index $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* The Secret with PgBouncer's admin and stats console passwords (the user's, or generated). */}}
{{- define "poolwarden.pgbouncer.secretName" -}}
{{- if .Values.pgbouncer.existingSecret }}
{{- .Values.pgbouncer.existingSecret }}
{{- else }}
{{- printf "%s-pgbouncer" (include "poolwarden.fullname" .) }}
{{- end }}
{{- end }}

{{/* The server-side budget: max_connections minus reserved. */}}
{{- define "poolwarden.budget.total" -}}
{{- $max := int (include "poolwarden.database.maxConnections" .) }}
{{- $reserved := int .Values.budget.reserved }}
{{- if le $max $reserved }}
{{- fail (printf "budget.reserved (%d) must be below the database's max_connections (%d): lower budget.reserved or raise postgresql.maxConnections / externalDatabase.maxConnections" $reserved $max) }}
{{- end }}
{{- sub $max $reserved }}
{{- end }}

{{/*
PgBouncer's rollout strategy: the one owner of its surge (the fallback slice below counts the
same pods). maxSurge + maxUnavailable >= 1, else the Deployment controller cannot roll out.
*/}}
{{- define "poolwarden.pgbouncer.maxSurge" -}}
{{- $surge := int .Values.pgbouncer.rollout.maxSurge }}
{{- if lt (add $surge (int .Values.pgbouncer.rollout.maxUnavailable)) 1 }}
{{- fail "pgbouncer.rollout.maxSurge + pgbouncer.rollout.maxUnavailable must be at least 1 (a rollout could not replace any pod): raise pgbouncer.rollout.maxUnavailable (or maxSurge)" }}
{{- end }}
{{- $surge }}
{{- end }}

{{/*
The PgBouncer pods that may hold server connections before the operator's first plan:
replicas + the rollout's maxSurge (terminating pods beyond that are the role's CONNECTION LIMIT's
to bound until the operator counts them).
*/}}
{{- define "poolwarden.pgbouncer.fallbackPods" -}}
{{- add (int .Values.pgbouncer.replicaCount) (int (include "poolwarden.pgbouncer.maxSurge" .)) }}
{{- end }}

{{/*
PgBouncer's sizing before the operator's first sizing.ini: each pod that may hold server
connections (fallbackPods) gets an equal slice of the budget, so the database stays within its
budget even with the operator down. The only place that computes the slice; it fails when even
one server connection per pod does not fit.
*/}}
{{- define "poolwarden.pgbouncer.fallbackMaxDbConnections" -}}
{{- $budget := int (include "poolwarden.budget.total" .) }}
{{- $replicas := int .Values.pgbouncer.replicaCount }}
{{- $surge := int (include "poolwarden.pgbouncer.maxSurge" .) }}
{{- $pods := int (include "poolwarden.pgbouncer.fallbackPods" .) }}
{{- if gt $pods $budget }}
{{- $maxKey := ternary "postgresql.maxConnections" "externalDatabase.maxConnections" .Values.postgresql.enabled }}
{{- fail (printf "pgbouncer.replicaCount (%d) plus pgbouncer.rollout.maxSurge (%d) need at least %d server connections (one per pod), but the budget is %d (%s %s - budget.reserved %d): lower pgbouncer.replicaCount, pgbouncer.rollout.maxSurge or budget.reserved, or raise %s" $replicas $surge $pods $budget $maxKey (include "poolwarden.database.maxConnections" .) (int .Values.budget.reserved) $maxKey) }}
{{- end }}
{{- div $budget $pods }}
{{- end }}

{{/*
The app's consumer name: its name in the ConnectionBudget and the PgBouncer database (alias)
its pods connect to. The one owner: connectionbudget.yaml, the fallback sizing and the app's
POOLWARDEN_DB_NAME all take it from here.
*/}}
{{- define "poolwarden.app.consumerName" -}}
{{- $name := "app" }}
{{- if or (eq $name (include "poolwarden.database.name" .)) (eq $name "pgbouncer") }}
{{- fail (printf "the app's PgBouncer database alias is %q, which PgBouncer already uses for the database itself or its console: choose another database name (postgresql.auth.database / externalDatabase.database)" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
What the operator plans the app for: app.sizeFor, or (empty) maxReplicas when the chart's HPA
is on (a scale-out within it needs no new plan), else the live replica count.
*/}}
{{- define "poolwarden.app.sizeFor" -}}
{{- if .Values.app.sizeFor }}
{{- .Values.app.sizeFor }}
{{- else if .Values.app.autoscaling.enabled -}}
maxReplicas
{{- else -}}
replicas
{{- end }}
{{- end }}

{{/* The app's asyncpg statement cache: on exactly when PgBouncer tracks prepared statements. */}}
{{- define "poolwarden.app.statementCache" -}}
{{- ternary "true" "false" (gt (int .Values.pgbouncer.maxPreparedStatements) 0) }}
{{- end }}

{{/* PgBouncer's static settings: the entrypoint renders pgbouncer.ini from them (pgbouncer/README.md). */}}
{{- define "poolwarden.pgbouncer.staticEnv" -}}
- name: PGBOUNCER_DB_HOST
  value: {{ include "poolwarden.database.host" . | quote }}
- name: PGBOUNCER_DB_PORT
  value: {{ include "poolwarden.database.port" . | quote }}
- name: PGBOUNCER_DB_NAME
  value: {{ include "poolwarden.database.name" . | quote }}
- name: PGBOUNCER_DB_USER
  value: {{ include "poolwarden.database.user" . | quote }}
- name: PGBOUNCER_LISTEN_PORT
  value: {{ .Values.pgbouncer.port | quote }}
- name: PGBOUNCER_SIZING_DIR
  value: /etc/pgbouncer/sizing
- name: PGBOUNCER_FALLBACK_DIR
  value: /etc/pgbouncer/fallback
- name: PGBOUNCER_CONF_DIR
  value: /var/lib/pgbouncer
- name: PGBOUNCER_SHUTDOWN_DELAY
  value: {{ .Values.pgbouncer.shutdownDelaySeconds | quote }}
- name: PGBOUNCER_IDLE_TRANSACTION_TIMEOUT
  value: {{ .Values.pgbouncer.idleTransactionTimeoutSeconds | quote }}
- name: PGBOUNCER_QUERY_WAIT_TIMEOUT
  value: {{ .Values.budget.waitTimeoutSeconds | quote }}
- name: PGBOUNCER_MAX_PREPARED_STATEMENTS
  value: {{ .Values.pgbouncer.maxPreparedStatements | quote }}
{{- end }}

{{/* The DNS egress rule shared by the NetworkPolicies (one list item). */}}
{{- define "poolwarden.networkPolicy.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The consumer Deployments with reloadMode rollout, as a JSON list: the only Deployments the
operator may patch (their pod template's pool-size annotations). Follows the consumers
templates/connectionbudget.yaml renders (the app's `app.reloadMode`, each item of `consumers`).
*/}}
{{- define "poolwarden.operator.rolloutDeployments" -}}
{{- $names := list }}
{{- if eq (toString .Values.app.reloadMode) "rollout" }}
{{- $names = append $names (include "poolwarden.app.fullname" .) }}
{{- end }}
{{- range $c := include "poolwarden.consumers" . | fromJsonArray }}
{{- if eq (toString $c.reloadMode) "rollout" }}
{{- $names = append $names $c.fullname }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
The operator's ServiceAccount as the API server names the requests it makes.
*/}}
{{- define "poolwarden.operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "poolwarden.operator.serviceAccountName" .) }}
{{- end }}

{{/*
Cluster-scoped admission policies and bindings of one release: `<namespace>.<operator>-<what>`.
A namespace has no dots, so two releases (any namespaces, any names) never share one.
Usage: include "poolwarden.operator.admissionPolicyName" (dict "context" $ "what" "pods")
*/}}
{{- define "poolwarden.operator.admissionPolicyName" -}}
{{- printf "%s.%s-%s" .context.Release.Namespace (include "poolwarden.operator.fullname" .context) .what }}
{{- end }}

{{/*
The consumers listed in values (`consumers`), each merged over `consumerDefaults` (a key given
in the item wins; the objects image, service, podDisruptionBudget, podSecurityContext and
securityContext merge key by key), checked, with `fullname` (its Deployment and Service) and
`planConfigMap` added. A JSON list; every template that renders consumers reads it from here.
*/}}
{{- define "poolwarden.consumers" -}}
{{- $merged := list }}
{{- $seen := dict }}
{{- $database := include "poolwarden.database.name" . }}
{{- $fullname := include "poolwarden.fullname" . }}
{{- range $i, $item := .Values.consumers }}
{{- $c := dict }}
{{- range $k, $v := $.Values.consumerDefaults }}
{{- if hasKey $item $k }}
{{- $given := index $item $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $given) (has $k (list "image" "service" "podDisruptionBudget" "podSecurityContext" "securityContext")) }}
{{- $m := deepCopy $v }}
{{- range $k2, $v2 := $given }}
{{- $_ := set $m $k2 $v2 }}
{{- end }}
{{- $_ := set $c $k $m }}
{{- else }}
{{- $_ := set $c $k $given }}
{{- end }}
{{- else if kindIs "invalid" $v }}
{{- $_ := set $c $k $v }}
{{- else }}
{{- $_ := set $c $k (deepCopy $v) }}
{{- end }}
{{- end }}
{{- $_ := set $c "name" $item.name }}
{{- if hasKey $seen $item.name }}
{{- fail (printf "consumers[%d].name %q is used twice: give each consumer its own name" $i $item.name) }}
{{- end }}
{{- $_ := set $seen $item.name true }}
{{- if eq $item.name $database }}
{{- fail (printf "consumers[%d].name %q is the database's name, which PgBouncer already serves: rename the consumer" $i $item.name) }}
{{- end }}
{{- if not $c.image.repository }}
{{- fail (printf "consumers[%d] (%s) needs image.repository: the image its Deployment runs" $i $item.name) }}
{{- end }}
{{- range $j, $e := $c.env }}
{{- if has $e.name (list "POOLWARDEN_DB_HOST" "POOLWARDEN_DB_PORT" "POOLWARDEN_DB_NAME" "POOLWARDEN_DB_USER" "POOLWARDEN_DB_PASSWORD" "POOLWARDEN_WORKERS" "POOLWARDEN_THREADS" "POOLWARDEN_POOL_SIZE" "POOLWARDEN_MAX_OVERFLOW" "POOLWARDEN_PLAN_FILE" "POOLWARDEN_POOL_TIMEOUT" "POOLWARDEN_STATEMENT_CACHE") }}
{{- fail (printf "consumers[%d].env[%d] sets %s, which the chart sets (from workers, threadsPerWorker, the database and pgbouncer values): remove it from env" $i $j $e.name) }}
{{- end }}
{{- end }}
{{- $_ := set $c "fullname" (printf "%s-%s" $fullname $item.name) }}
{{- $_ := set $c "planConfigMap" (printf "%s-%s-plan" $fullname $item.name) }}
{{- $merged = append $merged $c }}
{{- end }}
{{- toJson $merged }}
{{- end }}

{{/* Labels of a values-listed consumer: component `consumer` plus poolwarden.io/consumer. */}}
{{- define "poolwarden.consumer.labels" -}}
{{ include "poolwarden.componentLabels" (dict "context" .context "component" "consumer") }}
poolwarden.io/consumer: {{ .name }}
{{- end }}
{{- define "poolwarden.consumer.selectorLabels" -}}
{{ include "poolwarden.componentSelectorLabels" (dict "context" .context "component" "consumer") }}
poolwarden.io/consumer: {{ .name }}
{{- end }}

{{/*
The environment every consumer container gets from the chart (the reference app and each item
of `consumers`): where PgBouncer is, its own alias, the credentials, its workers (and threads),
the initial pool and the plan file. The library and the reference apps read exactly these.
Usage: include "poolwarden.consumer.env" (dict "context" $ "name" "app" "workers" 2 "threads" 0 "poolSize" 1 "maxOverflow" 0)
*/}}
{{- define "poolwarden.consumer.env" -}}
- name: POOLWARDEN_DB_HOST
  value: {{ include "poolwarden.pgbouncer.fullname" .context | quote }}
- name: POOLWARDEN_DB_PORT
  value: {{ .context.Values.pgbouncer.port | quote }}
# The consumer's own PgBouncer database (alias): PgBouncer holds its share of the budget.
- name: POOLWARDEN_DB_NAME
  value: {{ .name | quote }}
- name: POOLWARDEN_DB_USER
  value: {{ include "poolwarden.database.user" .context | quote }}
- name: POOLWARDEN_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "poolwarden.database.secretName" .context }}
      key: {{ include "poolwarden.database.secretPasswordKey" .context }}
- name: POOLWARDEN_WORKERS
  value: {{ .workers | toString | quote }}
{{- if gt (int .threads) 0 }}
- name: POOLWARDEN_THREADS
  value: {{ .threads | toString | quote }}
{{- end }}
- name: POOLWARDEN_POOL_SIZE
  value: {{ .poolSize | toString | quote }}
- name: POOLWARDEN_MAX_OVERFLOW
  value: {{ .maxOverflow | toString | quote }}
- name: POOLWARDEN_PLAN_FILE
  value: /etc/poolwarden/plan/plan.json
# A request waits for a connection once: in PgBouncer (query_wait_timeout) or in its pool,
# never longer than this (budget.waitTimeoutSeconds sets both).
- name: POOLWARDEN_POOL_TIMEOUT
  value: {{ .context.Values.budget.waitTimeoutSeconds | quote }}
- name: POOLWARDEN_STATEMENT_CACHE
  value: {{ include "poolwarden.app.statementCache" .context | quote }}
{{- end }}

{{/* The release's alerting rules (a `groups:` document), rendered from files/prometheus-rules.yaml. */}}
{{- define "poolwarden.monitoring.rules" -}}
{{- tpl (.Files.Get "files/prometheus-rules.yaml") . | trim }}
{{- end }}

{{/*
The name of the operator container's port that serves its Prometheus metrics: the operator's
PodMonitor scrapes the port of this name (the operator's Deployment names its port with it).
*/}}
{{- define "poolwarden.operator.metricsPortName" -}}
metrics
{{- end }}
