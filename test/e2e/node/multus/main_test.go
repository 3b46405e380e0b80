package main

import (
	"reflect"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

func TestParseSelections(t *testing.T) {
	for _, tc := range []struct {
		annot string
		want  []nadv1.NetworkSelectionElement
		err   bool
	}{
		{annot: "", want: nil},
		// The form the controller writes on agent pods.
		{annot: `[{"namespace":"default","name":"example","interface":"eth1"}]`,
			want: []nadv1.NetworkSelectionElement{{Namespace: "default", Name: "example", InterfaceRequest: "eth1"}}},
		{annot: "example, other/net2@eth2",
			want: []nadv1.NetworkSelectionElement{{Namespace: "pods", Name: "example"}, {Namespace: "other", Name: "net2", InterfaceRequest: "eth2"}}},
		{annot: `[{"namespace":"default"}]`, err: true},
		{annot: `[{`, err: true},
	} {
		got, err := parseSelections(tc.annot, "pods")
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSelections(%q) = %+v, %v; want %+v, error %v", tc.annot, got, err, tc.want, tc.err)
		}
	}
}
