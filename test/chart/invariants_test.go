package chart

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// agentValues mirrors the controller's --agent-values file (controller.AgentValues):
// decoding strictly into it proves the chart writes only fields the controller reads.
type agentValues struct {
	Resources         *corev1.ResourceRequirements `json:"resources,omitempty"`
	Tolerations       []corev1.Toleration          `json:"tolerations,omitempty"`
	PriorityClassName string                       `json:"priorityClassName,omitempty"`
	ImagePullPolicy   corev1.PullPolicy            `json:"imagePullPolicy,omitempty"`
}

var binaryOfContainer = map[string]string{"controller": "vm-dhcp-controller", "webhook": "vm-dhcp-webhook"}

// nonDefaultValues turns on every option and changes every setting a user
// is likely to change.
func nonDefaultValues() map[string]any {
	return map[string]any{
		"image": map[string]any{"registry": "registry.example/mirror/", "pullPolicy": "Always", "pullSecrets": []any{"pull-secret"}},
		"controller": map[string]any{
			"replicas":          3,
			"image":             map[string]any{"repository": "acme/ctl", "tag": "v9.9.9"},
			"metricsPort":       9090,
			"healthPort":        9091,
			"resources":         map[string]any{"requests": map[string]any{"cpu": "250m", "memory": "300Mi"}, "limits": map[string]any{"memory": "1Gi"}},
			"nodeSelector":      map[string]any{"node-role.kubernetes.io/control-plane": "true"},
			"tolerations":       []any{map[string]any{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}},
			"affinity":          map[string]any{"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{map[string]any{"weight": 100, "podAffinityTerm": map[string]any{"topologyKey": "kubernetes.io/hostname", "labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "vm-dhcp-controller"}}}}}}},
			"priorityClassName": "system-cluster-critical",
			"podAnnotations":    map[string]any{"example.com/a": "b"},
			"podLabels":         map[string]any{"team": "net"},
		},
		"webhook": map[string]any{
			"replicas":            4,
			"port":                10443,
			"healthPort":          10081,
			"serviceCIDR":         "10.43.0.0/16",
			"podCIDR":             "10.42.0.0/16",
			"timeoutSeconds":      5,
			"certManager":         map[string]any{"enabled": true},
			"nodeSelector":        map[string]any{"kubernetes.io/os": "linux"},
			"tolerations":         []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoExecute"}},
			"podDisruptionBudget": map[string]any{"enabled": true, "maxUnavailable": "50%"},
		},
		"agent": map[string]any{
			"image":             map[string]any{"repository": "acme/agent", "tag": "v1.2.3", "pullPolicy": "Always"},
			"serviceAccount":    map[string]any{"name": "dhcp-agents"},
			"resources":         map[string]any{"requests": map[string]any{"cpu": "20m", "memory": "40Mi"}, "limits": map[string]any{"cpu": "1", "memory": "200Mi"}},
			"tolerations":       []any{map[string]any{"key": "harvesterhci.io/network", "operator": "Exists"}},
			"priorityClassName": "vm-dhcp-agents",
		},
		"metrics":          map[string]any{"serviceMonitor": map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "prom"}}},
		"grafanaDashboard": map[string]any{"namespace": "monitoring", "labels": map[string]any{"grafana_dashboard": "yes"}},
	}
}

