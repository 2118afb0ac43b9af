{{/*
The chart name, truncated to 63 characters (a Kubernetes name limit).
*/}}
{{- define "jwt-key-rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, plus the chart name unless the
release name already contains it; truncated to 63 characters.
*/}}
{{- define "jwt-key-rotator.fullname" -}}
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

{{/*
name-version, for the helm.sh/chart label.
*/}}
{{- define "jwt-key-rotator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "jwt-key-rotator.labels" -}}
helm.sh/chart: {{ include "jwt-key-rotator.chart" . }}
{{ include "jwt-key-rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator's pods (never change them: a Deployment's selector is
immutable).
*/}}
{{- define "jwt-key-rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwt-key-rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "jwt-key-rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jwt-key-rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "jwt-key-rotator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The RBAC rules of the operator, exactly the API access its code uses and nothing more.
Used by the ClusterRole (rbac.mode=cluster) and by each per-namespace Role
(rbac.mode=namespaced). The lease rules live in a Role of their own (leader-election.yaml).
*/}}
{{- define "jwt-key-rotator.rules" -}}
# The JwtKeySets: watched, and patched for their finalizers (deletionPolicy: Retain, copies).
- apiGroups: ["jwt.keyrotator.dev"]
  resources: ["jwtkeysets"]
  verbs: ["list", "watch", "patch"]
# Their status (conditions, keys, next rotation); read fresh (get) before status.history is
# appended to, so that no entry written since the watch cache's copy is lost.
- apiGroups: ["jwt.keyrotator.dev"]
  resources: ["jwtkeysets/status"]
  verbs: ["get", "patch"]
# The Secret (private keys and manifest) of each set.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update"]
# The ConfigMap (JWKS) of each set, and its copies in verifier namespaces (spec.jwks.copies),
# deleted where they are no longer wanted.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# Events about each set (rotations, invalid specs, conflicts).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
A CEL expression, for the admission policy: the object named by the argument ("object" or
"oldObject") is one of the operator's own, labelled as its own or owned by a JwtKeySet.
*/}}
{{- define "jwt-key-rotator.isOwn" -}}
{{- $o := . -}}
>-
        {{ $o }} != null && (
        (has({{ $o }}.metadata.labels) && 'app.kubernetes.io/managed-by' in {{ $o }}.metadata.labels
        && {{ $o }}.metadata.labels['app.kubernetes.io/managed-by'] == 'jwt-key-rotator')
        || (has({{ $o }}.metadata.ownerReferences) && {{ $o }}.metadata.ownerReferences.exists(r,
        r.apiVersion.startsWith('jwt.keyrotator.dev/') && r.kind == 'JwtKeySet')))
{{- end }}
