{{/* Templates here stay within the Go-template subset of test/helpers/helm-render.ts. */}}
{{- define "bioner-router.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bioner-router.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.Version | quote }}
app.kubernetes.io/managed-by: Helm
{{- end -}}

{{- define "bioner-router.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bioner-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bioner-router.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Seconds: drain time + margin; fails when drainTimeoutMs is missing. */}}
{{- define "bioner-router.gracePeriod" -}}
{{- $drainMs := required "config.shutdown.drainTimeoutMs is required (terminationGracePeriodSeconds is derived from it)" .Values.config.shutdown.drainTimeoutMs -}}
{{- add (div (add $drainMs 999) 1000) .Values.terminationGraceMarginSeconds -}}
{{- end -}}

{{- define "bioner-router.metricsPort" -}}
{{- default 9464 .Values.config.telemetry.port -}}
{{- end -}}
