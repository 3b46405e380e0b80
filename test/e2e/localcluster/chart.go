package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// renderedChart is the chart rendered by `helm template`, sorted into what
// the local control plane can hold and what must run as local processes.
type renderedChart struct {
	// CRDs come from the chart's crds/ folder (--include-crds).
	CRDs []*apiextensionsv1.CustomResourceDefinition
	// Objects are installed as they are: service accounts, RBAC, webhook
	// configurations (after rewriteWebhookClientConfig), config maps.
	Objects []*unstructured.Unstructured
	// Deployments are not installed (nothing would run their pods); their
	// containers' args are replayed as local processes.
	Deployments []*appsv1.Deployment
	// Skipped names the objects left out, for the progress output.
	Skipped []string
}

// skippedKinds cannot do anything without nodes, kube-proxy or add-ons; the
// stand-in replaces them with local processes and loopback URLs.
var skippedKinds = map[string]bool{
	"Service": true, "PodDisruptionBudget": true, "DaemonSet": true, "StatefulSet": true,
	"Job": true, "CronJob": true, "Pod": true, "HorizontalPodAutoscaler": true,
	"ServiceMonitor": true, "PodMonitor": true, "Certificate": true, "Issuer": true,
	"NetworkPolicy": true, "Ingress": true,
}

// renderChart runs `helm template` on the chart and sorts what it renders.
// kubeVersion is the version of the apiserver it will be installed into:
// Helm checks Chart.yaml's kubeVersion against it, as `helm install` does
// against a live cluster.
func renderChart(helm, chartDir, release, namespace, kubeVersion string, setValues []string) (*renderedChart, error) {
	args := []string{"template", release, chartDir, "--namespace", namespace, "--include-crds", "--kube-version", kubeVersion}
	for _, v := range setValues {
		args = append(args, "--set", v)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return sortManifests(stdout.Bytes())
}

// sortManifests splits a multi-document manifest and sorts the objects.
func sortManifests(manifest []byte) (*renderedChart, error) {
	out := &renderedChart{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("decode rendered chart: %w", err)
		}
		if len(raw) == 0 {
			continue
		}
		obj := &unstructured.Unstructured{Object: raw}
		switch kind := obj.GetKind(); {
		case kind == "CustomResourceDefinition":
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, crd); err != nil {
				return nil, fmt.Errorf("decode CRD %s: %w", obj.GetName(), err)
			}
			out.CRDs = append(out.CRDs, crd)
		case kind == "Deployment":
			d := &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, d); err != nil {
				return nil, fmt.Errorf("decode Deployment %s: %w", obj.GetName(), err)
			}
			out.Deployments = append(out.Deployments, d)
		case skippedKinds[kind]:
			out.Skipped = append(out.Skipped, kind+"/"+obj.GetName())
		default:
			out.Objects = append(out.Objects, obj)
		}
	}
	return out, nil
}

// rewriteWebhookClientConfig points every webhook of a Validating or
// Mutating configuration at https://127.0.0.1:port/<path> instead of the
// Service: the apiserver here has no kube-proxy to reach a Service through.
// It returns how many webhooks it rewrote.
func rewriteWebhookClientConfig(obj *unstructured.Unstructured, port int) (int, error) {
	kind := obj.GetKind()
	if kind != "ValidatingWebhookConfiguration" && kind != "MutatingWebhookConfiguration" {
		return 0, nil
	}
	hooks, _, err := unstructured.NestedSlice(obj.Object, "webhooks")
	if err != nil {
		return 0, fmt.Errorf("read webhooks of %s %s: %w", kind, obj.GetName(), err)
	}
	for i, h := range hooks {
		hook, ok := h.(map[string]any)
		if !ok {
			return 0, fmt.Errorf("webhook %d of %s %s is not an object", i, kind, obj.GetName())
		}
		cc, _ := hook["clientConfig"].(map[string]any)
		if cc == nil {
			cc = map[string]any{}
		}
		path := "/"
		if svc, ok := cc["service"].(map[string]any); ok {
			if p, ok := svc["path"].(string); ok && p != "" {
				path = p
			}
		}
		delete(cc, "service")
		cc["url"] = fmt.Sprintf("https://127.0.0.1:%d%s", port, path)
		hook["clientConfig"] = cc
		hooks[i] = hook
	}
	if err := unstructured.SetNestedSlice(obj.Object, hooks, "webhooks"); err != nil {
		return 0, fmt.Errorf("write webhooks of %s %s: %w", kind, obj.GetName(), err)
	}
	return len(hooks), nil
}

// containerCommand is one container of a rendered Deployment as the stand-in
// replays it: arguments with $(VAR) references expanded, and the env.
type containerCommand struct {
	Deployment     string
	Container      string
	Image          string
	Args           []string
	Env            map[string]string
	ServiceAccount string
	// Mounts are the container's volume mounts with their volumes.
	Mounts []mountedVolume
}

type mountedVolume struct {
	Mount  corev1.VolumeMount
	Volume corev1.Volume
}

