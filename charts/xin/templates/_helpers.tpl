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

{{/*
An image reference from {repository, tag, digest}: repository:tag, the tag defaulting to the
chart's appVersion, and @digest appended when given (the digest then decides what is pulled).
*/}}
{{- define "xin.image" -}}
{{- $i := .image -}}
{{- $ref := printf "%s:%s" $i.repository (toString (default .chart.AppVersion $i.tag)) -}}
{{- with $i.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .) -}}
{{- fail (printf "image digest %q for %s must be sha256:<64 hex digits>" . $i.repository) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref . -}}
{{- end -}}
{{- $ref -}}
{{- end -}}