func TestDefaultValuesInvariants(t *testing.T) {
	r := mustRender(t, nil)
	checkInvariants(t, r)

	c := loadChart(t, chartDir()).Metadata.AppVersion
	ctl := container(t, r, "vm-dhcp-controller", "controller")
	wh := container(t, r, "vm-dhcp-webhook", "webhook")
	if ctl.Image != "vm-dhcp/vm-dhcp-controller:"+c || wh.Image != "vm-dhcp/vm-dhcp-webhook:"+c {
		t.Errorf("default images %s, %s do not use appVersion %s", ctl.Image, wh.Image, c)
	}
	ctlArgs := args(t, ctl)
	if ctlArgs["agent-image"] != "vm-dhcp/vm-dhcp-agent:"+c {
		t.Errorf("--agent-image=%s, want the agent image at appVersion %s", ctlArgs["agent-image"], c)
	}
	if ctlArgs["agent-service-account"] != "vm-dhcp-agent" {
		t.Errorf("--agent-service-account=%s", ctlArgs["agent-service-account"])
	}
	if a := args(t, wh); a["cert-mode"] != "self" {
		t.Errorf("default --cert-mode=%s, want self", a["cert-mode"])
	}
	for _, kind := range []string{"ServiceMonitor", "Certificate", "Issuer"} {
		if objs := r.all(kind); len(objs) > 0 {
			t.Errorf("default install renders %s objects, which need CRDs the cluster may not have", kind)
		}
	}
	for _, kind := range []string{"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
		o := r.get(t, kind, "vm-dhcp-webhook")
		if _, ok := o.GetAnnotations()["cert-manager.io/inject-ca-from"]; ok {
			t.Errorf("%s has the cert-manager annotation without certManager.enabled", kind)
		}
	}
	if len(r.all("PodDisruptionBudget")) != 2 {
		t.Errorf("want a PodDisruptionBudget for the controller and the webhook, got %v", r.names())
	}
	if !strings.Contains(r.Notes, "kind: IPPool") || !strings.Contains(r.Notes, "kubectl -n default get ippools example") {
		t.Errorf("NOTES do not show how to create and check a first IPPool:\n%s", r.Notes)
	}
	av := renderedAgentValues(t, r)
	if av.ImagePullPolicy != corev1.PullIfNotPresent || av.Resources == nil || av.Resources.Requests.Memory().String() != "32Mi" {
		t.Errorf("default agent values %+v", av)
	}
}

