package main

// Security tests: Raft mutual TLS keeps out a replica without a certificate
// from the shard's CA; the bearer token refuses and changes nothing; the
// HTTP API over TLS; slow clients do not exhaust the server. Oversized
// requests (413) are covered by TestMalformedRequests, and a snapshot
// stream of another shard is refused by snapshot's
// TestRecoverRefusesAnotherShard (the check sits in the stream reader, below
// anything keeld could add).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/internal/testkit/proctest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for 127.0.0.1/localhost, usable as server and
// client, and its key into dir; it returns the CA, cert and key paths.
func (ca *testCA) issue(t *testing.T, dir, name string) (caPath, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPath, certPath, keyPath = filepath.Join(dir, name+"-ca.pem"), filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	for p, b := range map[string][]byte{
		caPath:   ca.pem,
		certPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPath:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caPath, certPath, keyPath
}

// TestRaftMutualTLS runs a three-replica shard with mutual TLS where
// replica 3's certificate comes from another CA: 1 and 2 form a quorum and
// commit writes, 3 never joins in. Restarted with a certificate from the
// shard's CA, the same replica catches up, so the certificate was the only
// thing keeping it out.
func TestRaftMutualTLS(t *testing.T) {
	dir := t.TempDir()
	good, rogue := newTestCA(t, "keel-test-ca"), newTestCA(t, "rogue-ca")
	nodes := make([]*node, 3)
	members := map[uint64]string{}
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("replica-%d", i+1), filepath.Join(dir, fmt.Sprintf("r%d", i+1)))
		members[uint64(i+1)] = nodes[i].raftAddr
	}
	// Every replica, the rogue one too, trusts the shard's CA; only the
	// rogue's own certificate is foreign. The CA file is written once:
	// rewriting it while a started replica reads it made the test flaky.
	goodCA, _, _ := good.issue(t, dir, "shard")
	tlsFlags := func(i int, ca *testCA) []string {
		_, cert, key := ca.issue(t, dir, fmt.Sprintf("r%d-%s", i+1, ca.cert.Subject.CommonName))
		return []string{"--raft-tls-ca", goodCA, "--raft-tls-cert", cert, "--raft-tls-key", key}
	}
	for i, n := range nodes {
		ca := good
		if i == 2 {
			ca = rogue
		}
		n.extra = append([]string{"--replica-id", fmt.Sprint(i + 1), "--members", host.FormatMembers(members)}, tlsFlags(i, ca)...)
		n.start()
	}
	for _, n := range nodes[:2] {
		if err := n.waitReady(); err != nil {
			t.Fatal(err)
		}
	}
	mustDo(t, http.StatusNoContent, "PUT", nodes[0].url("/kv/tls"), []byte("committed"))
	proctest.Eventually(t, "replica 2 applies the write", 30*time.Second, func() error { return staleValue(nodes[1], "tls") })
	// Replica 3 is given the time replicas 1 and 2 needed several times
	// over; it must neither learn a leader nor hold the key.
	deadline := time.Now().Add(3 * time.Second)
	answered := 0
	for time.Now().Before(deadline) {
		st, err := nodes[2].statusOnce()
		if err == nil {
			answered++
		}
		if err == nil && (st.LeaderID != 0 || st.AppliedIndex > 0) {
			t.Fatalf("replica 3 with a rogue certificate joined: leader %d, applied %d", st.LeaderID, st.AppliedIndex)
		}
		if staleValue(nodes[2], "tls") == nil {
			t.Fatal("replica 3 with a rogue certificate received the write")
		}
		time.Sleep(100 * time.Millisecond) // observation interval
	}
	if answered == 0 {
		t.Fatal("replica 3 never answered /status: it is down, not kept out")
	}
	nodes[2].stopWith(syscall.SIGTERM)
	nodes[2].extra = append(nodes[2].extra[:4], tlsFlags(2, good)...)
	nodes[2].start()
	proctest.Eventually(t, "replica 3 with a good certificate catches up", 60*time.Second, func() error { return staleValue(nodes[2], "tls") })
}

func TestRaftTLSFlagsGoTogether(t *testing.T) {
	for _, args := range [][]string{
		{"--raft-tls-ca", "ca.pem"},
		{"--raft-tls-cert", "c.pem", "--raft-tls-key", "k.pem"},
		{"--http-tls-cert", "c.pem"},
		{"--token", "a", "--token-file", "f"},
		{"--max-conns", "0"},
	} {
		if _, err := parseFlags(args); !errors.Is(err, errUsage) {
			t.Errorf("parseFlags(%q) = %v, want a usage error", args, err)
		}
	}
}

