{{- define "ferrolb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ferrolb.labels" -}}
app.kubernetes.io/part-of: ferrolb
{{- end -}}
