{{/* The environment: dev, staging or prod. */}}
{{- define "env.name" -}}
{{- required "environment is required (dev, staging or prod)" .Values.environment -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "env.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: shop-env
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: platform
app.kubernetes.io/part-of: shop
app.kubernetes.io/managed-by: {{ .Release.Service }}
shop.dev/environment: {{ include "env.name" . }}
{{- end -}}

{{/* One ExternalSecret: the Secret `<secretPrefix><name>`, each key from the property of the
     same name of the secret manager's entry `<secretPrefix><name>`. */}}
{{- define "env.externalSecret" -}}
{{- $ := .root -}}
{{- $name := printf "%s%s" $.Values.secretPrefix .secret.name -}}
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{ $name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "env.labels" $ | nindent 4 }}
  annotations:
    # Before the services that mount it.
    argocd.argoproj.io/sync-wave: "-4"
spec:
  refreshInterval: {{ $.Values.secretStore.refreshInterval }}
  secretStoreRef:
    name: {{ $.Values.secretStore.name }}
    kind: SecretStore
  target:
    name: {{ $name }}
    creationPolicy: Owner
    deletionPolicy: Retain
    {{- with .secret.type }}
    template:
      type: {{ . }}
    {{- end }}
  data:
    {{- range .secret.keys }}
    - secretKey: {{ . }}
      remoteRef:
        key: {{ $name }}
        property: {{ . }}
    {{- end }}
{{- end -}}