func TestNonDefaultValues(t *testing.T) {
	r := mustRender(t, nonDefaultValues())
	checkInvariants(t, r)

	d := typed[appsv1.Deployment](t, r.get(t, "Deployment", "vm-dhcp-controller"))
	if *d.Spec.Replicas != 3 {
		t.Errorf("controller replicas %d, want 3", *d.Spec.Replicas)
	}
	pod := d.Spec.Template
	ctl := pod.Spec.Containers[0]
	if ctl.Image != "registry.example/mirror/acme/ctl:v9.9.9" || ctl.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("controller image %s %s", ctl.Image, ctl.ImagePullPolicy)
	}
	if !ctl.Resources.Requests.Cpu().Equal(resource.MustParse("250m")) || !ctl.Resources.Limits.Memory().Equal(resource.MustParse("1Gi")) {
		t.Errorf("controller resources %v", ctl.Resources)
	}
	if pod.Spec.NodeSelector["node-role.kubernetes.io/control-plane"] != "true" || len(pod.Spec.Tolerations) != 1 ||
		pod.Spec.Affinity == nil || pod.Spec.Affinity.PodAntiAffinity == nil || pod.Spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("controller scheduling not from values: %+v", pod.Spec)
	}
	if pod.Annotations["example.com/a"] != "b" || pod.Labels["team"] != "net" {
		t.Errorf("controller pod metadata %v %v", pod.Annotations, pod.Labels)
	}
	a := args(t, &ctl)
	if a["metrics-bind-address"] != ":9090" || a["health-probe-bind-address"] != ":9091" {
		t.Errorf("controller addresses %v", a)
	}
	if a["agent-image"] != "registry.example/mirror/acme/agent:v1.2.3" || a["agent-service-account"] != "dhcp-agents" {
		t.Errorf("agent settings not passed to the controller: %v", a)
	}
	r.get(t, "ServiceAccount", "dhcp-agents")
	for _, sa := range r.all("ServiceAccount") {
		s := typed[corev1.ServiceAccount](t, sa)
		if len(s.ImagePullSecrets) != 1 || s.ImagePullSecrets[0].Name != "pull-secret" {
			t.Errorf("service account %s has pull secrets %v", s.Name, s.ImagePullSecrets)
		}
	}
	want := agentValues{
		Resources: &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("40Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("200Mi")},
		},
		Tolerations:       []corev1.Toleration{{Key: "harvesterhci.io/network", Operator: corev1.TolerationOpExists}},
		PriorityClassName: "vm-dhcp-agents",
		ImagePullPolicy:   corev1.PullAlways,
	}
	if got := renderedAgentValues(t, r); !reflect.DeepEqual(normalize(t, got), normalize(t, want)) {
		t.Errorf("agent values file:\n got %+v\nwant %+v", got, want)
	}

	wd := typed[appsv1.Deployment](t, r.get(t, "Deployment", "vm-dhcp-webhook"))
	if *wd.Spec.Replicas != 4 {
		t.Errorf("webhook replicas %d", *wd.Spec.Replicas)
	}
	wa := args(t, &wd.Spec.Template.Spec.Containers[0])
	if wa["cert-mode"] != "external" || wa["service-cidr"] != "10.43.0.0/16" || wa["pod-cidr"] != "10.42.0.0/16" || wa["port"] != "10443" {
		t.Errorf("webhook args %v", wa)
	}
	// cert-manager: the Certificate writes the Secret the webhook mounts, for the
	// Service's DNS name, and both configurations take their CA from it.
	cert := r.get(t, "Certificate", "vm-dhcp-webhook")
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	vol := wd.Spec.Template.Spec.Volumes[0]
	if vol.Secret == nil || vol.Secret.SecretName != secret || secret != wa["secret-name"] {
		t.Errorf("webhook mounts %+v, Certificate writes %q, --secret-name=%s", vol, secret, wa["secret-name"])
	}
	mount := wd.Spec.Template.Spec.Containers[0].VolumeMounts[0]
	if mount.MountPath != wa["cert-dir"] {
		t.Errorf("certificate mounted at %s, --cert-dir=%s", mount.MountPath, wa["cert-dir"])
	}
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if !slices.Contains(dns, "vm-dhcp-webhook."+releaseNamespace+".svc") {
		t.Errorf("certificate DNS names %v miss the Service", dns)
	}
	issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	r.get(t, "Issuer", issuer)
	for _, kind := range []string{"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
		o := r.get(t, kind, "vm-dhcp-webhook")
		if got := o.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != releaseNamespace+"/vm-dhcp-webhook" {
			t.Errorf("%s inject-ca-from %q", kind, got)
		}
	}
	wpdb := typed[policyv1.PodDisruptionBudget](t, r.get(t, "PodDisruptionBudget", "vm-dhcp-webhook"))
	if wpdb.Spec.MaxUnavailable.String() != "50%" {
		t.Errorf("webhook PDB maxUnavailable %v", wpdb.Spec.MaxUnavailable)
	}

	monitors := r.all("ServiceMonitor")
	if len(monitors) != 3 {
		t.Fatalf("want ServiceMonitors for controller, webhook and agents, got %v", r.names())
	}
	for _, m := range monitors {
		if m.GetLabels()["release"] != "prom" {
			t.Errorf("ServiceMonitor %s labels %v", m.GetName(), m.GetLabels())
		}
		checkServiceMonitorSelectsAMetricsService(t, r, m)
	}
	dash := r.get(t, "ConfigMap", "vm-dhcp-dashboard")
	if dash.GetNamespace() != "monitoring" || dash.GetLabels()["grafana_dashboard"] != "yes" {
		t.Errorf("dashboard ConfigMap %s/%s %v", dash.GetNamespace(), dash.GetName(), dash.GetLabels())
	}
}

