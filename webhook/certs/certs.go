// Package certs keeps the webhook's serving certificate: a CA and a
// certificate for <service>.<namespace>.svc kept in one Secret, renewed
// before expiry, and the CA published in the caBundle of the webhook
// configurations. Replicas converge on the Secret: whoever creates it first
// wins and everyone else reads it; renewals use the Secret's resourceVersion
// so two replicas never overwrite each other's bundle.
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Secret and the two configurations, in the webhook's own namespace.
// +kubebuilder:rbac:groups="",namespace=vm-dhcp-system,resources=secrets,verbs=get;create;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations;mutatingwebhookconfigurations,verbs=get;update;patch,resourceNames=vm-dhcp-webhook

// Defaults of Options.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime = 365 * 24 * time.Hour
	// DefaultCheckInterval is short because each round also restores a
	// caBundle that a chart upgrade reset; a round is three GETs.
	DefaultCheckInterval = time.Minute
)

// Options configure a Manager.
type Options struct {
	Client            client.Client // direct (uncached) client: it runs before the manager's cache
	Namespace         string
	ServiceName       string
	SecretName        string
	WebhookConfigName string // both the Validating and the Mutating configuration
	CertDir           string // tls.crt and tls.key are written here too ("" to skip)
	CALifetime        time.Duration
	CertLifetime      time.Duration
	CheckInterval     time.Duration
	Log               logr.Logger
}

// Manager keeps the serving certificate. It serves the current certificate
// to the TLS listener from memory, so a renewal takes effect without a
// restart.
type Manager struct {
	opts    Options
	current atomic.Pointer[tls.Certificate]
	served  []byte // PEM of the certificate in current; only touched by Ensure
	ready   atomic.Bool
}

// New returns a Manager with defaults filled in.
func New(o Options) *Manager {
	if o.CALifetime <= 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.CertLifetime <= 0 {
		o.CertLifetime = DefaultCertLifetime
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	return &Manager{opts: o}
}

// DNSNames are the names the serving certificate covers: the Service's
// names, plus localhost and loopback so a local run (demo, tests) verifies.
func (m *Manager) DNSNames() []string {
	svc, ns := m.opts.ServiceName, m.opts.Namespace
	return []string{
		svc + "." + ns + ".svc",
		svc + "." + ns + ".svc.cluster.local",
		svc + "." + ns,
		svc,
		"localhost",
		"127.0.0.1",
		"::1",
	}
}

// GetCertificate is for tls.Config.GetCertificate.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.current.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return c, nil
}

// Ready reports whether a certificate is loaded; for a readiness check.
func (m *Manager) Ready() error {
	if !m.ready.Load() {
		return errors.New("serving certificate not loaded")
	}
	return nil
}

// Ensure makes the Secret hold a valid bundle (creating or renewing it),
// publishes its CA in the webhook configurations, then loads the serving
// certificate and writes it to CertDir. The order matters on rotation:
// clients learn the new CA before any replica serves a certificate it signed.
func (m *Manager) Ensure(ctx context.Context) error {
	b, err := m.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if err := m.publishCA(ctx, b.caBundle(time.Now())); err != nil {
		return err
	}
	return m.load(b)
}

// Start renews and re-publishes every CheckInterval until ctx ends; it is a
// manager.Runnable. A failed round is logged and tried again next round.
func (m *Manager) Start(ctx context.Context) error {
	t := time.NewTicker(m.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.Ensure(ctx); err != nil {
				m.opts.Log.Error(err, "keep webhook serving certificate")
			}
		}
	}
}

// NeedLeaderElection is false: every replica serves and must load the
// certificate; the Secret's resourceVersion arbitrates writes.
func (m *Manager) NeedLeaderElection() bool { return false }

func (m *Manager) secretKey() client.ObjectKey {
	return client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
}

// ensureSecret returns a valid bundle from the Secret, creating the Secret
// if absent and renewing its content if due. Conflicts with other replicas
// are resolved by reading again.
func (m *Manager) ensureSecret(ctx context.Context) (bundle, error) {
	names := m.DNSNames()
	owner, err := m.owner(ctx)
	if err != nil {
		return bundle{}, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		now := time.Now()
		var s corev1.Secret
		err := m.opts.Client.Get(ctx, m.secretKey(), &s)
		if apierrors.IsNotFound(err) {
			b, err := bundle{}.renew(names, false, m.opts.CALifetime, m.opts.CertLifetime, now)
			if err != nil {
				return bundle{}, err
			}
			s = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: m.opts.Namespace, Name: m.opts.SecretName,
					Labels: map[string]string{"app.kubernetes.io/name": "vm-dhcp-webhook"}},
				Type: corev1.SecretTypeOpaque,
				Data: b.data(),
			}
			if owner != nil {
				s.OwnerReferences = []metav1.OwnerReference{*owner}
			}
			err = m.opts.Client.Create(ctx, &s)
			if apierrors.IsAlreadyExists(err) {
				continue // another replica won; read its bundle
			}
			if err != nil {
				return bundle{}, fmt.Errorf("create Secret %s: %w", m.secretKey(), err)
			}
			m.opts.Log.Info("created webhook serving certificate", "secret", m.secretKey().String())
			return b, nil
		}
		if err != nil {
			return bundle{}, fmt.Errorf("get Secret %s: %w", m.secretKey(), err)
		}
		b := bundleFrom(s.Data)
		caOK, why := b.check(names, now)
		if why == nil && (owner == nil || ownedBy(&s, owner)) {
			return b, nil
		}
		if why == nil {
			// A Secret from before the owner reference (or a recreated
			// configuration): adopt it, content unchanged.
			s.OwnerReferences = append(s.OwnerReferences, *owner)
			err = m.opts.Client.Update(ctx, &s)
			if apierrors.IsConflict(err) {
				continue
			}
			if err != nil {
				return bundle{}, fmt.Errorf("set owner of Secret %s: %w", m.secretKey(), err)
			}
			return b, nil
		}
		if owner != nil && !ownedBy(&s, owner) {
			s.OwnerReferences = append(s.OwnerReferences, *owner)
		}
		b, err = b.renew(names, caOK, m.opts.CALifetime, m.opts.CertLifetime, now)
		if err != nil {
			return bundle{}, err
		}
		s.Data = b.data()
		err = m.opts.Client.Update(ctx, &s)
		if apierrors.IsConflict(err) {
			continue // another replica renewed first; use its bundle
		}
		if err != nil {
			return bundle{}, fmt.Errorf("update Secret %s: %w", m.secretKey(), err)
		}
		m.opts.Log.Info("renewed webhook serving certificate", "secret", m.secretKey().String(),
			"reason", why.Error(), "newCA", !caOK)
		return b, nil
	}
	return bundle{}, fmt.Errorf("ensure Secret %s: too many conflicting writers", m.secretKey())
}

