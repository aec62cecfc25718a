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
{{- /* A map of labels as `k=v,k2=v2`, the form the operator's *_POD_LABELS settings take. */ -}}
{{- define "xin.labelList" -}}
{{- $l := list -}}
{{- range $k, $v := . -}}{{- $l = append $l (printf "%s=%s" $k $v) -}}{{- end -}}
{{- join "," $l -}}
{{- end -}}
