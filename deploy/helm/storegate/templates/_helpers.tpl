{{- define "storegate.labels" -}}
app.kubernetes.io/name: storegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "storegate.selector" -}}
app.kubernetes.io/name: storegate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
