{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "pullsecret-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, unless it already contains the chart name. */}}
{{- define "pullsecret-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pullsecret-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Recommended labels. */}}
{{- define "pullsecret-injector.labels" -}}
helm.sh/chart: {{ include "pullsecret-injector.chart" . }}
{{ include "pullsecret-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pullsecret-injector
{{- end }}

{{- define "pullsecret-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullsecret-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullsecret-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pullsecret-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pullsecret-injector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the serving certificate. */}}
{{- define "pullsecret-injector.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.name is required with certs.mode=secret" .Values.certs.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "pullsecret-injector.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the serving certificate must carry: the Service, as the API server calls it. */}}
{{- define "pullsecret-injector.dnsNames" -}}
{{- $svc := include "pullsecret-injector.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
certs.mode=helm: the CA and serving pair, made once per render and reused from the existing
Secret on upgrade (lookup), so an upgrade never breaks admission. Returns YAML with ca, cert
and key in PEM. Memoized in .Values so every template sees the same pair.
*/}}
{{- define "pullsecret-injector.helmCerts" -}}
{{- if not (hasKey .Values "_generatedCerts") }}
{{- $name := include "pullsecret-injector.tlsSecretName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- $pair := dict }}
{{- if and $existing $existing.data (hasKey $existing.data "ca.crt") (hasKey $existing.data "tls.crt") (hasKey $existing.data "tls.key") }}
{{- $pair = dict "ca" (index $existing.data "ca.crt" | b64dec) "cert" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) }}
{{- else }}
{{- $days := int .Values.certs.helm.validityDays }}
{{- $ca := genCAWithKey "pullsecret-injector-ca" $days (genPrivateKey "ecdsa") }}
{{- $dns := include "pullsecret-injector.dnsNames" . | fromJsonArray }}
{{- $cert := genSignedCertWithKey (index $dns 2) nil $dns $days $ca (genPrivateKey "ecdsa") }}
{{- $pair = dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key }}
{{- end }}
{{- $_ := set .Values "_generatedCerts" $pair }}
{{- end }}
{{- toYaml .Values._generatedCerts }}
{{- end }}

{{/* The caBundle of the webhook (base64 PEM), for the modes that know it at render time. */}}
{{- define "pullsecret-injector.caBundle" -}}
{{- if eq .Values.certs.mode "helm" }}
{{- (include "pullsecret-injector.helmCerts" . | fromYaml).ca | b64enc }}
{{- else if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.caBundle is required with certs.mode=secret" .Values.certs.secret.caBundle }}
{{- end }}
{{- end }}

{{/*
The registries a pull secret's credentials are for: its `servers`, or else the `match` of
every rule that names it.
*/}}
{{- define "pullsecret-injector.servers" -}}
{{- $servers := .spec.servers | default list }}
{{- if not $servers }}
{{- range .root.Values.registries }}
{{- if eq .secret $.name }}
{{- $servers = append $servers .match }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $servers }}
{{- fail (printf "pullSecrets.%s: no `servers` and no rule in `registries` uses it" .name) }}
{{- end }}
{{- $servers | uniq | toJson }}
{{- end }}

{{/* Every secret name the rules use, once, in order. */}}
{{- define "pullsecret-injector.secretNames" -}}
{{- $names := list }}
{{- range .Values.registries }}
{{- $names = append $names .secret }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}