func TestOptionalObjectsCanBeTurnedOff(t *testing.T) {
	r := mustRender(t, map[string]any{
		"controller":       map[string]any{"podDisruptionBudget": map[string]any{"enabled": false}},
		"webhook":          map[string]any{"podDisruptionBudget": map[string]any{"enabled": false}},
		"grafanaDashboard": map[string]any{"enabled": false},
	})
	for _, kind := range []string{"PodDisruptionBudget", "ServiceMonitor"} {
		if len(r.all(kind)) > 0 {
			t.Errorf("%s rendered although disabled", kind)
		}
	}
	for _, cm := range r.all("ConfigMap") {
		if cm.GetName() == "vm-dhcp-dashboard" {
			t.Error("dashboard rendered although disabled")
		}
	}
	checkInvariants(t, r)
}

// checkInvariants holds for every values combination.
func checkInvariants(t *testing.T, r *rendered) {
	t.Helper()
	flags := documentedFlags(t)
	for _, o := range r.Objects {
		if ns := o.GetNamespace(); o.GetKind() != "ConfigMap" && ns != "" && ns != releaseNamespace {
			t.Errorf("%s %s is in namespace %s, not the release's", o.GetKind(), o.GetName(), ns)
		}
	}
	for _, dep := range r.all("Deployment") {
		d := typed[appsv1.Deployment](t, dep)
		sel, err := metav1LabelSelector(d)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s selector does not match its pods: %v", d.Name, err)
		}
		ps := d.Spec.Template.Spec
		if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
			t.Errorf("Deployment %s does not run as non-root", d.Name)
		}
		if ps.ServiceAccountName != d.Name {
			t.Errorf("Deployment %s runs as service account %q", d.Name, ps.ServiceAccountName)
		}
		r.get(t, "ServiceAccount", ps.ServiceAccountName)
		for i := range ps.Containers {
			c := &ps.Containers[i]
			bin := binaryOfContainer[c.Name]
			if bin == "" {
				t.Errorf("Deployment %s has an unknown container %s", d.Name, c.Name)
				continue
			}
			if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
				c.SecurityContext.Capabilities == nil || !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") || len(c.SecurityContext.Capabilities.Add) > 0 {
				t.Errorf("%s container %s may escalate or keeps capabilities: %+v", d.Name, c.Name, c.SecurityContext)
			}
			a := args(t, c)
			for name := range a {
				if !flags[bin][name] {
					t.Errorf("%s is started with --%s, which docs/interfaces.md does not list for %s", c.Name, name, bin)
				}
			}
			checkProbesAndPorts(t, c, a)
			checkPDB(t, r, d)
		}
	}
	checkAgentRBAC(t, r)
	checkControllerAndWebhookRBAC(t, r)
	checkWebhookWiring(t, r)
	checkAgentValuesMount(t, r)
}

// checkProbesAndPorts: the probes hit the port of --health-probe-bind-address,
// the named ports are the ones the flags open.
func checkProbesAndPorts(t *testing.T, c *corev1.Container, a map[string]string) {
	t.Helper()
	healthPort := addrPort(t, a["health-probe-bind-address"])
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s has no HTTP %s probe", c.Name, name)
			continue
		}
		if got := resolvePort(t, c, p.HTTPGet.Port); got != healthPort {
			t.Errorf("%s %s probe on port %d, --health-probe-bind-address=%s", c.Name, name, got, a["health-probe-bind-address"])
		}
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if p.HTTPGet.Path != want {
			t.Errorf("%s %s probe path %s, want %s", c.Name, name, p.HTTPGet.Path, want)
		}
	}
	if got := resolvePort(t, c, intstr.FromString("metrics")); got != addrPort(t, a["metrics-bind-address"]) {
		t.Errorf("%s metrics port %d, --metrics-bind-address=%s", c.Name, got, a["metrics-bind-address"])
	}
	if c.Name == "webhook" {
		if got := resolvePort(t, c, intstr.FromString("https")); strconv.Itoa(got) != a["port"] {
			t.Errorf("webhook https port %d, --port=%s", got, a["port"])
		}
	}
}

