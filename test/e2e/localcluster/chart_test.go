package localcluster

import (
	"reflect"
	"testing"
)

const sampleManifest = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: vm-dhcp-controller}
---
apiVersion: v1
kind: Service
metadata: {name: vm-dhcp-webhook}
---
# empty document
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: vm-dhcp-webhook}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      serviceAccountName: vm-dhcp-webhook
      containers:
      - name: webhook
        image: example/vm-dhcp-webhook:1
        args: ["--namespace=$(POD_NAMESPACE)", "--port", "9443", "--other=$(MISSING)"]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: vm-dhcp-webhook}
webhooks:
- name: validate-ippool.network.harvesterhci.io
  clientConfig:
    service: {name: vm-dhcp-webhook, namespace: vm-dhcp-system, path: /validate-ippool, port: 443}
  sideEffects: None
  admissionReviewVersions: [v1]
`

func TestSortManifestsAndReplayDeploymentArgs(t *testing.T) {
	chart, err := sortManifests([]byte(sampleManifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(chart.Objects) != 2 || len(chart.Deployments) != 1 || !reflect.DeepEqual(chart.Skipped, []string{"Service/vm-dhcp-webhook"}) {
		t.Fatalf("sorted into %d objects, %d deployments, skipped %v", len(chart.Objects), len(chart.Deployments), chart.Skipped)
	}
	cc, ok := commandFor(chart, "ns1", "webhook", "")
	if !ok {
		t.Fatal("webhook container not found")
	}
	want := []string{"--namespace=ns1", "--port", "9443", "--other=$(MISSING)"}
	if !reflect.DeepEqual(cc.Args, want) {
		t.Fatalf("args %q, want %q", cc.Args, want)
	}
	args := setFlag(setFlag(cc.Args, "port", "1234"), "kubeconfig", "/k")
	want = []string{"--namespace=ns1", "--port=1234", "--other=$(MISSING)", "--kubeconfig=/k"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("after setFlag %q, want %q", args, want)
	}
	if v, _ := flagValue(args, "port"); v != "1234" {
		t.Fatalf("flagValue port = %q", v)
	}
	if _, ok := commandFor(chart, "ns1", "controller", "webhook"); ok {
		t.Fatal("found a controller container in a chart without one")
	}
}

func TestRewriteWebhookClientConfigToLoopbackURL(t *testing.T) {
	chart, err := sortManifests([]byte(sampleManifest))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, o := range chart.Objects {
		k, err := rewriteWebhookClientConfig(o, 40000)
		if err != nil {
			t.Fatal(err)
		}
		n += k
		if o.GetKind() == "ValidatingWebhookConfiguration" {
			hooks := o.Object["webhooks"].([]any)
			cc := hooks[0].(map[string]any)["clientConfig"].(map[string]any)
			if cc["url"] != "https://127.0.0.1:40000/validate-ippool" || cc["service"] != nil {
				t.Fatalf("clientConfig after rewrite: %v", cc)
			}
		}
	}
	if n != 1 {
		t.Fatalf("rewrote %d webhooks, want 1", n)
	}
}

func TestRewritePathsLongestMountFirst(t *testing.T) {
	mounts := map[string]string{"/etc/coredhcp": "/w/cfg", "/var/lib/vm-dhcp": "/w/data", "/var/lib/vm-dhcp/sub": "/w/sub"}
	got := rewritePaths("--conf /etc/coredhcp/config.yaml snapshot=/var/lib/vm-dhcp/snapshot.json x=/var/lib/vm-dhcp/sub/a", mounts)
	want := "--conf /w/cfg/config.yaml snapshot=/w/data/snapshot.json x=/w/sub/a"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPodIPFromInterfaceAddress(t *testing.T) {
	for in, want := range map[string]string{"eth1=192.168.100.2/24": "192.168.100.2", "eth1": "", "eth1=bad/24": ""} {
		if got := podIPFrom(in); got != want {
			t.Errorf("podIPFrom(%q) = %q, want %q", in, got, want)
		}
	}
}
