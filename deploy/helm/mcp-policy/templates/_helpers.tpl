{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "mcp-policy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name for every object of this chart. */}}
{{- define "mcp-policy.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mcp-policy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-policy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcp-policy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mcp-policy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mcp-policy.jwksMountPath" -}}
/etc/policy-sidecar-jwks
{{- end }}

{{/*
The sidecar's TOML (SPEC section 9). Strings and arrays are written as JSON, which is valid
TOML for both. Exactly one key source is rendered: discovery_url, else jwks_url, else jwks_file.
*/}}
{{- define "mcp-policy.sidecarToml" -}}
{{- $auth := .Values.auth -}}
[listen]
address = {{ printf "0.0.0.0:%v" .Values.sidecar.listenPort | toJson }}

[upstream]
url = {{ printf "http://127.0.0.1:%v%s" .Values.upstream.port .Values.upstream.path | toJson }}

[admin]
address = {{ printf "0.0.0.0:%v" .Values.sidecar.adminPort | toJson }}

[gateway]
id = {{ .Values.gateway.id | toJson }}
target = {{ .Values.gateway.target | toJson }}

[policy]
engine = {{ .Values.policy.engine | toJson }}
mode = {{ .Values.policy.mode | toJson }}
paths = ["/etc/policy-sidecar"]
schema = {{ .Values.policy.schema | toJson }}
validation = {{ .Values.policy.validation | toJson }}
deny_style = {{ .Values.policy.denyStyle | toJson }}
exception_level = {{ .Values.policy.exceptionLevel | toJson }}

[auth]
mode = {{ $auth.mode | toJson }}
{{- if eq $auth.mode "jwt" }}
issuer = {{ required "auth.issuer is required when auth.mode is jwt" $auth.issuer | toJson }}
{{- if $auth.discoveryUrl }}
discovery_url = {{ $auth.discoveryUrl | toJson }}
{{- else if $auth.jwksUrl }}
jwks_url = {{ $auth.jwksUrl | toJson }}
{{- else if $auth.jwksFile.configMap }}
jwks_file = {{ printf "%s/%s" (include "mcp-policy.jwksMountPath" .) $auth.jwksFile.key | toJson }}
{{- else }}
{{- fail "auth.mode jwt needs auth.discoveryUrl, auth.jwksUrl or auth.jwksFile.configMap" }}
{{- end }}
audiences = {{ $auth.audiences | toJson }}
allowed_clients = {{ $auth.allowedClients | toJson }}
allowed_scopes = {{ $auth.allowedScopes | toJson }}
{{- end }}
{{- end }}

{{/* True when the JWKS ConfigMap is the key source and so has to be mounted. */}}
{{- define "mcp-policy.mountJwks" -}}
{{- $auth := .Values.auth -}}
{{- if and (eq $auth.mode "jwt") (not $auth.discoveryUrl) (not $auth.jwksUrl) $auth.jwksFile.configMap -}}
true
{{- end }}
{{- end }}
