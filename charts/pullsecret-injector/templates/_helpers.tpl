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
One `registries` rule normalized as Rule::new does (scheme, trailing '/', /v1/ and /v2/, the
port, IPv6 brackets, index.docker.io), as JSON: host, portPart (`:port` or empty), port, and
path (regex-escaped). Shared by the image matchCondition and the admission policy.
*/}}
{{- define "pullsecret-injector.normalizedRule" -}}
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
{{- dict "host" $host "portPart" $portPart "port" $port "path" $path | toJson -}}
{{- end -}}

{{/*
The image matchCondition's CEL expression, from .Values.registries. It mirrors
src/match_condition.rs to the letter (`pullsecret-injector render match-conditions` prints
the same), and tests/chart.rs holds the two together: change both or neither.
*/}}
{{- define "pullsecret-injector.imageMatchExpression" -}}
{{- $alts := list -}}
{{- range .Values.registries -}}
{{- $r := include "pullsecret-injector.normalizedRule" . | fromJson -}}
{{- $host := $r.host }}{{ $portPart := $r.portPart }}{{ $port := $r.port }}{{ $path := $r.path -}}
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
{{- /* An IPv6 host is one label, in brackets: a one-label rule may match it. */ -}}
{{- if eq (len $labels) 1 -}}
{{- if contains ":" $alt }}{{ $alt = printf "\\[%s\\]" $alt -}}
{{- else if $globbed }}{{ $alt = "(?:[A-Za-z0-9-]*|\\[[0-9A-Fa-f:]*\\])" -}}
{{- else if regexMatch "^[0-9A-Fa-f]+$" $alt }}{{ $alt = printf "(?:%s|\\[%s\\])" $alt $alt }}{{ end -}}
{{- end -}}
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

{{/*
admission.mode=policy: the MutatingAdmissionPolicy's expressions, from .Values.registries.
They mirror src/admission_policy.rs to the letter (`pullsecret-injector render
admission-policy` prints the same), and tests/chart.rs holds the two together: change both or
neither.
*/}}

