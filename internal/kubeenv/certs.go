package kubeenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the set of credentials one environment needs. Everything is made
// fresh per environment, so no two tests can trust each other's servers.
type pki struct {
	caFile, caKey     string // CA that signs the serving and client certs
	servingCert       string // for the address the API server binds
	servingKey        string
	adminCert         string // CN=kubeenv-admin, O=system:masters
	adminKey          string
	serviceAccountKey string // RSA key that signs and verifies SA tokens
	caPEM             []byte
	adminCertPEM      []byte
	adminKeyPEM       []byte
}

// certValidity outlives any test run by far; a short one would only add a
// way for a slow test to fail.
const certValidity = 24 * time.Hour

// newPKI writes a CA, a serving certificate for ip (and the names in-cluster
// clients use), an admin client certificate and a service-account key into
// dir.
func newPKI(dir string, ip net.IP, serviceIP net.IP) (*pki, error) {
	p := &pki{
		caFile:            filepath.Join(dir, "ca.crt"),
		caKey:             filepath.Join(dir, "ca.key"),
		servingCert:       filepath.Join(dir, "apiserver.crt"),
		servingKey:        filepath.Join(dir, "apiserver.key"),
		adminCert:         filepath.Join(dir, "admin.crt"),
		adminKey:          filepath.Join(dir, "admin.key"),
		serviceAccountKey: filepath.Join(dir, "service-account.key"),
	}
	now := time.Now().Add(-time.Minute) // tolerate small clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubeenv-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	p.caPEM = pemBlock("CERTIFICATE", caDER)
	if err := writeFile(p.caFile, p.caPEM); err != nil {
		return nil, err
	}
	if err := writeKey(p.caKey, caKey); err != nil {
		return nil, err
	}

	ips := []net.IP{ip, net.ParseIP("127.0.0.1")}
	if serviceIP != nil {
		ips = append(ips, serviceIP)
	}
	serving := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	}
	if _, _, err := issue(serving, ca, caKey, p.servingCert, p.servingKey); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	admin := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kubeenv-admin", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if p.adminCertPEM, p.adminKeyPEM, err = issue(admin, ca, caKey, p.adminCert, p.adminKey); err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}

	// RSA because every token consumer supports RS256; 2048 bits keeps
	// generation fast enough to do per test.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	if err := writeKey(p.serviceAccountKey, saKey); err != nil {
		return nil, err
	}
	return p, nil
}

// issue signs tmpl with the CA for a fresh P-256 key and writes both as PEM.
func issue(tmpl, ca *x509.Certificate, caKey crypto.Signer, certFile, keyFile string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %s: %w", tmpl.Subject.CommonName, err)
	}
	certPEM = pemBlock("CERTIFICATE", der)
	if err := writeFile(certFile, certPEM); err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	keyPEM = pemBlock("PRIVATE KEY", keyDER)
	if err := writeFile(keyFile, keyPEM); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", path, err)
	}
	return writeFile(path, pemBlock("PRIVATE KEY", der))
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand does not fail on Linux; a constant serial is harmless
		// for a throwaway CA anyway.
		return big.NewInt(1)
	}
	return n
}
