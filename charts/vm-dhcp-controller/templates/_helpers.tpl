{{/*
Names are fixed by docs/interfaces.md: the binaries default to them and the
webhook configurations, Service and Secret must agree across objects.
*/}}
{{- define "vm-dhcp.controllerName" -}}vm-dhcp-controller{{- end -}}
{{- define "vm-dhcp.webhookName" -}}vm-dhcp-webhook{{- end -}}
{{- define "vm-dhcp.webhookSecretName" -}}vm-dhcp-webhook-tls{{- end -}}
{{- define "vm-dhcp.agentValuesPath" -}}/etc/vm-dhcp/agent-values.yaml{{- end -}}
{{- define "vm-dhcp.webhookCertDir" -}}/var/run/vm-dhcp-webhook/certs{{- end -}}

{{/* Labels every object carries. */}}
{{- define "vm-dhcp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: vm-dhcp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "name" "vm-dhcp-controller"). */}}
{{- define "vm-dhcp.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Full image reference: (dict "root" $ "image" .Values.controller.image). */}}
{{- define "vm-dhcp.image" -}}
{{- $repo := .image.repository -}}
{{- with .root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Rules of a generated role (controller-gen output in generated/<component>/role.yaml,
from the kubebuilder RBAC markers): (dict "root" $ "component" "controller" "kind" "ClusterRole").
Prints the rules of every document of that kind as a YAML list; a missing file
fails the render, so the chart never installs without the RBAC its binaries need.
*/}}
{{- define "vm-dhcp.generatedRules" -}}
{{- $path := printf "generated/%s/role.yaml" .component -}}
{{- $content := .root.Files.Get $path -}}
{{- if not $content -}}
{{- fail (printf "%s is missing: run 'make generate', which writes it from the +kubebuilder:rbac markers of ./%s/... (controller-gen ignores markers attached to a type's or function's doc comment: separate them by a blank line)" $path .component) -}}
{{- end -}}
{{- $rules := list -}}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" $content -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if hasKey $obj "Error" -}}
{{- fail (printf "%s: %s" $path $obj.Error) -}}
{{- end -}}
{{- if eq (default "" $obj.kind) $.kind -}}
{{- $rules = concat $rules (default list $obj.rules) -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
