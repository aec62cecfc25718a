{{- define "xin.name" -}}{{ printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "xin.labels" -}}
app.kubernetes.io/name: xin-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "xin.selector" -}}
app.kubernetes.io/name: xin-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
