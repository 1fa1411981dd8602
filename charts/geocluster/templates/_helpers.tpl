{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names and labels.
*/}}
{{- define "geocluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless it already
contains it. Used for every object this chart creates.
*/}}
{{- define "geocluster.fullname" -}}
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
Chart label value: name-version.
*/}}
{{- define "geocluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the stable subset of the labels, used by the Deployment selector and Services.
*/}}
{{- define "geocluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "geocluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The one helper for labels: every object of this chart carries exactly these.
*/}}
{{- define "geocluster.labels" -}}
helm.sh/chart: {{ include "geocluster.chart" . }}
{{ include "geocluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: geocluster
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "geocluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "geocluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference; a digest wins over a tag.
*/}}
{{- define "geocluster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Namespaces the operator watches when watch.scope=namespace (default: the release namespace).
Returns a YAML list.
*/}}
{{- define "geocluster.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toYaml (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toYaml (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
RBAC rules on namespaced resources, shared by the ClusterRole (scope=cluster) and each Role
(scope=namespace). Exactly the verbs the operator uses; see tests/shipping/test_chart.py.
*/}}
{{- define "geocluster.namespacedRules" -}}
- apiGroups: ["geo.geocluster.io"]
  resources: ["geoclusters", "geoclusters/status"]
  verbs: ["get", "list", "watch", "patch", "update"]
# children set blockOwnerDeletion; OwnerReferencesPermissionEnforcement (OpenShift) checks this
- apiGroups: ["geo.geocluster.io"]
  resources: ["geoclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# patch: the role label (leader/follower) the Services select by; delete: repairs, updates
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# get: the password of spec.server.authSecretRef or of the generated <name>-auth, so probes can
# AUTH, and ca.crt of spec.tls's Secret (tls.crt/tls.key too with clientAuth required), so
# probes verify the members; create: the generated <name>-auth, once. No list/watch/update/delete: a Secret's value
# is never rewritten, and owner references garbage-collect the generated one.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# spec.tls.issuerRef: the operator creates the cert-manager Certificate <name>-tls (owned by the
# GeoCluster) and deletes it when issuerRef goes. Harmless without cert-manager installed.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}

{{/*
RBAC rules on cluster-scoped resources kopf reads in every mode: namespaces and CRDs.
*/}}
{{- define "geocluster.clusterReadRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