func checkPDB(t *testing.T, r *rendered, d *appsv1.Deployment) {
	t.Helper()
	for _, o := range r.all("PodDisruptionBudget") {
		pdb := typed[policyv1.PodDisruptionBudget](t, o)
		if pdb.Name != d.Name {
			continue
		}
		sel := labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels)
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PDB %s does not select the pods of Deployment %s", pdb.Name, d.Name)
		}
		// maxUnavailable (not minAvailable) so that a single replica never blocks a node drain.
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MinAvailable != nil {
			t.Errorf("PDB %s should set maxUnavailable only", pdb.Name)
		}
	}
}

// rolesBoundTo returns the rules every binding gives the service account, with
// whether they come from a ClusterRole bound cluster-wide.
func rolesBoundTo(t *testing.T, r *rendered, sa string) (cluster, namespaced []rbacv1.PolicyRule) {
	t.Helper()
	bound := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == releaseNamespace {
				return true
			}
		}
		return false
	}
	for _, o := range r.all("ClusterRoleBinding") {
		b := typed[rbacv1.ClusterRoleBinding](t, o)
		if bound(b.Subjects) {
			cluster = append(cluster, typed[rbacv1.ClusterRole](t, r.get(t, "ClusterRole", b.RoleRef.Name)).Rules...)
		}
	}
	for _, o := range r.all("RoleBinding") {
		b := typed[rbacv1.RoleBinding](t, o)
		if !bound(b.Subjects) {
			continue
		}
		if b.RoleRef.Kind == "ClusterRole" {
			namespaced = append(namespaced, typed[rbacv1.ClusterRole](t, r.get(t, "ClusterRole", b.RoleRef.Name)).Rules...)
		} else {
			namespaced = append(namespaced, typed[rbacv1.Role](t, r.get(t, "Role", b.RoleRef.Name)).Rules...)
		}
	}
	return cluster, namespaced
}

// checkAgentRBAC: agents read IPPools and nothing else; no writes, no secrets.
func checkAgentRBAC(t *testing.T, r *rendered) {
	t.Helper()
	ctl := args(t, container(t, r, "vm-dhcp-controller", "controller"))
	sa := ctl["agent-service-account"]
	r.get(t, "ServiceAccount", sa)
	cluster, namespaced := rolesBoundTo(t, r, sa)
	all := append(cluster, namespaced...)
	if len(all) == 0 {
		t.Errorf("the agents' service account %s has no role: they cannot read their IPPool", sa)
	}
	readsPools := false
	for _, rule := range all {
		for _, v := range rule.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("agents may %s %v: they must be read-only", v, rule.Resources)
			}
		}
		for _, g := range rule.APIGroups {
			if g != "network.harvesterhci.io" {
				t.Errorf("agents have rights in API group %q", g)
			}
		}
		for _, res := range rule.Resources {
			if res != "ippools" {
				t.Errorf("agents have rights on %s; only ippools", res)
			}
			readsPools = true
		}
		if len(rule.NonResourceURLs) > 0 || len(rule.ResourceNames) > 0 {
			t.Errorf("agents have an unexpected rule %+v", rule)
		}
	}
	if !readsPools {
		t.Error("agents cannot read IPPools")
	}
}