// owner is the reference that ties the Secret to the chart's
// ValidatingWebhookConfiguration, so the garbage collector deletes the
// Secret when `helm uninstall` deletes the configuration (Helm does not know
// the Secret: the webhook made it). nil when the configuration does not
// exist (a local run).
func (m *Manager) owner(ctx context.Context) (*metav1.OwnerReference, error) {
	var vwc admissionregv1.ValidatingWebhookConfiguration
	err := m.opts.Client.Get(ctx, client.ObjectKey{Name: m.opts.WebhookConfigName}, &vwc)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get ValidatingWebhookConfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	return &metav1.OwnerReference{APIVersion: admissionregv1.SchemeGroupVersion.String(),
		Kind: "ValidatingWebhookConfiguration", Name: vwc.Name, UID: vwc.UID}, nil
}

func ownedBy(s *corev1.Secret, owner *metav1.OwnerReference) bool {
	for _, r := range s.OwnerReferences {
		if r.UID == owner.UID {
			return true
		}
	}
	return false
}

// publishCA sets caBundle on every webhook of our two configurations. A
// configuration that does not exist (a local run) is skipped; the patch is
// a merge with optimistic locking so a concurrent edit is not lost.
func (m *Manager) publishCA(ctx context.Context, ca []byte) error {
	key := client.ObjectKey{Name: m.opts.WebhookConfigName}
	var vwc admissionregv1.ValidatingWebhookConfiguration
	if err := m.patchConfig(ctx, key, &vwc, func() bool {
		changed := false
		for i := range vwc.Webhooks {
			if !sameBytes(vwc.Webhooks[i].ClientConfig.CABundle, ca) {
				vwc.Webhooks[i].ClientConfig.CABundle, changed = ca, true
			}
		}
		return changed
	}); err != nil {
		return err
	}
	var mwc admissionregv1.MutatingWebhookConfiguration
	return m.patchConfig(ctx, key, &mwc, func() bool {
		changed := false
		for i := range mwc.Webhooks {
			if !sameBytes(mwc.Webhooks[i].ClientConfig.CABundle, ca) {
				mwc.Webhooks[i].ClientConfig.CABundle, changed = ca, true
			}
		}
		return changed
	})
}

func (m *Manager) patchConfig(ctx context.Context, key client.ObjectKey, obj client.Object, set func() bool) error {
	kind := fmt.Sprintf("%T", obj)
	for attempt := 0; attempt < 5; attempt++ {
		err := m.opts.Client.Get(ctx, key, obj)
		if apierrors.IsNotFound(err) {
			m.opts.Log.V(1).Info("webhook configuration not found; caBundle not published", "kind", kind, "name", key.Name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("get %s %s: %w", kind, key.Name, err)
		}
		before := obj.DeepCopyObject().(client.Object)
		if !set() {
			return nil
		}
		err = m.opts.Client.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("patch caBundle of %s %s: %w", kind, key.Name, err)
		}
		m.opts.Log.Info("published CA bundle", "kind", kind, "name", key.Name)
		return nil
	}
	return fmt.Errorf("patch caBundle of %s %s: too many conflicts", kind, key.Name)
}

// load makes b's serving certificate the one served, and writes it to
// CertDir for tools that read it from disk.
func (m *Manager) load(b bundle) error {
	if m.ready.Load() && sameBytes(m.served, b.cert) {
		return nil
	}
	pair, err := tls.X509KeyPair(b.cert, b.key)
	if err != nil {
		return fmt.Errorf("load serving key pair: %w", err)
	}
	if m.opts.CertDir != "" {
		if err := writeFiles(m.opts.CertDir, map[string][]byte{KeyCert: b.cert, KeyKey: b.key, KeyCA: b.caCert}); err != nil {
			return err
		}
	}
	m.current.Store(&pair)
	m.served = b.cert
	m.ready.Store(true)
	return nil
}

// writeFiles replaces each file atomically, so a reader never sees half a key.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cert dir %s: %w", dir, err)
	}
	for name, data := range files {
		tmp, err := os.CreateTemp(dir, "."+name+"-*")
		if err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if werr != nil || cerr != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", filepath.Join(dir, name), errors.Join(werr, cerr))
		}
		if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
		}
	}
	return nil
}
