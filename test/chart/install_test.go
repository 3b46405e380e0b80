package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	corev1 "k8s.io/api/core/v1"
)

// assetsDir is where hack/envtest/setup.sh puts etcd and kube-apiserver.
func assetsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "vm-dhcp", "envtest", "v1.37.2")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("no %s in %s: run hack/envtest/setup.sh and set KUBEBUILDER_ASSETS", b, dir)
		}
	}
	return dir
}

// thirdPartyCRDs stand in for the Prometheus Operator's and cert-manager's
// CRDs so that the optional objects can be installed too. They accept any
// spec: what they prove is that the chart's kinds, versions and scopes exist
// as the chart expects, not the operators' own validation.
func thirdPartyCRDs() []*apiextensionsv1.CustomResourceDefinition {
	crd := func(group, kind, plural string) *apiextensionsv1.CustomResourceDefinition {
		preserve := true
		return &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: group, Scope: apiextensionsv1.NamespaceScoped,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: plural[:len(plural)-1]},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: "v1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: &preserve,
					}},
				}},
			},
		}
	}
	return []*apiextensionsv1.CustomResourceDefinition{
		crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
		crd("cert-manager.io", "Certificate", "certificates"),
		crd("cert-manager.io", "Issuer", "issuers"),
	}
}

// TestInstallAndUninstall installs the chart with the Helm SDK into a real
// kube-apiserver (which validates every object), checks that every rendered
// object is there, uninstalls it and checks nothing but the CRDs is left.
// It does so with the default values and with every option turned on.
func TestInstallAndUninstall(t *testing.T) {
	env := &envtest.Environment{BinaryAssetsDirectory: assetsDir(t), CRDs: thirdPartyCRDs()}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "chart-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	for _, ns := range []string{releaseNamespace, "monitoring"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir, _ := chartCopy(t)
	c := loadChart(t, dir)

	for _, tc := range []struct {
		name   string
		values map[string]any
	}{
		{"default values", nil},
		{"every option on", nonDefaultValues()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			installAndUninstall(t, cfg, kubeconfigPath, c, tc.values)
		})
	}

	// Helm never deletes crds/: the IPPools survive an uninstall.
	crds := []string{"ippools.network.harvesterhci.io", "virtualmachinenetworkconfigs.network.harvesterhci.io"}
	ext := dynamic.NewForConfigOrDie(cfg).Resource(apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions"))
	for _, name := range crds {
		if _, err := ext.Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("CRD %s from the chart's crds/ is not installed: %v", name, err)
		}
	}
}

func installAndUninstall(t *testing.T, cfg *rest.Config, kubeconfigPath string, c *chart.Chart, values map[string]any) {
	ctx := context.Background()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfigPath
	ns := releaseNamespace
	flags.Namespace = &ns
	cacheDir := t.TempDir()
	flags.CacheDir = &cacheDir
	actionCfg := new(action.Configuration)
	if err := actionCfg.Init(flags, releaseNamespace, "secret", t.Logf); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}

	install := action.NewInstall(actionCfg)
	install.ReleaseName = releaseName
	install.Namespace = releaseNamespace
	install.Timeout = 2 * time.Minute
	start := time.Now()
	rel, err := install.Run(c, values)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	t.Logf("installed %s in %s", rel.Name, time.Since(start).Round(time.Millisecond))
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 20 {
		t.Fatalf("release has only %d objects", len(objs))
	}

	dyn := dynamic.NewForConfigOrDie(cfg)
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	resourceOf := func(o *unstructured.Unstructured) dynamic.ResourceInterface {
		m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
		if err != nil {
			t.Fatalf("map %s: %v", o.GroupVersionKind(), err)
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			return dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		return dyn.Resource(m.Resource)
	}
	for _, o := range objs {
		live, err := resourceOf(o).Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s/%s not in the cluster after install: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			continue
		}
		if live.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s %s is not labelled as managed by Helm", o.GetKind(), o.GetName())
		}
	}
	secrets, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Secrets(releaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + releaseName})
	if err != nil || len(secrets.Items) != 1 {
		t.Errorf("want one Helm release record, got %v, %v", secrets, err)
	}

	checkUpgradeKeepsCABundle(t, cfg, actionCfg, c, values)

	uninstall := action.NewUninstall(actionCfg)
	uninstall.Timeout = 2 * time.Minute
	if _, err := uninstall.Run(releaseName); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, o := range objs {
		for {
			_, err := resourceOf(o).Get(ctx, o.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s %s/%s is still there after uninstall (%v)", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	secrets, err = kubernetes.NewForConfigOrDie(cfg).CoreV1().Secrets(releaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil || len(secrets.Items) != 0 {
		t.Errorf("Helm release records left after uninstall: %v, %v", fmt.Sprint(len(secrets.Items)), err)
	}
}

// checkUpgradeKeepsCABundle: in self-managed mode the webhook patches the
// caBundle into configurations the chart ships without one; a `helm upgrade`
// must keep it (three-way merge) while applying the chart's own changes.
func checkUpgradeKeepsCABundle(t *testing.T, cfg *rest.Config, actionCfg *action.Configuration, c *chart.Chart, values map[string]any) {
	t.Helper()
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	ca := []byte("-----BEGIN CERTIFICATE-----\nstand-in for the webhook's CA\n-----END CERTIFICATE-----\n")
	v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "vm-dhcp-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range v.Webhooks {
		v.Webhooks[i].ClientConfig.CABundle = ca
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Update(ctx, v, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("patch caBundle as the webhook does: %v", err)
	}

	upgraded := map[string]any{}
	for k, val := range values {
		upgraded[k] = val
	}
	wh, _ := upgraded["webhook"].(map[string]any)
	whCopy := map[string]any{}
	for k, val := range wh {
		whCopy[k] = val
	}
	whCopy["timeoutSeconds"] = 7
	upgraded["webhook"] = whCopy
	upgrade := action.NewUpgrade(actionCfg)
	upgrade.Namespace = releaseNamespace
	upgrade.Timeout = 2 * time.Minute
	if _, err := upgrade.Run(releaseName, c, upgraded); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	v, err = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "vm-dhcp-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range v.Webhooks {
		if w.TimeoutSeconds == nil || *w.TimeoutSeconds != 7 {
			t.Errorf("upgrade did not apply timeoutSeconds to %s: %v", w.Name, w.TimeoutSeconds)
		}
		if string(w.ClientConfig.CABundle) != string(ca) {
			t.Errorf("upgrade dropped the caBundle of %s", w.Name)
		}
	}
}