// checkControllerAndWebhookRBAC: pods, configmaps, secrets and leases are
// written only in the release namespace; the rules are the generated ones.
func checkControllerAndWebhookRBAC(t *testing.T, r *rendered) {
	t.Helper()
	for _, sa := range []string{"vm-dhcp-controller", "vm-dhcp-webhook"} {
		cluster, namespaced := rolesBoundTo(t, r, sa)
		if len(cluster)+len(namespaced) == 0 {
			t.Errorf("%s has no RBAC at all", sa)
		}
		for _, rule := range cluster {
			for _, res := range rule.Resources {
				if res == "*" || slices.Contains(rule.APIGroups, "*") || slices.Contains(rule.Verbs, "*") {
					t.Errorf("%s has a wildcard cluster rule %+v", sa, rule)
				}
				if res == "secrets" {
					t.Errorf("%s may use secrets cluster-wide: %v", sa, rule.Verbs)
				}
				if (res == "pods" || res == "configmaps" || res == "leases") && writes(rule.Verbs) {
					t.Errorf("%s may %v %s cluster-wide; only in its namespace", sa, rule.Verbs, res)
				}
			}
		}
	}
	for _, o := range append(r.all("Role"), r.all("RoleBinding")...) {
		if o.GetNamespace() != releaseNamespace {
			t.Errorf("%s %s is in %q, not the release namespace", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
}

func writes(verbs []string) bool {
	for _, v := range verbs {
		if v != "get" && v != "list" && v != "watch" {
			return true
		}
	}
	return false
}

// checkWebhookWiring: the Service, both configurations and the webhook's
// flags agree on names, namespace, ports and paths.
func checkWebhookWiring(t *testing.T, r *rendered) {
	t.Helper()
	wh := container(t, r, "vm-dhcp-webhook", "webhook")
	a := args(t, wh)
	svc := typed[corev1.Service](t, r.get(t, "Service", a["service-name"]))
	if a["namespace"] != "$(POD_NAMESPACE)" || !envFromNamespace(wh, "POD_NAMESPACE") {
		t.Errorf("webhook --namespace=%s is not its own namespace", a["namespace"])
	}
	dep := typed[appsv1.Deployment](t, r.get(t, "Deployment", "vm-dhcp-webhook"))
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("Service %s does not select the webhook pods", svc.Name)
	}
	var https *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == 443 {
			https = &svc.Spec.Ports[i]
		}
	}
	if https == nil {
		t.Fatalf("Service %s has no port 443", svc.Name)
	}
	if got := resolvePort(t, wh, https.TargetPort); strconv.Itoa(got) != a["port"] {
		t.Errorf("Service port 443 goes to %d, the webhook listens on --port=%s", got, a["port"])
	}
	wantPaths := map[string]bool{"/mutate-ippool": false, "/validate-ippool": false, "/validate-vmnetcfg": false}
	type hook struct {
		kind string
		cc   admissionv1.WebhookClientConfig
		se   *admissionv1.SideEffectClass
		fp   *admissionv1.FailurePolicyType
		rule []admissionv1.RuleWithOperations
	}
	var hooks []hook
	v := typed[admissionv1.ValidatingWebhookConfiguration](t, r.get(t, "ValidatingWebhookConfiguration", a["webhook-config-name"]))
	for _, w := range v.Webhooks {
		hooks = append(hooks, hook{"Validating", w.ClientConfig, w.SideEffects, w.FailurePolicy, w.Rules})
	}
	m := typed[admissionv1.MutatingWebhookConfiguration](t, r.get(t, "MutatingWebhookConfiguration", a["webhook-config-name"]))
	for _, w := range m.Webhooks {
		hooks = append(hooks, hook{"Mutating", w.ClientConfig, w.SideEffects, w.FailurePolicy, w.Rules})
	}
	for _, h := range hooks {
		s := h.cc.Service
		if s == nil || s.Name != svc.Name || s.Namespace != releaseNamespace || s.Port == nil || *s.Port != 443 || s.Path == nil {
			t.Errorf("%s webhook calls %+v, not Service %s/%s:443", h.kind, s, releaseNamespace, svc.Name)
			continue
		}
		if _, ok := wantPaths[*s.Path]; !ok {
			t.Errorf("%s webhook path %s is not one the webhook serves", h.kind, *s.Path)
		}
		wantPaths[*s.Path] = true
		if (h.kind == "Mutating") != strings.HasPrefix(*s.Path, "/mutate-") {
			t.Errorf("path %s is in a %s configuration", *s.Path, h.kind)
		}
		if len(h.cc.CABundle) > 0 {
			t.Errorf("%s webhook %s ships a caBundle; it is patched in or injected", h.kind, *s.Path)
		}
		if h.se == nil || *h.se != admissionv1.SideEffectClassNone {
			t.Errorf("%s webhook %s sideEffects %v", h.kind, *s.Path, h.se)
		}
		if h.kind == "Validating" && (h.fp == nil || *h.fp != admissionv1.Fail) {
			t.Errorf("validating webhook %s failurePolicy %v, want Fail", *s.Path, h.fp)
		}
		for _, rule := range h.rule {
			want := map[string]string{"/mutate-ippool": "ippools", "/validate-ippool": "ippools", "/validate-vmnetcfg": "virtualmachinenetworkconfigs"}[*s.Path]
			if !reflect.DeepEqual(rule.APIGroups, []string{"network.harvesterhci.io"}) || !reflect.DeepEqual(rule.Resources, []string{want}) {
				t.Errorf("webhook %s rule %+v is not scoped to %s", *s.Path, rule.Rule, want)
			}
		}
	}
	for p, seen := range wantPaths {
		if !seen {
			t.Errorf("no webhook calls %s", p)
		}
	}
}

// checkAgentValuesMount: --agent-values names a file the controller can read,
// from the chart's ConfigMap.
func checkAgentValuesMount(t *testing.T, r *rendered) {
	t.Helper()
	d := typed[appsv1.Deployment](t, r.get(t, "Deployment", "vm-dhcp-controller"))
	c := &d.Spec.Template.Spec.Containers[0]
	path := args(t, c)["agent-values"]
	if path == "" {
		t.Fatal("the controller gets no --agent-values")
	}
	var vol string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			vol = m.Name
		}
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == vol && v.ConfigMap != nil {
			cm := typed[corev1.ConfigMap](t, r.get(t, "ConfigMap", v.ConfigMap.Name))
			key := path[strings.LastIndex(path, "/")+1:]
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("ConfigMap %s has no key %s for --agent-values=%s", cm.Name, key, path)
			}
			return
		}
	}
	t.Errorf("--agent-values=%s is not on a mounted ConfigMap", path)
}

