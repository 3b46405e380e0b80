package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Keys of the Secret. tls.crt/tls.key/ca.crt are what cert-manager writes
// too, so the chart mounts either kind of Secret the same way.
const (
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	KeyCA     = "ca.crt"
	KeyCAKey  = "ca.key"
	KeyPrevCA = "ca-prev.crt" // the CA before the last CA rotation, trusted until it expires
)

// bundle is a CA and the serving certificate it signed, as PEM.
type bundle struct {
	caCert, caKey, cert, key, prevCA []byte
}

func (b bundle) data() map[string][]byte {
	d := map[string][]byte{KeyCert: b.cert, KeyKey: b.key, KeyCA: b.caCert, KeyCAKey: b.caKey}
	if len(b.prevCA) > 0 {
		d[KeyPrevCA] = b.prevCA
	}
	return d
}

func bundleFrom(d map[string][]byte) bundle {
	return bundle{caCert: d[KeyCA], caKey: d[KeyCAKey], cert: d[KeyCert], key: d[KeyKey], prevCA: d[KeyPrevCA]}
}

// caBundle is what clients must trust: the current CA, plus the previous
// one while it is valid so that replicas still serving a certificate it
// signed keep working during a CA rotation.
func (b bundle) caBundle(now time.Time) []byte {
	out := slices.Clone(b.caCert)
	if prev, err := parseCert(b.prevCA); err == nil && now.Before(prev.NotAfter) {
		out = append(out, b.prevCA...)
	}
	return out
}

func parseCert(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(p)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// dueForRenewal reports whether less than a third of the certificate's
// lifetime is left, or it is not valid yet.
func dueForRenewal(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.Before(c.NotBefore) || c.NotAfter.Sub(now) < life/3
}

// check says why b cannot serve names as of now, or nil when it can and
// neither certificate is due for renewal. caOK tells whether the CA alone
// can be kept.
func (b bundle) check(names []string, now time.Time) (caOK bool, err error) {
	ca, err := parseCert(b.caCert)
	if err != nil {
		return false, fmt.Errorf("CA: %w", err)
	}
	if _, err := parseKey(b.caKey); err != nil {
		return false, fmt.Errorf("CA key: %w", err)
	}
	if !ca.IsCA || dueForRenewal(ca, now) {
		return false, errors.New("CA is due for renewal")
	}
	leaf, err := parseCert(b.cert)
	if err != nil {
		return true, fmt.Errorf("serving certificate: %w", err)
	}
	if _, err := tls.X509KeyPair(b.cert, b.key); err != nil {
		return true, fmt.Errorf("serving key pair: %w", err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return true, fmt.Errorf("serving certificate not signed by the CA: %w", err)
	}
	if dueForRenewal(leaf, now) {
		return true, errors.New("serving certificate is due for renewal")
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return true, fmt.Errorf("serving certificate does not cover %s", n)
		}
	}
	return true, nil
}

// renew returns b with a new serving certificate, and a new CA too unless
// keepCA. The old CA is kept as the previous one when it is replaced.
func (b bundle) renew(names []string, keepCA bool, caLife, certLife time.Duration, now time.Time) (bundle, error) {
	out := b
	if !keepCA {
		ca, key, err := newCA(caLife, now)
		if err != nil {
			return bundle{}, err
		}
		out.prevCA = nil
		if len(b.caCert) > 0 {
			if _, err := parseCert(b.caCert); err == nil {
				out.prevCA = b.caCert
			}
		}
		out.caCert, out.caKey = ca, key
	}
	cert, key, err := newServingCert(out.caCert, out.caKey, names, certLife, now)
	if err != nil {
		return bundle{}, err
	}
	out.cert, out.key = cert, key
	return out, nil
}

// backdate is how far before now a certificate starts, to tolerate clock
// skew between nodes; short test lifetimes get a proportionate margin so
// that the renewal threshold stays inside the lifetime.
func backdate(life time.Duration) time.Duration { return min(time.Hour, life/10) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func newCA(life time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("CA serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("vm-dhcp-webhook-ca@%d", now.Unix())},
		NotBefore:             now.Add(-backdate(life)),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func newServingCert(caPEM, caKeyPEM []byte, names []string, life time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	ca, err := parseCert(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA: %w", err)
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("serving serial: %w", err)
	}
	notAfter := now.Add(life)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-backdate(life)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign serving certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode serving key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// sameBytes compares two PEM blobs.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