{{/*
One host label, a Go `path.Match` glob as Rule::new reads it (`*`, `?`, `[...]` with `^`,
ranges and `\` escapes), rewritten as Glob::to_regex does over the characters a label of a
valid image can hold: a DNS label's, and an IPv6 literal's. Returns JSON {dns, v6}, each the
RE2 pattern, or empty when the label needs a character outside those (no valid label is an
empty pattern). A label that is not a valid glob fails the render, as the binary refuses it.
Takes dict "label" and "match" (for the message).
*/}}
{{- define "pullsecret-injector.labelRegexes" -}}
{{- $bad := dict -}}
{{- $tokens := list -}}
{{- /* States: n (between tokens), esc (after `\`), open (after `[`), lo (a class member or
     its end), loEsc, afterLo (`-` makes a range, anything else ends the member), hi (the
     range's end), hiEsc. */ -}}
{{- $st := "n" }}{{ $neg := false }}{{ $ranges := list }}{{ $lo := "" -}}
{{- range $c := splitList "" .label -}}
{{- $done := false -}}
{{- if eq $st "open" -}}
{{- $st = "lo" -}}
{{- if eq $c "^" }}{{ $neg = true }}{{ $done = true }}{{ end -}}
{{- end -}}
{{- if and (not $done) (eq $st "afterLo") -}}
{{- if eq $c "-" }}{{ $st = "hi" }}{{ $done = true -}}
{{- else }}{{ $ranges = append $ranges (list $lo $lo) }}{{ $st = "lo" }}{{ end -}}
{{- end -}}
{{- if $done -}}
{{- else if eq $st "n" -}}
{{- if eq $c "*" }}{{ $tokens = append $tokens (dict "t" "star") -}}
{{- else if eq $c "?" }}{{ $tokens = append $tokens (dict "t" "any") -}}
{{- else if eq $c "\\" }}{{ $st = "esc" -}}
{{- else if eq $c "[" }}{{ $st = "open" }}{{ $neg = false }}{{ $ranges = list -}}
{{- else if regexMatch "^[A-Za-z0-9:-]$" $c }}{{ $tokens = append $tokens (dict "t" "char" "c" $c) -}}
{{- else }}{{ $_ := set $bad "reason" "hosts have only letters, digits, '-' and glob characters" }}{{ end -}}
{{- else if eq $st "esc" -}}
{{- $tokens = append $tokens (dict "t" "char" "c" $c) }}{{ $st = "n" -}}
{{- else if eq $st "lo" -}}
{{- if and (eq $c "]") $ranges }}{{ $tokens = append $tokens (dict "t" "class" "neg" $neg "ranges" $ranges) }}{{ $st = "n" -}}
{{- else if or (eq $c "-") (eq $c "]") }}{{ $_ := set $bad "reason" "bad character class" -}}
{{- else if eq $c "\\" }}{{ $st = "loEsc" -}}
{{- else }}{{ $lo = $c }}{{ $st = "afterLo" }}{{ end -}}
{{- else if eq $st "loEsc" -}}
{{- $lo = $c }}{{ $st = "afterLo" -}}
{{- else if and (eq $st "hi") (or (eq $c "-") (eq $c "]")) -}}
{{- $_ := set $bad "reason" "bad range in character class" -}}
{{- else if and (eq $st "hi") (eq $c "\\") -}}
{{- $st = "hiEsc" -}}
{{- else -}}
{{- /* hi or hiEsc: the range is complete. */ -}}
{{- if lt $c $lo }}{{ $_ := set $bad "reason" "range in character class is reversed" }}{{ end -}}
{{- $ranges = append $ranges (list $lo $c) }}{{ $st = "lo" -}}
{{- end -}}
{{- if $bad.reason }}{{ fail (printf "registries: host label %q of %q is not a valid pattern: %s" $.label $.match $bad.reason) }}{{ end -}}
{{- end -}}
{{- $ends := dict "n" "" "esc" "ends with '\\'" "hi" "bad range in character class" "hiEsc" "bad range in character class" "loEsc" "bad character class" -}}
{{- $end := hasKey $ends $st | ternary (get $ends $st) "'[' is not closed" -}}
{{- if $end }}{{ fail (printf "registries: host label %q of %q is not a valid pattern: %s" .label .match $end) }}{{ end -}}
{{- if not .label }}{{ fail (printf "registries: host of %q has an empty label" .match) }}{{ end -}}
{{- /* Each character set, listed in full, and the class that stands for all of it. */ -}}
{{- $sets := list (list "dns" "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-" "[A-Za-z0-9\\-]") (list "v6" "0123456789ABCDEFabcdef:" "[0-9A-Fa-f:]") -}}
{{- $out := dict -}}
{{- range $set := $sets -}}
{{- $chars := index $set 1 }}{{ $all := index $set 2 -}}
{{- $re := "" }}{{ $ok := true -}}
{{- range $tok := $tokens -}}
{{- if eq $tok.t "char" -}}
{{- if contains $tok.c $chars }}{{ $re = printf "%s%s" $re $tok.c }}{{ else }}{{ $ok = false }}{{ end -}}
{{- else if eq $tok.t "any" -}}
{{- $re = printf "%s%s" $re $all -}}
{{- else if eq $tok.t "star" -}}
{{- $re = printf "%s%s*" $re $all -}}
{{- else -}}
{{- /* class_of: every character of the set the class admits, `-` escaped. */ -}}
{{- $class := "" -}}
{{- range $m := splitList "" $chars -}}
{{- $in := false -}}
{{- range $tok.ranges }}{{ if and (le (index . 0) $m) (le $m (index . 1)) }}{{ $in = true }}{{ end }}{{ end -}}
{{- if ne $in $tok.neg }}{{ $class = printf "%s%s%s" $class (eq $m "-" | ternary "\\" "") $m }}{{ end -}}
{{- end -}}
{{- if $class }}{{ $re = printf "%s[%s]" $re $class }}{{ else }}{{ $ok = false }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out (index $set 0) ($ok | ternary $re "") -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/*
The exact pattern of the normalized names (`registry/path`) a rule matches, as rule_regex and
Rule::host_regex build it; empty when no valid image can match it.
*/}}
{{- define "pullsecret-injector.ruleRegex" -}}
{{- $r := include "pullsecret-injector.normalizedRule" . | fromJson -}}
{{- $labels := splitList "." $r.host -}}
{{- $dns := list }}{{ $v6 := "" -}}
{{- range $labels -}}
{{- $l := include "pullsecret-injector.labelRegexes" (dict "label" . "match" (toString $.match)) | fromJson -}}
{{- $dns = append $dns $l.dns -}}
{{- /* An IPv6 host has no '.': it is one label. */ -}}
{{- if and $l.v6 (eq (len $labels) 1) }}{{ $v6 = printf "\\[%s\\]" $l.v6 }}{{ end -}}
{{- end -}}
{{- $dnsRe := has "" $dns | ternary "" (join "\\." $dns) -}}
{{- $host := $dnsRe | default $v6 -}}
{{- if and $dnsRe $v6 }}{{ $host = printf "(?:%s|%s)" $dnsRe $v6 }}{{ end -}}
{{- if $host -}}
^{{ $host }}{{ if $r.portPart }}:{{ $r.port }}{{ end }}/{{ if $r.path }}{{ $r.path }}(?:/|$){{ end }}
{{- end -}}
{{- end -}}

