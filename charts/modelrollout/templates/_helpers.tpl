{{- define "modelrollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the controller needs in a namespace it watches (derived from controller/kube and controller/routers). */}}
{{- define "modelrollout.watchRules" -}}
# Watch ModelRollouts and patch their finalizers (kube/rollouts.py: list, watch, get, set_finalizers).
- apiGroups: ["modelrollout.dev"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch", "patch"]
# Write the status through /status with the resourceVersion it read (kube/rollouts.py: replace_status).
- apiGroups: ["modelrollout.dev"]
  resources: ["modelrollouts/status"]
  verbs: ["update"]
# One Event per transition, bumped instead of duplicated (kube/events.py).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "get", "patch"]
# Read and set the weights of the HTTPRoute a rollout names (routers/gatewayapi.py). Never create or delete.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
{{- end -}}

{{- define "modelrollout.validate" -}}
{{- if and .Values.namespaced (not .Values.watchNamespaces) -}}
{{- fail "namespaced=true needs watchNamespaces: the namespaces whose ModelRollouts the controller may act on" -}}
{{- end -}}
{{- if and .Values.namespaced .Values.secrets.cluster -}}
{{- fail "secrets.cluster=true contradicts namespaced=true (each watched namespace's Role already grants get on Secrets)" -}}
{{- end -}}
{{- end -}}
