{{/* The chart name, or nameOverride. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, or the release name when it already
contains the chart name, or <release>-<chart>. Cut to 63 characters (DNS label limit).
*/}}
{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "berth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "berth.commonLabels" -}}
helm.sh/chart: {{ include "berth.chart" . }}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: berth
{{- end }}

{{/* Labels on berth's own objects. */}}
{{- define "berth.labels" -}}
{{ include "berth.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on the bundled registry's objects. */}}
{{- define "berth.registry.labels" -}}
{{ include "berth.commonLabels" . }}
app.kubernetes.io/component: registry
{{- end }}

{{/* Selector labels of berth's pods. */}}
{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the bundled registry's pods. */}}
{{- define "berth.registry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: registry
{{- end }}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The bundled registry: its objects' name, the Registry object's name, and its addresses. */}}
{{- define "berth.registry.fullname" -}}
{{- printf "%s-registry" (include "berth.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.registry.objectName" -}}
{{- default (include "berth.fullname" .) .Values.registry.name }}
{{- end }}

{{- define "berth.registry.host" -}}
{{- printf "%s.%s.svc" (include "berth.registry.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "berth.registry.url" -}}
{{- default (printf "http://%s:%v" (include "berth.registry.host" .) .Values.registry.service.port) .Values.registry.url }}
{{- end }}

{{- define "berth.registry.service" -}}
{{- default (include "berth.registry.host" .) .Values.registry.auth.service }}
{{- end }}

{{- define "berth.registry.signingSecret" -}}
{{- default (printf "%s-token-signing" (include "berth.fullname" .)) .Values.registry.auth.signingSecretName }}
{{- end }}

{{- define "berth.registry.eventsSecret" -}}
{{- printf "%s-events" (include "berth.registry.fullname" .) }}
{{- end }}

{{- define "berth.registry.configSecret" -}}
{{- printf "%s-config" (include "berth.registry.fullname" .) }}
{{- end }}

{{/* berth's address inside the cluster, as the registry and its clients reach it. */}}
{{- define "berth.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "berth.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{- define "berth.registry.realm" -}}
{{- default (printf "%s/token/%s" (include "berth.url" .) (include "berth.registry.objectName" .)) .Values.registry.auth.realm }}
{{- end }}

{{- define "berth.registry.eventsURL" -}}
{{- default (printf "%s/events/registry/%s" (include "berth.url" .) (include "berth.registry.objectName" .)) .Values.registry.notifications.url }}
{{- end }}

{{/*
With rbac.scope namespaces: the namespaces berth reads Secrets and writes in, comma-separated,
the release namespace first (its signing keys and Lease live there).
*/}}
{{- define "berth.managedNamespaces" -}}
{{- prepend .Values.rbac.namespaces .Release.Namespace | uniq | join "," }}
{{- end }}

{{/* Refuses value combinations that cannot work, with the reason. */}}
{{- define "berth.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled: without it every replica reconciles and they fight" }}
{{- end }}
{{- if and .Values.registry.enabled (eq .Values.registry.storage.type "s3") (not .Values.registry.storage.s3.bucket) }}
{{- fail "registry.storage.s3.bucket is required with registry.storage.type s3" }}
{{- end }}
{{- if and .Values.registry.enabled (eq .Values.registry.storage.type "pvc") (gt (int .Values.registry.replicas) 1) (has "ReadWriteOnce" .Values.registry.storage.pvc.accessModes) }}
{{- fail "registry.replicas > 1 needs shared storage: registry.storage.type s3, or a ReadWriteMany volume" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "cluster") .Values.rbac.namespaces }}
{{- fail "rbac.namespaces needs rbac.scope namespaces: with scope cluster berth may write in every namespace" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespaces") .Values.namespace (not (has .Values.namespace (splitList "," (include "berth.managedNamespaces" .)))) }}
{{- fail "namespace must be the release namespace or one of rbac.namespaces: berth may not write anywhere else" }}
{{- end }}
{{- end }}
