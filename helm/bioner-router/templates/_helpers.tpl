{{/* Object names: <release>-<chart>, cut to the 63 characters of a DNS label. */}}
{{- define "bioner-router.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* helm.sh/chart: name-version, `+` is not allowed in a label value. */}}
{{- define "bioner-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bioner-router.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bioner-router.labels" -}}
helm.sh/chart: {{ include "bioner-router.chart" . }}
{{ include "bioner-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of the `helm test` pod: deliberately NOT the selector labels, so the Service, PDB and NetworkPolicy never pick it up. */}}
{{- define "bioner-router.testLabels" -}}
helm.sh/chart: {{ include "bioner-router.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bioner-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bioner-router.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository:tag@digest (the runtime pulls by digest; the tag stays for people). Call with an image dict. */}}
{{- define "bioner-router.imageRef" -}}
{{- $ref := printf "%s:%s" .repository .tag -}}
{{- with .digest -}}
{{- $ref = printf "%s@%s" $ref . -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Seconds: drain time + margin; fails when drainTimeoutMs is missing. */}}
{{- define "bioner-router.gracePeriod" -}}
{{- $drainMs := required "config.shutdown.drainTimeoutMs is required (terminationGracePeriodSeconds is derived from it)" .Values.config.shutdown.drainTimeoutMs -}}
{{- add (div (add $drainMs 999) 1000) .Values.terminationGraceMarginSeconds -}}
{{- end -}}

{{- define "bioner-router.metricsPort" -}}
{{- default 9464 .Values.config.telemetry.port -}}
{{- end -}}

{{/* One probe from .Values.probes.<name>: exactly one handler, or the render fails naming the key. Call with (list "startup" $probe). */}}
{{- define "bioner-router.probe" -}}
{{- $name := index . 0 -}}
{{- $probe := index . 1 -}}
{{- $handlers := list -}}
{{- range list "httpGet" "exec" "tcpSocket" "grpc" -}}
{{- if hasKey $probe . -}}
{{- $handlers = append $handlers . -}}
{{- end -}}
{{- end -}}
{{- if ne (len $handlers) 1 -}}
{{- fail (printf "probes.%s needs exactly one handler (httpGet, exec, tcpSocket or grpc), has %d %v: set the default httpGet to null to replace it" $name (len $handlers) $handlers) -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end -}}

{{/*
Name of the KEDA TriggerAuthentication the ScaledObject uses: keda.authenticationRef, else the chart's
own when KEDA needs credentials (SASL, or a TLS CA / client certificate), else empty.
*/}}
{{- define "bioner-router.kedaAuthName" -}}
{{- if .Values.keda.authenticationRef -}}
{{- .Values.keda.authenticationRef -}}
{{- else if or .Values.kafkaSasl.enabled (and .Values.kafkaTls.enabled (or .Values.kafkaTls.caSecret .Values.kafkaTls.clientSecret)) -}}
{{- printf "%s-kafka" (include "bioner-router.fullname" .) -}}
{{- end -}}
{{- end -}}
