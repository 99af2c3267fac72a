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

{{/* "true" when a pullSecrets entry is minted by the injector rather than copied. */}}
{{- define "pullsecret-injector.minted" -}}
{{- if or .gcpServiceAccountKey .gcpServiceAccountKeySecret (hasKey . "gcpWorkloadIdentity") .ecr .credentialProvider -}}
true
{{- end -}}
{{- end }}

{{/* The Secret that holds a pullSecrets entry's service-account key, made by the chart. */}}
{{- define "pullsecret-injector.keySecretName" -}}
{{- printf "%s-key" . -}}
{{- end }}

{{/* The config's `secrets:` map: the credential source of every minted pullSecrets entry. */}}
{{- define "pullsecret-injector.credentialSources" -}}
{{- $sources := dict }}
{{- range $name, $spec := .Values.pullSecrets }}
{{- if $spec.gcpServiceAccountKey }}
{{- $_ := set $sources $name (dict "gcpServiceAccountKey" (dict "secret" (include "pullsecret-injector.keySecretName" $name) "key" "key.json")) }}
{{- else if $spec.gcpServiceAccountKeySecret }}
{{- $_ := set $sources $name (dict "gcpServiceAccountKey" (dict "secret" $spec.gcpServiceAccountKeySecret.name "key" ($spec.gcpServiceAccountKeySecret.key | default "key.json"))) }}
{{- else if hasKey $spec "gcpWorkloadIdentity" }}
{{- $_ := set $sources $name (dict "gcpWorkloadIdentity" ($spec.gcpWorkloadIdentity | default dict)) }}
{{- else if $spec.ecr }}
{{- $_ := set $sources $name (dict "ecr" $spec.ecr) }}
{{- else if $spec.credentialProvider }}
{{- $_ := set $sources $name (dict "credentialProvider" $spec.credentialProvider) }}
{{- end }}
{{- end }}
{{- $sources | toJson }}
{{- end }}