// startSecured starts a single replica with extra flags and waits for it
// through the given client and token.
func startSecured(t *testing.T, hc *http.Client, scheme, token string, extra ...string) *node {
	t.Helper()
	n := newNode(t, "keeld", filepath.Join(t.TempDir(), "data"), extra...)
	n.start()
	err := n.proc.Poll(readyTimeout, func() error {
		req, _ := http.NewRequest("GET", scheme+"://"+n.httpAddr+"/status", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var st statusBody
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if err := decodeErr(resp.Body, &st); err != nil || st.LeaderID == 0 {
			return fmt.Errorf("no leader yet (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("keeld ready: %v", err)
	}
	return n
}

func decodeErr(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// TestTokenAndHTTPTLS serves the API over TLS with a token from a file:
// requests without it or with a wrong one get 401 and change nothing.
func TestTokenAndHTTPTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "keel-http-ca")
	_, cert, key := ca.issue(t, dir, "http")
	tokenFile := filepath.Join(dir, "token")
	const token = "s3cret-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	n := startSecured(t, hc, "https", token, "--http-tls-cert", cert, "--http-tls-key", key, "--token-file", tokenFile)
	base := "https://" + n.httpAddr

	send := func(method, path, auth string, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, "Bearer" + token} {
		for _, r := range []struct{ method, path string }{
			{"PUT", "/kv/secret"}, {"GET", "/kv/secret"}, {"DELETE", "/kv/secret"}, {"POST", "/txn"},
			{"GET", "/status"}, {"GET", "/metrics"}, {"POST", "/admin/snapshot"}, {"POST", "/admin/members/9?addr=127.0.0.1:1"},
		} {
			code, body := send(r.method, r.path, auth, `{"then":[{"put":"secret","value":"x"}]}`)
			if code != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
				t.Fatalf("%s %s with Authorization %q: %d %s, want 401", r.method, r.path, auth, code, body)
			}
		}
	}
	if code, body := send("GET", "/kv/secret", "Bearer "+token, ""); code != http.StatusNotFound {
		t.Fatalf("refused writes changed the data: GET = %d %s", code, body)
	}
	if code, body := send("PUT", "/kv/secret", "Bearer "+token, "v"); code != http.StatusNoContent {
		t.Fatalf("PUT with the token: %d %s", code, body)
	}
	if code, body := send("GET", "/kv/secret", "Bearer "+token, ""); code != http.StatusOK || body != "v" {
		t.Fatalf("GET with the token: %d %s", code, body)
	}
	// Plain HTTP to the TLS port is not served.
	if resp, err := httpc.Get("http://" + n.httpAddr + "/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}
}

// TestSlowClients opens many connections that send their headers a byte at
// a time (slowloris) and holds them; a normal request must still be
// answered, and the server must cut the slow ones at ReadHeaderTimeout.
func TestSlowClients(t *testing.T) {
	const slow = 200
	// 200 stay under the default --max-conns (1024): slow clients cost a
	// goroutine each and nobody waits. Beyond the cap new connections wait
	// in the accept queue until ReadHeaderTimeout frees slots, which the
	// last part checks.
	n := startSingle(t)
	conns := make([]net.Conn, 0, slow)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < slow; i++ {
		c, err := net.DialTimeout("tcp", n.httpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	t.Logf("%d slow connections open", len(conns))
	// A normal client gets its answer: at worst it waits until the server
	// times the slow headers out (ReadHeaderTimeout, 5 s) and frees slots.
	// A fresh transport: an idle keep-alive connection from the readiness
	// poll would skip the accept queue.
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := hc.Get(n.url("/status"))
	if err != nil {
		t.Fatalf("normal request beside %d slow clients: %v", slow, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("normal request: status %d", resp.StatusCode)
	}
	t.Logf("normal request answered after %v beside %d slow clients", time.Since(start), slow)
	// The server closes a connection whose headers never finish: a read
	// ends (with the server's 408 or EOF) instead of blocking forever.
	c := conns[0]
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, err := io.WriteString(c, "a"); err != nil {
			break // closed by the server
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		_, err := c.Read(buf)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			break // EOF or reset: the server gave up on it
		}
		if err == nil {
			break // the server answered (408) and closes
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("a connection trickling its headers is still open after 30 s")
		}
	}
}

// TestConnLimit holds every slot of --max-conns with requests in progress
// (PUTs whose bodies never finish, so neither idle nor waiting for their
// header): a new connection is answered at once with a JSON 503, and is
// served once those requests end.
func TestConnLimit(t *testing.T) {
	n := startSingle(t, "--max-conns", "4")
	var conns []net.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer closeAll()
	// The readiness poll's idle keep-alive connection gives its slot to
	// the first.
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", n.httpAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(c, "PUT /kv/slow%d HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx", i); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(n.url("/status"))
	if err != nil {
		t.Fatalf("a fifth connection beside four requests in progress got no answer: %v", err)
	}
	var e struct{ Error string }
	derr := decodeErr(resp.Body, &e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || derr != nil || e.Error == "" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fifth connection: status %d, error %q (%v), Retry-After %q; want a JSON 503 with Retry-After",
			resp.StatusCode, e.Error, derr, resp.Header.Get("Retry-After"))
	}
	t.Logf("refused in %v", time.Since(start))
	closeAll()
	err = proctest.Poll(10*time.Second, func() error {
		resp, err := hc.Get(n.url("/status"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no request served after the requests in progress ended: %v", err)
	}
}
