{{- /* Labels of an object: fedra.labels (dict "v" .Values "component" "server"|"client"|"" "client" NAME|"") */ -}}
{{- define "fedra.labels" -}}
app.kubernetes.io/name: fedra
app.kubernetes.io/instance: {{ .v.name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- if .client }}
fedra.dev/client: {{ .client }}
{{- end }}
{{- end -}}

{{- define "fedra.namespace" -}}
{{ .Values.namespace | default .Release.Namespace }}
{{- end -}}

{{- define "fedra.serverHost" -}}
{{ .Values.serverHost | default (printf "%s-server" .Values.name) }}
{{- end -}}

{{- /* The pod's securityContext: the image's user 10001, default seccomp profile */ -}}
{{- define "fedra.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fedra.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "fedra.tlsRequired" -}}
{{- if not .Values.insecure -}}
{{- $hint := "is required unless insecure: write the values with `fedra deploy k8s JOB.toml --certs DIR --values FILE`" -}}
{{- $_ := required (printf "tls.ca %s" $hint) .Values.tls.ca -}}
{{- $_ := required (printf "tls.serverCert %s" $hint) .Values.tls.serverCert -}}
{{- $_ := required (printf "tls.serverKey %s" $hint) .Values.tls.serverKey -}}
{{- end -}}
{{- end -}}
