package chart

import (
	"slices"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
)

// TestRenderedWebhookRules: the chart registers the operations the webhook
// decides on, from generated/webhook/webhooks.yaml (written from the Go
// webhook.Configurations()); in particular DELETE of IPPools, without which
// the "pool still in use" refusal never runs in a helm install.
func TestRenderedWebhookRules(t *testing.T) {
	r := mustRender(t, nil)
	v := typed[admissionv1.ValidatingWebhookConfiguration](t, r.get(t, "ValidatingWebhookConfiguration", "vm-dhcp-webhook"))
	want := map[string][]admissionv1.OperationType{
		"validate-ippool.network.harvesterhci.io":   {admissionv1.Create, admissionv1.Update, admissionv1.Delete},
		"validate-vmnetcfg.network.harvesterhci.io": {admissionv1.Create, admissionv1.Update},
	}
	for _, w := range v.Webhooks {
		ops, ok := want[w.Name]
		if !ok {
			t.Errorf("unexpected webhook %s", w.Name)
			continue
		}
		delete(want, w.Name)
		if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, ops) {
			t.Errorf("webhook %s rules %+v, want operations %v", w.Name, w.Rules, ops)
		}
	}
	for n := range want {
		t.Errorf("no webhook %s", n)
	}
}
