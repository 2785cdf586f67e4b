package main

// Transport security and request limits: mutual TLS for Raft, TLS and a
// bearer token for the HTTP API, and a cap on concurrent HTTP connections.
//
// Flags (all optional; off by default, keeld then listens on loopback):
//
//	--raft-tls-ca/--raft-tls-cert/--raft-tls-key  all three or none; every
//	    replica presents a certificate signed by the CA and accepts only
//	    peers that do (Dragonboat's NodeHostConfig.MutualTLS).
//	--http-tls-cert/--http-tls-key                both or none.
//	--token or --token-file                       one or none; when set every
//	    request must carry "Authorization: Bearer <token>", else 401 and
//	    nothing is read or changed. Compared in constant time.
//	--max-conns                                   open HTTP connections; at
//	    the cap the longest-idle connection is closed for a new one, else
//	    one a second without a request header, else the new one gets a
//	    503 (conns.go).

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"

	dbconfig "github.com/lni/dragonboat/v4/config"
)

// defaultMaxConns bounds open HTTP connections. Each costs a goroutine and
// buffers; at the cap idle and silent connections make room for new ones
// (conns.go). Generous for a reference host's clients.
const defaultMaxConns = 1024

// securityConfig is the security part of keeld's command line.
//
// Invariants after check: the three Raft TLS paths are all set or all
// empty; the two HTTP TLS paths likewise; Token is the token to require
// (read from TokenFile when that was given) or empty; MaxConns >= 1.
type securityConfig struct {
	RaftTLSCA, RaftTLSCert, RaftTLSKey string
	HTTPTLSCert, HTTPTLSKey            string
	Token                              string
	TokenFile                          string
	MaxConns                           int
}

func addSecurityFlags(fs *flag.FlagSet, s *securityConfig) {
	fs.StringVar(&s.RaftTLSCA, "raft-tls-ca", "", "CA certificate (PEM) for mutual TLS between replicas; needs --raft-tls-cert and --raft-tls-key")
	fs.StringVar(&s.RaftTLSCert, "raft-tls-cert", "", "this replica's certificate (PEM) for Raft mutual TLS")
	fs.StringVar(&s.RaftTLSKey, "raft-tls-key", "", "this replica's private key (PEM) for Raft mutual TLS")
	fs.StringVar(&s.HTTPTLSCert, "http-tls-cert", "", "serve the HTTP API over TLS with this certificate (PEM); needs --http-tls-key")
	fs.StringVar(&s.HTTPTLSKey, "http-tls-key", "", "private key (PEM) for --http-tls-cert")
	fs.StringVar(&s.Token, "token", "", "require \"Authorization: Bearer TOKEN\" on every HTTP request (prefer --token-file: flags show in ps)")
	fs.StringVar(&s.TokenFile, "token-file", "", "read the bearer token from this file (surrounding whitespace is ignored)")
	fs.IntVar(&s.MaxConns, "max-conns", defaultMaxConns, "most open HTTP connections; at the cap idle ones are closed for new ones, else new ones get 503")
}

// check validates the security flags and loads the token file. Errors wrap
// errUsage.
func (s *securityConfig) check() error {
	n := 0
	for _, p := range []string{s.RaftTLSCA, s.RaftTLSCert, s.RaftTLSKey} {
		if p != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		return fmt.Errorf("%w: --raft-tls-ca, --raft-tls-cert and --raft-tls-key go together", errUsage)
	}
	if (s.HTTPTLSCert == "") != (s.HTTPTLSKey == "") {
		return fmt.Errorf("%w: --http-tls-cert and --http-tls-key go together", errUsage)
	}
	if s.HTTPTLSCert != "" {
		if _, err := tls.LoadX509KeyPair(s.HTTPTLSCert, s.HTTPTLSKey); err != nil {
			return fmt.Errorf("%w: --http-tls-cert/--http-tls-key: %v", errUsage, err)
		}
	}
	if s.Token != "" && s.TokenFile != "" {
		return fmt.Errorf("%w: --token and --token-file exclude each other", errUsage)
	}
	if s.TokenFile != "" {
		b, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return fmt.Errorf("%w: --token-file: %v", errUsage, err)
		}
		s.Token = strings.TrimSpace(string(b))
		if s.Token == "" {
			return fmt.Errorf("%w: --token-file %s is empty", errUsage, s.TokenFile)
		}
	}
	if s.MaxConns < 1 {
		return fmt.Errorf("%w: --max-conns must be at least 1", errUsage)
	}
	return nil
}

// applyRaftTLS turns on Dragonboat's mutual TLS when configured.
func (s securityConfig) applyRaftTLS(nhc *dbconfig.NodeHostConfig) {
	if s.RaftTLSCA == "" {
		return
	}
	nhc.MutualTLS = true
	nhc.CAFile, nhc.CertFile, nhc.KeyFile = s.RaftTLSCA, s.RaftTLSCert, s.RaftTLSKey
}

// httpListener wraps ln with TLS, when configured, and the connection
// cap. The cap is outermost so it sees the same net.Conn values as
// http.Server's ConnState hook, which the caller must set to the limiter's.
func (s securityConfig) httpListener(ln net.Listener) (*connLimiter, error) {
	if s.HTTPTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.HTTPTLSCert, s.HTTPTLSKey)
		if err != nil {
			return nil, fmt.Errorf("load --http-tls-cert/--http-tls-key: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	return newConnLimiter(ln, s.MaxConns), nil
}

// requireToken refuses, with 401 and before anything else runs, every
// request that does not carry the token. Both sides are hashed first so the
// constant-time comparison does not leak the token's length either.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearerToken(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keeld"`)
			writeError(w, http.StatusUnauthorized, fmt.Errorf("%w: missing or wrong bearer token", errUnauthorized))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the credentials of an "Authorization: Bearer X"
// header. The scheme is case-insensitive (RFC 9110 section 11.1), so
// "bearer X" works too.
func bearerToken(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(cred, " "), true
}

// warnOpenAPI logs a warning when the HTTP API listens beyond loopback
// without a token: anyone who can reach the port can then read, write and
// change membership.
func warnOpenAPI(s securityConfig, httpAddr string, logger *slog.Logger) {
	if s.Token != "" {
		return
	}
	host, _, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return // parseFlags refused it already
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return
	}
	logger.Warn("the HTTP API listens beyond loopback without --token or --token-file: anyone who reaches it can read, write and change membership", "http", httpAddr)
}
