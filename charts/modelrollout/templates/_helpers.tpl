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
# Watch ModelRollouts into the controller's cache and patch their finalizers (kube/rollouts.py: list,
# watch, get after a 409, set_finalizers).
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
{{- if .Values.routers.gatewayAPI }}
# traffic.gatewayAPI: read and set the weights of the HTTPRoute a rollout names (routers/gatewayapi.py);
# list and watch feed the controller's cache of routes (kube/objects.py), get reads one it lacks.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.routers.istio }}
# traffic.istio: read and set the two destination weights of a VirtualService (routers/istio.py).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.routers.kserve }}
# traffic.kserve: read and set storageUri and canaryTrafficPercent of an InferenceService (routers/kserve.py).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.routers.llmInferenceService }}
# traffic.llmInferenceService: read and set spec.router.route.weight of two LLMInferenceServices, and list
# the others of the namespace (a third member of the group with a weight takes traffic) (routers/llmisvc.py).
- apiGroups: ["serving.kserve.io"]
  resources: ["llminferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.routers.replicas }}
# traffic.replicas: read two Deployments and set their replicas and two annotations (routers/replicas.py),
# and list the namespace's HPAs (one on either Deployment would fight the router: a condition, no write).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end -}}

{{- define "modelrollout.validate" -}}
{{- if lt (int .Values.shards) 1 -}}
{{- fail "shards must be a whole number, at least 1" -}}
{{- end -}}
{{- if and .Values.namespaced (not .Values.watchNamespaces) -}}
{{- fail "namespaced=true needs watchNamespaces: the namespaces whose ModelRollouts the controller may act on" -}}
{{- end -}}
{{- if and .Values.namespaced .Values.secrets.cluster -}}
{{- fail "secrets.cluster=true contradicts namespaced=true (each watched namespace's Role already grants get on Secrets)" -}}
{{- end -}}
{{- end -}}
