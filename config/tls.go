package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Keys of the TLS settings.
const (
	keyCAFile     = "redis.tls.ca_file"
	keyCertFile   = "redis.tls.cert_file"
	keyKeyFile    = "redis.tls.key_file"
	keyServerName = "redis.tls.server_name"
	keyInsecure   = "redis.tls.insecure_skip_verify"
)

// Config builds the client TLS configuration t describes: the CA pool from
// CAFile and the client certificate from CertFile and KeyFile. It returns
// nil and no error when t is the zero TLS. Its errors name the environment
// variable and the file, such as
//
//	REDIS_TLS_CA_FILE: "/etc/ca.pem": no certificates found
//
// [Load] calls it already, naming the source of each file instead, and keeps
// the result for [Redis.TLSConfig].
func (t TLS) Config() (*tls.Config, error) {
	return t.build(func(key string) string { return lookup(key).Env })
}

// build is Config with name giving the source of each setting's key.
func (t TLS) build(name func(key string) string) (*tls.Config, error) {
	if t == (TLS{}) {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, // the operator's explicit choice, documented as for tests only
	}
	var errs []error
	if t.CAFile != "" {
		pem, err := readFile(t.CAFile)
		if err == nil {
			c.RootCAs = x509.NewCertPool()
			if !c.RootCAs.AppendCertsFromPEM(pem) {
				err = errors.New("no certificates found")
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", name(keyCAFile), t.CAFile, err))
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s: %q is set without the client key (%s); give both or neither",
			name(keyCertFile), t.CertFile, names(keyKeyFile)))
	case t.KeyFile != "" && t.CertFile == "":
		errs = append(errs, fmt.Errorf("%s: %q is set without the client certificate (%s); give both or neither",
			name(keyKeyFile), t.KeyFile, names(keyCertFile)))
	case t.CertFile != "":
		certPEM, certErr := readFile(t.CertFile)
		if certErr != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", name(keyCertFile), t.CertFile, certErr))
		}
		keyPEM, keyErr := readFile(t.KeyFile)
		if keyErr != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", name(keyKeyFile), t.KeyFile, keyErr))
		}
		if certErr == nil && keyErr == nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q, %s %q: %w",
					name(keyCertFile), t.CertFile, name(keyKeyFile), t.KeyFile, err))
			} else {
				c.Certificates = []tls.Certificate{pair}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// readFile reads path, dropping the path from the error because the caller
// names it already.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, pe.Err
	}
	return b, err
}

// names lists the variable and flag of key, for messages about a setting
// that was not given.
func names(key string) string {
	s := lookup(key)
	return s.Env + " or " + s.Flag
}