func renderedAgentValues(t *testing.T, r *rendered) agentValues {
	t.Helper()
	cm := typed[corev1.ConfigMap](t, r.get(t, "ConfigMap", "vm-dhcp-agent-values"))
	var v agentValues
	if err := yaml.UnmarshalStrict([]byte(cm.Data["agent-values.yaml"]), &v); err != nil {
		t.Fatalf("agent values file does not decode like the controller reads it: %v\n%s", err, cm.Data["agent-values.yaml"])
	}
	return v
}

// normalize round-trips through YAML so that equal quantities compare equal.
func normalize(t *testing.T, v agentValues) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkServiceMonitorSelectsAMetricsService(t *testing.T, r *rendered, m interface {
	GetName() string
	UnstructuredContent() map[string]any
}) {
	t.Helper()
	sel, _, _ := unstructured.NestedStringMap(m.UnstructuredContent(), "spec", "selector", "matchLabels")
	found := false
	for _, o := range r.all("Service") {
		if !labels.SelectorFromSet(sel).Matches(labels.Set(o.GetLabels())) {
			continue
		}
		for _, p := range typed[corev1.Service](t, o).Spec.Ports {
			if p.Name == "metrics" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("ServiceMonitor %s selects no Service with a metrics port", m.GetName())
	}
}

func container(t testing.TB, r *rendered, deployment, name string) *corev1.Container {
	t.Helper()
	d := typed[appsv1.Deployment](t, r.get(t, "Deployment", deployment))
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Deployment %s has no container %s", deployment, name)
	return nil
}

func args(t testing.TB, c *corev1.Container) map[string]string {
	t.Helper()
	if len(c.Command) > 0 {
		t.Errorf("container %s overrides the image's entrypoint: %v", c.Name, c.Command)
	}
	a, err := splitArgs(c.Args)
	if err != nil {
		t.Fatalf("container %s: %v", c.Name, err)
	}
	return a
}

func envFromNamespace(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace" {
			return true
		}
	}
	return false
}

func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Errorf("container %s has no port named %s", c.Name, p.StrVal)
	return -1
}