// containerCommands returns the containers of d with args and env resolved
// the way the kubelet would for a pod in namespace: literal values and the
// downward-API fields a process outside a pod can still know.
func containerCommands(d *appsv1.Deployment, namespace string) []containerCommand {
	var out []containerCommand
	spec := d.Spec.Template.Spec
	for _, c := range spec.Containers {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = envValue(e, namespace, d.Name, spec.ServiceAccountName)
		}
		args := append(append([]string{}, c.Command...), c.Args...)
		if len(c.Command) > 0 {
			args = args[1:] // the binary is replaced by ours; keep its arguments
		}
		for i, a := range args {
			args[i] = expandVars(a, env)
		}
		var mounts []mountedVolume
		for _, m := range c.VolumeMounts {
			for _, v := range spec.Volumes {
				if v.Name == m.Name {
					mounts = append(mounts, mountedVolume{Mount: m, Volume: v})
				}
			}
		}
		out = append(out, containerCommand{
			Deployment: d.Name, Container: c.Name, Image: c.Image, Args: args, Env: env,
			ServiceAccount: spec.ServiceAccountName, Mounts: mounts,
		})
	}
	return out
}

func envValue(e corev1.EnvVar, namespace, podName, serviceAccount string) string {
	if e.ValueFrom == nil {
		return e.Value
	}
	if f := e.ValueFrom.FieldRef; f != nil {
		switch f.FieldPath {
		case "metadata.namespace":
			return namespace
		case "metadata.name":
			return podName
		case "spec.serviceAccountName":
			return serviceAccount
		case "spec.nodeName":
			return NodeName
		case "status.podIP", "status.hostIP":
			return "127.0.0.1"
		}
	}
	return ""
}

// expandVars replaces $(NAME) with env[NAME], as the kubelet does in args;
// unknown references are left as they are, again like the kubelet.
func expandVars(s string, env map[string]string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "$(")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.Index(s[i:], ")")
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		name := s[i+2 : i+j]
		b.WriteString(s[:i])
		if v, ok := env[name]; ok {
			b.WriteString(v)
		} else {
			b.WriteString(s[i : i+j+1])
		}
		s = s[i+j+1:]
	}
}

// setFlag returns args with --name set to value: an existing --name=x or
// "--name x" is replaced, otherwise the flag is appended.
func setFlag(args []string, name, value string) []string {
	flag := "--" + name
	out := make([]string, 0, len(args)+1)
	found := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == flag && i+1 < len(args):
			out = append(out, flag+"="+value)
			found = true
			i++
		case strings.HasPrefix(a, flag+"="):
			out = append(out, flag+"="+value)
			found = true
		default:
			out = append(out, a)
		}
	}
	if !found {
		out = append(out, flag+"="+value)
	}
	return out
}

// flagValue returns the value of --name in args, if present.
func flagValue(args []string, name string) (string, bool) {
	flag := "--" + name
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

// localVolumes gives the container's ConfigMap and emptyDir volumes folders
// under dir (ConfigMaps written from the rendered chart's objects) and
// returns mount path -> folder, for rewritePaths. Other volumes (secrets
// with certificates, tokens) are replaced by flags the stand-in sets.
func localVolumes(cc containerCommand, chart *renderedChart, dir string) (map[string]string, error) {
	mounts := map[string]string{}
	for _, mv := range cc.Mounts {
		folder := filepath.Join(dir, mv.Volume.Name)
		switch {
		case mv.Volume.ConfigMap != nil:
			var data map[string]any
			for _, o := range chart.Objects {
				if o.GetKind() == "ConfigMap" && o.GetName() == mv.Volume.ConfigMap.Name {
					data, _, _ = unstructured.NestedMap(o.Object, "data")
				}
			}
			if data == nil && (mv.Volume.ConfigMap.Optional == nil || !*mv.Volume.ConfigMap.Optional) {
				return nil, fmt.Errorf("container %s of %s mounts ConfigMap %s, which the chart does not render", cc.Container, cc.Deployment, mv.Volume.ConfigMap.Name)
			}
			if err := os.MkdirAll(folder, 0o755); err != nil {
				return nil, fmt.Errorf("volume %s: %w", mv.Volume.Name, err)
			}
			for k, v := range data {
				str, _ := v.(string)
				if err := os.WriteFile(filepath.Join(folder, k), []byte(str), 0o644); err != nil {
					return nil, fmt.Errorf("volume %s: %w", mv.Volume.Name, err)
				}
			}
		case mv.Volume.EmptyDir != nil:
			if err := os.MkdirAll(folder, 0o755); err != nil {
				return nil, fmt.Errorf("volume %s: %w", mv.Volume.Name, err)
			}
		default:
			continue
		}
		mounts[mv.Mount.MountPath] = folder
	}
	return mounts, nil
}

// apiserverVersion asks the kube-apiserver binary of assets for its version
// (e.g. v1.37.2).
func apiserverVersion(assets string) (string, error) {
	out, err := exec.Command(filepath.Join(assets, "kube-apiserver"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("kube-apiserver --version: %w", err)
	}
	f := strings.Fields(string(out)) // "Kubernetes v1.37.2"
	if len(f) != 2 || !strings.HasPrefix(f[1], "v1.") {
		return "", fmt.Errorf("kube-apiserver --version printed %q", out)
	}
	return f[1], nil
}