{{/*
The policy's `variables`, as JSON [{name, expression}], sized as AdmissionPolicy::new sizes
them: each expression's cost, by cel-go's runtime model, stays under 900000 (a tenth below the
API server's per-expression limit) for any Pod with at most max_images images.
*/}}
{{- define "pullsecret-injector.policyVariables" -}}
{{- $domainRe := `^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$` -}}
{{- $component := "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*" -}}
{{- $tagAndDigest := "(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?$" -}}
{{- $rules := .Values.registries | default list -}}
{{- $regexes := list }}{{ $secrets := list }}{{ $ruleSecrets := list -}}
{{- range $rules -}}
{{- $regexes = append $regexes (include "pullsecret-injector.ruleRegex" .) -}}
{{- if not (has .secret $secrets) }}{{ $secrets = append $secrets .secret }}{{ end -}}
{{- end -}}
{{- /* Each rule's secret as its place in `secrets`: the order check compares integers. */ -}}
{{- range $rules -}}
{{- $rule := . -}}
{{- range $i, $s := $secrets }}{{ if eq $s $rule.secret }}{{ $ruleSecrets = append $ruleSecrets (toString $i) }}{{ end }}{{ end -}}
{{- end -}}
{{- /* The cost model, in the integers Rust uses: matches on n characters with a pattern of
     m costs ceil((1 + n) / 10) * ceil(m / 4); a string operation over the longest image (526
     characters) 53; a comprehension step over images 50, over rules 16, with a secret name
     compared 30. refs: two small matches (patterns of 14 and 7) and seven string operations,
     twice; names: the two grammar checks and four splits, twice; hits: each rule's matches
     on a name of at most 255 characters. Whatever the images: the rules' order check, and
     each secret looked up among 64 pull secrets and 257 recorded ones. */ -}}
{{- $refsCost := add (mul 53 (div (add 14 3) 4)) (mul 7 2 53) (mul 53 (div (add 7 3) 4)) 50 -}}
{{- $remainder := printf "^%s(?:/%s)*%s" $component $component $tagAndDigest -}}
{{- $remainderLen := len $remainder -}}
{{- $namesCost := add (mul 53 (div (add (len $domainRe) 3) 4)) (mul 53 (div (add $remainderLen 3) 4)) (mul 4 2 53) 50 -}}
{{- $hitsCost := 0 -}}
{{- range $regexes }}{{ if . }}{{ $hitsCost = add $hitsCost (mul 26 (div (add (len .) 3) 4)) 16 }}{{ end }}{{ end -}}
{{- $hitsCost = max $hitsCost 1 -}}
{{- $orderCost := add (mul (len $rules) 16) (mul (len $rules) (len $rules) 16) -}}
{{- $presentCost := add (mul (len $secrets) (add 64 256 1) 30) (mul 512 30) -}}
{{- if gt (max $orderCost $presentCost) 900000 -}}
{{- fail (printf "admission.mode=policy: %d rules and %d secrets are more than a MutatingAdmissionPolicy can check within the API server's cost limit; use admission.mode=webhook" (len $rules) (len $secrets)) -}}
{{- end -}}
{{- $maxImages := min (div 900000 $refsCost) (div 900000 $namesCost) (div 900000 $hitsCost) -}}
{{- $vars := list -}}
{{- $lists := list "initContainers" "containers" "ephemeralContainers" "volumes" -}}
{{- $count := list }}{{ $images := list -}}
{{- range $lists -}}
{{- $count = append $count (printf "(has(object.spec.%s) ? size(object.spec.%s) : 0)" . .) -}}
{{- if eq . "volumes" -}}
{{- $images = append $images "(has(object.spec.volumes) ? object.spec.volumes.filter(v, has(v.image) && has(v.image.reference)).map(v, v.image.reference) : [])" -}}
{{- else -}}
{{- $images = append $images (printf "(has(object.spec.%s) ? object.spec.%s.map(c, has(c.image) ? c.image : '') : [])" . .) -}}
{{- end -}}
{{- end -}}
{{- $vars = append $vars (dict "name" "imageCount" "expression" (printf "has(object.spec) ? %s : 0" (join " + " $count))) -}}
{{- $annotations := "object.metadata.annotations" }}{{ $key := "pullsecret-injector.io/injected" -}}
{{- $vars = append $vars (dict "name" "examined" "expression" (printf "has(object.spec) && variables.imageCount <= %d && (!has(object.spec.imagePullSecrets) || size(object.spec.imagePullSecrets) <= 64) && (!has(%s) || !('%s' in %s) || size(%s['%s']) <= 512)" $maxImages $annotations $key $annotations $annotations $key)) -}}
{{- $vars = append $vars (dict "name" "images" "expression" (printf "!variables.examined ? [] : %s" (join " + " $images))) -}}
{{- /* distribution's splitDockerDomain, on `i`: [registry, remainder]. */ -}}
{{- $first := "i.split('/')[0]" -}}
{{- $rest := printf "i.substring(size(%s) + 1)" $first -}}
{{- $split := printf "size(i) > 526 || i.matches('^[a-f0-9]{64}$') ? ['', ''] : !i.contains('/') ? ['docker.io', 'library/' + i] : %s in ['docker.io', 'index.docker.io'] ? ['docker.io', %s.contains('/') ? %s : 'library/' + %s] : %s == 'localhost' || %s.matches('[.:A-Z]') ? [%s, %s] : ['docker.io', i]" $first $rest $rest $rest $first $first $first $rest -}}
{{- $vars = append $vars (dict "name" "refs" "expression" (printf "variables.images.map(i, %s)" $split)) -}}
{{- /* The remainder's path: before the tag or digest. Names are at most 255 characters. */ -}}
{{- $path := "r[1].split('@')[0].split(':')[0]" -}}
{{- $name := printf "r[0].matches(r'%s') && r[1].matches(r'%s') && size(r[0]) + size(%s) <= 254 ? r[0] + '/' + %s : ''" $domainRe $remainder $path $path -}}
{{- $vars = append $vars (dict "name" "names" "expression" (printf "variables.refs.map(r, %s)" $name)) -}}
{{- $quoted := list }}{{ range $secrets }}{{ $quoted = append $quoted (printf "'%s'" .) }}{{ end -}}
{{- $vars = append $vars (dict "name" "secrets" "expression" (printf "[%s]" (join ", " $quoted))) -}}
{{- $vars = append $vars (dict "name" "ruleSecrets" "expression" (printf "[%s]" (join ", " $ruleSecrets))) -}}
{{- $hits := list -}}
{{- range $regexes }}{{ $hits = append $hits (ternary (printf "variables.names.exists(n, n.matches(r'%s'))" .) "false" (ne . "")) }}{{ end -}}
{{- $vars = append $vars (dict "name" "hits" "expression" (printf "[%s]" (join ", " $hits))) -}}
{{- /* A secret takes the place of the first rule naming it that an image hit. */ -}}
{{- $hitRules := "[]" -}}
{{- if $rules -}}
{{- $hitRules = printf "[%s].filter(k, variables.hits[k])" (join ", " (until (len $rules))) -}}
{{- end -}}
{{- $vars = append $vars (dict "name" "hitRules" "expression" $hitRules) -}}
{{- $vars = append $vars (dict "name" "wanted" "expression" "variables.hitRules.filter(k, !variables.hitRules.exists(j, j < k && variables.ruleSecrets[j] == variables.ruleSecrets[k])).map(k, variables.secrets[variables.ruleSecrets[k]])") -}}
{{- $vars = append $vars (dict "name" "existing" "expression" "has(object.spec.imagePullSecrets) ? object.spec.imagePullSecrets.filter(e, has(e.name)).map(e, e.name) : []") -}}
{{- $vars = append $vars (dict "name" "add" "expression" "variables.wanted.filter(s, !(s in variables.existing))") -}}
{{- $vars = append $vars (dict "name" "recorded" "expression" (printf "has(%s) && '%s' in %s ? %s['%s'].split(',').filter(s, s != '') : []" $annotations $key $annotations $annotations $key)) -}}
{{- $vars = append $vars (dict "name" "injected" "expression" "(variables.recorded + variables.add.filter(s, !(s in variables.recorded))).join(',')") -}}
{{- $vars | toJson -}}
{{- end -}}
