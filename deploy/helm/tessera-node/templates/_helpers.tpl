{{/* The release's resource name: RELEASE-tessera-node, or RELEASE when it already says so. */}}
{{- define "tessera-node.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera-node.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tessera-node.labels" -}}
{{ include "tessera-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
tessera.io/node-id: {{ .Values.node.id | quote }}
{{- end -}}

{{/* The node's id, refused when missing or not a positive whole number. */}}
{{- define "tessera-node.id" -}}
{{- $id := required "node.id: this custodian's id in the consortium manifest" .Values.node.id -}}
{{- if not (regexMatch "^[1-9][0-9]*$" (toString $id)) -}}
{{- fail (printf "node.id: a positive whole number, not %v" $id) -}}
{{- end -}}
{{- $id -}}
{{- end -}}
