// Command acme-flow drives one issuance with golang.org/x/crypto/acme, the client library that
// cert-manager's ACME issuer is built on, the way cert-manager does it: an account bound to an
// External Account Binding, trust from a caBundle, an order, http-01, finalize, the chain.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
)

func main() {
	directory := flag.String("directory", "", "ACME directory URL (ClusterIssuer spec.acme.server)")
	caBundle := flag.String("ca-bundle", "", "base64 PEM roots (ClusterIssuer spec.acme.caBundle)")
	kid := flag.String("eab-kid", "", "EAB key id (spec.acme.externalAccountBinding.keyID)")
	hmacKey := flag.String("eab-hmac", "", "EAB HMAC key, base64url (the Secret's key)")
	domain := flag.String("domain", "", "DNS name to certify")
	listen := flag.String("http01-listen", "127.0.0.1:80", "where to answer http-01 (cert-manager's solver pod); empty: someone else answers")
	out := flag.String("out", "chain.pem", "where to write the certificate chain")
	flag.Parse()
	if err := run(*directory, *caBundle, *kid, *hmacKey, *domain, *listen, *out); err != nil {
		fmt.Fprintln(os.Stderr, "acme-flow:", err)
		os.Exit(1)
	}
}

func run(directory, caBundle, kid, hmacKey, domain, listen, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	roots, err := base64.StdEncoding.DecodeString(caBundle)
	if err != nil {
		return fmt.Errorf("caBundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return fmt.Errorf("caBundle holds no PEM certificate")
	}
	account := &acme.Account{}
	if kid != "" {
		mac, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(hmacKey, "="))
		if err != nil {
			return fmt.Errorf("eab-hmac: %w", err)
		}
		account.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: kid, Key: mac}
	}
	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	client := &acme.Client{
		Key:          accountKey,
		DirectoryURL: directory,
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	if _, err := client.Register(ctx, account, acme.AcceptTOS); err != nil {
		return fmt.Errorf("register: %w", err)
	}

	answers := map[string]string{}
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if body, ok := answers[r.URL.Path]; ok {
				w.Write([]byte(body))
				return
			}
			http.NotFound(w, r)
		})}
		go server.Serve(ln)
		defer server.Close()
	}

	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(domain))
	if err != nil {
		return fmt.Errorf("new order: %w", err)
	}
	for _, url := range order.AuthzURLs {
		authz, err := client.GetAuthorization(ctx, url)
		if err != nil {
			return err
		}
		if authz.Status == acme.StatusValid {
			continue
		}
		var challenge *acme.Challenge
		for _, c := range authz.Challenges {
			if c.Type == "http-01" {
				challenge = c
			}
		}
		if challenge == nil {
			return fmt.Errorf("no http-01 challenge for %s", authz.Identifier.Value)
		}
		body, err := client.HTTP01ChallengeResponse(challenge.Token)
		if err != nil {
			return err
		}
		answers[client.HTTP01ChallengePath(challenge.Token)] = body
		if _, err := client.Accept(ctx, challenge); err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		if _, err := client.WaitAuthorization(ctx, url); err != nil {
			return fmt.Errorf("authorization: %w", err)
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		return fmt.Errorf("order: %w", err)
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
	}, certKey)
	if err != nil {
		return err
	}
	der, _, err := client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	var chain []byte
	for _, c := range der {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return os.WriteFile(out, chain, 0o644)
}
