{{- define "clusterpedia.labels" -}}
app.kubernetes.io/name: clusterpedia
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clusterpedia.selector" -}}
app.kubernetes.io/name: clusterpedia
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "clusterpedia.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "clusterpedia.database" -}}
{{- $type := .Values.storage.type -}}
{{- if not (has $type (list "sqlite" "postgres" "mysql")) -}}
{{- fail (printf "storage.type must be sqlite, postgres or mysql, not %q" $type) -}}
{{- end -}}
{{- if and (eq $type "sqlite") (gt (int .Values.replicas) 1) -}}
{{- fail "storage.type sqlite has one writer: replicas must be 1 (use postgres or mysql for more)" -}}
{{- end -}}
{{- if and (ne $type "sqlite") (not .Values.storage.host) -}}
{{- fail (printf "storage.host is required for storage.type %s" $type) -}}
{{- end -}}
{{- $type -}}
{{- end -}}

{{- define "clusterpedia.passwordSecret" -}}
{{- .Values.storage.password.existingSecret | default (printf "%s-db" .Release.Name) -}}
{{- end -}}
