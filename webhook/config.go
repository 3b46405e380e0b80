package webhook

import (
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Names of the webhooks inside the configurations.
const (
	MutateIPPoolWebhook     = "mutate-ippool.network.harvesterhci.io"
	ValidateIPPoolWebhook   = "validate-ippool.network.harvesterhci.io"
	ValidateVMNetCfgWebhook = "validate-vmnetcfg.network.harvesterhci.io"
)

// Configurations returns the Mutating and Validating webhook configurations
// (both named name) that send our kinds, and only them, to the Service
// namespace/service on port 443. Status updates are not sent: the
// controller writes them often and they carry no user input.
//
// This is the one source of the rules: the chart renders them from
// generated/webhook/webhooks.yaml, which `make generate` writes from here.
func Configurations(name, namespace, service string, caBundle []byte) (*admissionregv1.MutatingWebhookConfiguration, *admissionregv1.ValidatingWebhookConfiguration) {
	group := v1alpha1.GroupVersion.Group
	version := v1alpha1.GroupVersion.Version
	clientConfig := func(path string) admissionregv1.WebhookClientConfig {
		return admissionregv1.WebhookClientConfig{
			Service: &admissionregv1.ServiceReference{
				Namespace: namespace, Name: service, Path: ptr.To(path), Port: ptr.To[int32](443),
			},
			CABundle: caBundle,
		}
	}
	rule := func(resource string, ops ...admissionregv1.OperationType) []admissionregv1.RuleWithOperations {
		return []admissionregv1.RuleWithOperations{{
			Operations: ops,
			Rule: admissionregv1.Rule{
				APIGroups: []string{group}, APIVersions: []string{version},
				Resources: []string{resource}, Scope: ptr.To(admissionregv1.NamespacedScope),
			},
		}}
	}
	sideEffects := ptr.To(admissionregv1.SideEffectClassNone)
	fail := ptr.To(admissionregv1.Fail)
	// Equivalent: a request through another version of the API still
	// reaches us. Never: our defaults do not depend on other mutations.
	equivalent := ptr.To(admissionregv1.Equivalent)
	meta := metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "vm-dhcp-webhook"}}

	mutating := &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: meta,
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:                    MutateIPPoolWebhook,
			ClientConfig:            clientConfig(MutateIPPoolPath),
			Rules:                   rule("ippools", admissionregv1.Create),
			FailurePolicy:           fail,
			MatchPolicy:             equivalent,
			ReinvocationPolicy:      ptr.To(admissionregv1.NeverReinvocationPolicy),
			SideEffects:             sideEffects,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	validating := &admissionregv1.ValidatingWebhookConfiguration{
		ObjectMeta: *meta.DeepCopy(),
		Webhooks: []admissionregv1.ValidatingWebhook{{
			Name:         ValidateIPPoolWebhook,
			ClientConfig: clientConfig(ValidateIPPoolPath),
			Rules: rule("ippools", admissionregv1.Create, admissionregv1.Update,
				admissionregv1.Delete),
			FailurePolicy:           fail,
			MatchPolicy:             equivalent,
			SideEffects:             sideEffects,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}, {
			Name:                    ValidateVMNetCfgWebhook,
			ClientConfig:            clientConfig(ValidateVMNetCfgPath),
			Rules:                   rule("virtualmachinenetworkconfigs", admissionregv1.Create, admissionregv1.Update),
			FailurePolicy:           fail,
			MatchPolicy:             equivalent,
			SideEffects:             sideEffects,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	return mutating, validating
}
