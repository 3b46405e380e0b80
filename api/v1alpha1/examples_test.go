package v1alpha1_test

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The dual-stack example is Harvester's example pool plus an IPv6 half:
// same name, network and IPv4 settings, so `make demo` and the real-node
// test, which apply it, still serve the Harvester example's IPv4 side.
func TestDualStackExampleExtendsHarvesters(t *testing.T) {
	harvester := readExample(t, "harvester-ippool.yaml")
	dual := readExample(t, "dual-stack-ippool.yaml")
	if _, ok, _ := unstructured.NestedMap(harvester.Object, "spec", "ipv6Config"); ok {
		t.Fatal("harvester-ippool.yaml has an ipv6Config: it must stay Harvester's example")
	}
	v6, ok, _ := unstructured.NestedMap(dual.Object, "spec", "ipv6Config")
	if !ok || v6["cidr"] == nil {
		t.Fatalf("dual-stack-ippool.yaml has no spec.ipv6Config.cidr: %v", v6)
	}
	unstructured.RemoveNestedField(dual.Object, "spec", "ipv6Config")
	if !reflect.DeepEqual(harvester.Object, dual.Object) {
		t.Errorf("dual-stack-ippool.yaml without its ipv6Config differs from harvester-ippool.yaml:\n%v\n%v", dual.Object, harvester.Object)
	}
}