{{/* Every secret name the rules use, once, in order. */}}
{{- define "pullsecret-injector.secretNames" -}}
{{- $names := list }}
{{- range .Values.registries }}
{{- $names = append $names .secret }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/*
The image matchCondition's CEL expression, from .Values.registries. It mirrors
src/match_condition.rs to the letter (`pullsecret-injector render match-conditions` prints
the same), and tests/chart.rs holds the two together: change both or neither.
*/}}
{{- define "pullsecret-injector.imageMatchExpression" -}}
{{- $alts := list -}}
{{- range .Values.registries -}}
{{- /* Normalize the rule as Rule::new does: scheme, trailing '/', /v1/ and /v2/, port. */ -}}
{{- $m := trim (toString .match) -}}
{{- if contains "://" $m }}{{ $m = (splitn "://" 2 $m)._1 }}{{ end -}}
{{- $hostPort := $m -}}
{{- $path := "" -}}
{{- if contains "/" $m }}{{ $parts := splitn "/" 2 $m }}{{ $hostPort = $parts._0 }}{{ $path = $parts._1 }}{{ end -}}
{{- $path = regexReplaceAll "/+$" $path "" -}}
{{- range list "v1" "v2" -}}
{{- if or (eq $path .) (hasPrefix (printf "%s/" .) $path) }}{{ $path = regexReplaceAll "^/+" (trimPrefix . $path) "" }}{{ end -}}
{{- end -}}
{{- $bracket := regexFind "^\\[[^\\]]*\\]" $hostPort -}}
{{- $rest := trimPrefix $bracket $hostPort -}}
{{- $portPart := regexFind ":[^:]*$" $rest -}}
{{- $host := printf "%s%s" $bracket (trimSuffix $portPart $rest) -}}
{{- $port := trimPrefix ":" $portPart -}}
{{- if and (hasPrefix "[" $host) (hasSuffix "]" $host) }}{{ $host = trimSuffix "]" (trimPrefix "[" $host) }}{{ end -}}
{{- if eq $host "index.docker.io" }}{{ $host = "docker.io" }}{{ end -}}
{{- $path = replace "." "\\." $path -}}
{{- /* The alternatives, as rule_alternatives builds them. */ -}}
{{- $labels := splitList "." $host -}}
{{- $hubShaped := and (eq $portPart "") (eq (len $labels) 2) -}}
{{- $dockerHub := and $hubShaped (eq $host "docker.io") -}}
{{- $globbed := false -}}
{{- $hostRe := list -}}
{{- range $labels -}}
{{- if regexMatch "[*?\\[\\\\]" . }}{{ $globbed = true }}{{ $hostRe = append $hostRe "[A-Za-z0-9-]*" }}{{ else }}{{ $hostRe = append $hostRe . }}{{ end -}}
{{- end -}}
{{- $ruleAlts := list -}}
{{- if not $dockerHub -}}
{{- $alt := join "\\." $hostRe -}}
{{- if contains ":" $alt }}{{ $alt = printf "\\[%s\\]" $alt }}{{ end -}}
{{- if $portPart }}{{ $alt = printf "%s:%s" $alt $port }}{{ end -}}
{{- $alt = printf "%s/" $alt -}}
{{- if $path }}{{ $alt = printf "%s%s(?:[/:@]|$)" $alt $path }}{{ end -}}
{{- $ruleAlts = append $ruleAlts $alt -}}
{{- end -}}
{{- if or $dockerHub (and $hubShaped $globbed) -}}
{{- if not $path -}}
{{- $ruleAlts = concat $ruleAlts (list "(?:index\\.)?docker\\.io/" "[^./:A-Z]+/" "[^/]+$") -}}
{{- else -}}
{{- $hub := "(?:(?:index\\.)?docker\\.io/)?" -}}
{{- $ruleAlts = append $ruleAlts (printf "%s%s(?:[/:@]|$)" $hub $path) -}}
{{- if eq $path "library" -}}
{{- $ruleAlts = append $ruleAlts (printf "%s[^/]+$" $hub) -}}
{{- else if and (hasPrefix "library/" $path) (not (contains "/" (trimPrefix "library/" $path))) -}}
{{- $ruleAlts = append $ruleAlts (printf "%s%s(?:[:@]|$)" $hub (trimPrefix "library/" $path)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $ruleAlts }}{{ if not (has . $alts) }}{{ $alts = append $alts . }}{{ end }}{{ end -}}
{{- end -}}
{{- if not $alts -}}
false
{{- else -}}
{{- $re := printf "^(?:%s)" (join "|" $alts) -}}
{{- /* Cost, as ImageCondition sizes it: 900000 target, 1000 base, 53 per image character
     budget (526 characters), a quarter per regex character, 20 per image. */ -}}
{{- $perImage := add (mul 53 (div (add (len $re) 3) 4)) 20 -}}
{{- $maxImages := div (sub 900000 1000) $perImage -}}
{{- $expr := printf "has(object.spec) && (%s > %d" "(has(object.spec.containers) ? size(object.spec.containers) : 0) + (has(object.spec.initContainers) ? size(object.spec.initContainers) : 0) + (has(object.spec.ephemeralContainers) ? size(object.spec.ephemeralContainers) : 0) + (has(object.spec.volumes) ? size(object.spec.volumes) : 0)" $maxImages -}}
{{- range list "containers" "initContainers" "ephemeralContainers" -}}
{{- $expr = printf "%s || has(object.spec.%s) && object.spec.%s.exists(c, has(c.image) && size(c.image) <= 526 && c.image.matches(r'%s'))" $expr . . $re -}}
{{- end -}}
{{- $expr = printf "%s || has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.image) && has(v.image.reference) && size(v.image.reference) <= 526 && v.image.reference.matches(r'%s')))" $expr $re -}}
{{- if gt (len $expr) 64000 }}true{{ else }}{{ $expr }}{{ end -}}
{{- end -}}
{{- end -}}
