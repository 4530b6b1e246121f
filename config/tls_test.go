package config_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/proctest"
)

// pki is a CA and the certificates it signed, as PEM files.
type pki struct {
	caCert, caKey         string // files
	clientCert, clientKey string // files
	serverCert, serverKey string // files
	ca                    *x509.Certificate
	caPriv                *ecdsa.PrivateKey
	clientDER, serverDER  []byte // certificates, to check against
	serverName            string
}

// newPKI makes a CA, a client certificate for mutual TLS and a server
// certificate, all signed by the CA, and writes the files into a temporary
// directory.
func newPKI(tb testing.TB) *pki {
	tb.Helper()
	dir := tb.TempDir()
	p := &pki{serverName: "redis.test"}

	caPriv := newKey(tb)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "forgeq test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caPriv.PublicKey, caPriv)
	if err != nil {
		tb.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(caDER); err != nil {
		tb.Fatal(err)
	}
	p.caPriv = caPriv
	p.caCert = writePEM(tb, dir, "ca.pem", "CERTIFICATE", caDER)
	p.caKey = writePEM(tb, dir, "ca-key.pem", "PRIVATE KEY", marshalKey(tb, caPriv))

	clientPriv := newKey(tb)
	p.clientDER = p.sign(tb, 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "forgeq-worker"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, clientPriv)
	p.clientCert = writePEM(tb, dir, "client.pem", "CERTIFICATE", p.clientDER)
	p.clientKey = writePEM(tb, dir, "client-key.pem", "PRIVATE KEY", marshalKey(tb, clientPriv))

	serverPriv := newKey(tb)
	p.serverDER = p.sign(tb, 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: p.serverName},
		DNSNames:    []string{p.serverName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, serverPriv)
	p.serverCert = writePEM(tb, dir, "server.pem", "CERTIFICATE", p.serverDER)
	p.serverKey = writePEM(tb, dir, "server-key.pem", "PRIVATE KEY", marshalKey(tb, serverPriv))
	return p
}

func (p *pki) sign(tb testing.TB, serial int64, tmpl *x509.Certificate, priv *ecdsa.PrivateKey) []byte {
	tb.Helper()
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &priv.PublicKey, p.caPriv)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func marshalKey(tb testing.TB, k *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func writePEM(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// checkTLS checks that c trusts exactly p's CA for p's server and, when
// wantClient, presents p's client certificate.
func checkTLS(tb testing.TB, p *pki, c *tls.Config, wantClient bool) {
	tb.Helper()
	if c == nil {
		tb.Fatal("TLS config is nil")
	}
	if c.MinVersion != tls.VersionTLS12 {
		tb.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
	}
	server, err := x509.ParseCertificate(p.serverDER)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := server.Verify(x509.VerifyOptions{Roots: c.RootCAs, DNSName: p.serverName}); err != nil {
		tb.Errorf("server certificate does not verify against RootCAs: %v", err)
	}
	if wantClient {
		if len(c.Certificates) != 1 || !bytes.Equal(c.Certificates[0].Certificate[0], p.clientDER) {
			tb.Errorf("Certificates is not the client certificate")
		}
	} else if len(c.Certificates) != 0 {
		tb.Errorf("got %d client certificates, want none", len(c.Certificates))
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()

	p := newPKI(t)
	t.Run("zero", func(t *testing.T) {
		t.Parallel()
		c, err := config.TLS{}.Config()
		if c != nil || err != nil {
			t.Errorf("Config() = %v, %v; want nil, nil", c, err)
		}
	})
	t.Run("CA", func(t *testing.T) {
		t.Parallel()
		c, err := config.TLS{CAFile: p.caCert}.Config()
		if err != nil {
			t.Fatal(err)
		}
		checkTLS(t, p, c, false)
	})
	t.Run("CA and client certificate", func(t *testing.T) {
		t.Parallel()
		c, err := config.TLS{CAFile: p.caCert, CertFile: p.clientCert, KeyFile: p.clientKey}.Config()
		if err != nil {
			t.Fatal(err)
		}
		checkTLS(t, p, c, true)
	})
	t.Run("server name and insecure", func(t *testing.T) {
		t.Parallel()
		c, err := config.TLS{ServerName: "other.test", InsecureSkipVerify: true}.Config()
		if err != nil {
			t.Fatal(err)
		}
		if c.ServerName != "other.test" || !c.InsecureSkipVerify || c.RootCAs != nil {
			t.Errorf("got ServerName %q, InsecureSkipVerify %v, RootCAs %v", c.ServerName, c.InsecureSkipVerify, c.RootCAs)
		}
	})
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()

	p := newPKI(t)
	missing := filepath.Join(t.TempDir(), "nope.pem")
	notPEM := writeFile(t, "ca.pem", "hello\n")
	tests := []struct {
		name    string
		give    config.TLS
		wantErr []string
	}{
		{
			name:    "CA missing",
			give:    config.TLS{CAFile: missing},
			wantErr: []string{`REDIS_TLS_CA_FILE: "` + missing + `": no such file or directory`},
		},
		{
			name:    "CA not PEM",
			give:    config.TLS{CAFile: notPEM},
			wantErr: []string{`REDIS_TLS_CA_FILE: "` + notPEM + `": no certificates found`},
		},
		{
			name:    "cert without key",
			give:    config.TLS{CertFile: p.clientCert},
			wantErr: []string{`REDIS_TLS_CERT_FILE: "` + p.clientCert + `" is set without the client key (REDIS_TLS_KEY_FILE or --redis-tls-key-file); give both or neither`},
		},
		{
			name:    "key without cert",
			give:    config.TLS{KeyFile: p.clientKey},
			wantErr: []string{`REDIS_TLS_KEY_FILE: "` + p.clientKey + `" is set without the client certificate (REDIS_TLS_CERT_FILE or --redis-tls-cert-file)`},
		},
		{
			name: "cert and key missing",
			give: config.TLS{CertFile: missing, KeyFile: missing + "2"},
			wantErr: []string{
				`REDIS_TLS_CERT_FILE: "` + missing + `": no such file or directory`,
				`REDIS_TLS_KEY_FILE: "` + missing + `2": no such file or directory`,
			},
		},
		{
			name:    "key is not PEM",
			give:    config.TLS{CertFile: p.clientCert, KeyFile: notPEM},
			wantErr: []string{`REDIS_TLS_CERT_FILE "` + p.clientCert + `", REDIS_TLS_KEY_FILE "` + notPEM + `": tls:`},
		},
		{
			name: "CA and key problems together",
			give: config.TLS{CAFile: notPEM, CertFile: p.clientCert},
			wantErr: []string{
				`REDIS_TLS_CA_FILE: "` + notPEM + `": no certificates found`,
				`REDIS_TLS_CERT_FILE: "` + p.clientCert + `" is set without the client key`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := tt.give.Config()
			if c != nil {
				t.Errorf("Config() = %v, want nil on error", c)
			}
			wantErrors(t, err, tt.wantErr, nil)
		})
	}
}

func TestLoadTLS(t *testing.T) {
	t.Parallel()

	p := newPKI(t)
	tests := []struct {
		name       string
		giveEnv    map[string]string
		giveArgs   []string
		wantClient bool
	}{
		{
			name:    "CA from the environment",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "rediss://redis.test:6380", "REDIS_TLS_CA_FILE": p.caCert},
		},
		{
			name:       "mutual TLS from flags",
			giveArgs:   []string{"--redis-url", "rediss+cluster://a:7000,b:7001", "--redis-tls-ca-file", p.caCert, "--redis-tls-cert-file", p.clientCert, "--redis-tls-key-file", p.clientKey},
			giveEnv:    map[string]string{"REDIS_TLS_SERVER_NAME": "redis.test"},
			wantClient: true,
		},
		{
			name: "sentinel from a file",
			giveEnv: map[string]string{"FORGEQ_CONFIG": writeFile(t, "forgeq.yaml",
				"redis:\n  url: rediss+sentinel://s1:26379/mymaster\n  tls:\n    ca_file: "+p.caCert+"\n")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(flags(t, tt.giveArgs...), env(tt.giveEnv))
			if err != nil {
				t.Fatal(err)
			}
			checkTLS(t, p, cfg.Redis.TLSConfig(), tt.wantClient)
		})
	}
	t.Run("rediss without TLS settings", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Load(nil, env(map[string]string{"REDIS_CONNECTION_URL": "rediss://redis.test:6380"}))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Redis.TLSConfig() != nil {
			t.Error("TLSConfig() is not nil; want the URL's own TLS defaults")
		}
	})
}

// Mutual TLS against a real redis-server that requires client
// certificates, with every file made here: the settings a user gives
// (REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE,
// REDIS_TLS_SERVER_NAME) connect; without the client certificate, or with
// another CA, the server or the client refuses.
func TestLoadTLSRealServer(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	tlsPort := proctest.FreePort(t)
	proctest.RedisServer(t,
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", p.serverCert,
		"--tls-key-file", p.serverKey,
		"--tls-ca-cert-file", p.caCert,
		"--tls-auth-clients", "yes")
	url := fmt.Sprintf("rediss://127.0.0.1:%d", tlsPort)
	mutual := map[string]string{
		"REDIS_CONNECTION_URL":  url,
		"REDIS_TLS_CA_FILE":     p.caCert,
		"REDIS_TLS_CERT_FILE":   p.clientCert,
		"REDIS_TLS_KEY_FILE":    p.clientKey,
		"REDIS_TLS_SERVER_NAME": p.serverName,
	}
	ping := func(t *testing.T, e map[string]string) error {
		t.Helper()
		cfg, err := config.Load(nil, env(e))
		if err != nil {
			t.Fatal(err)
		}
		m, err := cachemgr.New(cachemgr.Options{URL: cfg.Redis.URL, TLSConfig: cfg.Redis.TLSConfig(), SocketTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return m.Ping(context.Background())
	}
	if err := ping(t, mutual); err != nil {
		t.Fatalf("Ping with the client certificate: %v", err)
	}

	noClient := maps.Clone(mutual)
	delete(noClient, "REDIS_TLS_CERT_FILE")
	delete(noClient, "REDIS_TLS_KEY_FILE")
	if err := ping(t, noClient); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("Ping without a client certificate = %v, want the server's \"certificate required\"", err)
	}

	otherCA := maps.Clone(mutual)
	otherCA["REDIS_TLS_CA_FILE"] = newPKI(t).caCert
	if err := ping(t, otherCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Ping trusting another CA = %v, want a certificate error", err)
	}
}