func metav1LabelSelector(d *appsv1.Deployment) (labels.Selector, error) {
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		return nil, fmt.Errorf("no matchLabels")
	}
	return labels.SelectorFromSet(d.Spec.Selector.MatchLabels), nil
}

// TestAgentValuesMatchTheController: the keys the chart writes into the
// --agent-values file are fields of the controller's AgentValues type (read
// from its source, so the check follows the controller), which it decodes
// strictly: an unknown key would stop the controller at start.
func TestAgentValuesMatchTheController(t *testing.T) {
	src := filepath.Join(repoRoot(), "controller", "agent.go")
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", src, err)
	}
	fields := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "AgentValues" {
			return true
		}
		for _, fld := range ts.Type.(*ast.StructType).Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag := reflect.StructTag(strings.Trim(fld.Tag.Value, "`")).Get("json")
			fields[strings.Split(tag, ",")[0]] = true
		}
		return false
	})
	if len(fields) == 0 {
		t.Fatalf("no AgentValues type with json fields in %s", src)
	}
	r := mustRender(t, nonDefaultValues())
	cm := typed[corev1.ConfigMap](t, r.get(t, "ConfigMap", "vm-dhcp-agent-values"))
	var written map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["agent-values.yaml"]), &written); err != nil {
		t.Fatal(err)
	}
	if len(written) != len(fields) {
		t.Errorf("the chart writes %d agent settings, the controller reads %d (%v)", len(written), len(fields), fields)
	}
	for k := range written {
		if !fields[k] {
			t.Errorf("the chart writes agent setting %q, which controller.AgentValues does not have (%v)", k, fields)
		}
	}
}

// TestChartFlagsAreDefinedByTheBinaries: beyond docs/interfaces.md, every
// flag the chart passes is registered in the binary's main package, so the
// container does not exit with "flag provided but not defined".
func TestChartFlagsAreDefinedByTheBinaries(t *testing.T) {
	defined := regexp.MustCompile(`flag\.(?:[A-Z][A-Za-z0-9]*)\((?:&[^,]+,\s*)?"([a-z][a-z0-9-]*)"`)
	for _, values := range []map[string]any{nil, nonDefaultValues()} {
		r := mustRender(t, values)
		for name, bin := range binaryOfContainer {
			src := string(readFile(t, filepath.Join("cmd", bin, "main.go")))
			flags := map[string]bool{}
			for _, m := range defined.FindAllStringSubmatch(src, -1) {
				flags[m[1]] = true
			}
			if len(flags) == 0 {
				t.Fatalf("found no flag definitions in cmd/%s/main.go", bin)
			}
			for flagName := range args(t, container(t, r, bin, name)) {
				if !flags[flagName] {
					t.Errorf("the chart passes --%s to %s, which cmd/%s/main.go does not define", flagName, bin, bin)
				}
			}
		}
	}
}

// TestWebhookReplicasSpreadByDefault: the webhook's replicas prefer distinct
// nodes unless the user sets an affinity, which then replaces the default.
func TestWebhookReplicasSpreadByDefault(t *testing.T) {
	d := typed[appsv1.Deployment](t, mustRender(t, nil).get(t, "Deployment", "vm-dhcp-webhook"))
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("default webhook affinity %+v", aff)
	}
	term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || !labels.SelectorFromSet(term.LabelSelector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("anti-affinity term %+v does not spread the webhook pods over nodes", term)
	}
	custom := map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
		"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "zone", "operator": "In", "values": []any{"a"}}}}},
	}}}
	d = typed[appsv1.Deployment](t, mustRender(t, map[string]any{"webhook": map[string]any{"affinity": custom}}).get(t, "Deployment", "vm-dhcp-webhook"))
	if aff := d.Spec.Template.Spec.Affinity; aff == nil || aff.NodeAffinity == nil || aff.PodAntiAffinity != nil {
		t.Errorf("webhook affinity from values %+v", aff)
	}
}
