package main

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestBearerSchemeAnyCase: the auth scheme is case-insensitive (RFC 9110),
// so "bearer" and "BEARER" work; the token itself is compared exactly.
func TestBearerSchemeAnyCase(t *testing.T) {
	h := requireToken("s3cret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for hdr, want := range map[string]int{
		"Bearer s3cret": 204, "bearer s3cret": 204, "BEARER s3cret": 204, "bEaReR  s3cret": 204,
		"Bearer S3CRET": 401, "Basic s3cret": 401, "Bearers3cret": 401, "": 401, "s3cret": 401,
	} {
		r := httptest.NewRequest("GET", "/status", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Authorization %q: %d, want %d", hdr, w.Code, want)
		}
	}
}

// TestWarnOpenAPI: listening beyond loopback without a token logs a
// warning at start; loopback, or a token, does not.
func TestWarnOpenAPI(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		warn        bool
	}{
		{"0.0.0.0:8080", "", true}, {":8080", "", true}, {"10.1.2.3:80", "", true}, {"[::]:80", "", true},
		{"example.com:80", "", true},
		{"127.0.0.1:8080", "", false}, {"127.9.9.9:1", "", false}, {"[::1]:80", "", false}, {"localhost:80", "", false},
		{"0.0.0.0:8080", "t", false},
	} {
		var buf bytes.Buffer
		warnOpenAPI(securityConfig{Token: c.token}, c.addr, slog.New(slog.NewTextHandler(&buf, nil)))
		if got := strings.Contains(buf.String(), "level=WARN"); got != c.warn {
			t.Errorf("--http %s token %q: warned %v, want %v (%q)", c.addr, c.token, got, c.warn, buf.String())
		}
	}
}
