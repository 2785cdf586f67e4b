package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// pprofEnv names the environment variable that turns on the profiling
// listener. It is an environment variable, not a flag, because it is for
// the people measuring keeld (bench/cluster sets it per process), not part
// of the host's configuration.
const pprofEnv = "KEEL_PPROF"

// startPprof serves net/http/pprof on the loopback address in KEEL_PPROF,
// apart from the API listener: profiles expose memory contents and cost
// CPU, so they never share the API's port, token or TLS. An address that
// is not a loopback IP is refused, as is one that cannot be bound; both
// are reported and keeld runs on without profiling. It returns a func that
// closes the listener.
func startPprof(logger *slog.Logger) func() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return func() {}
	}
	if err := checkLoopback(addr); err != nil {
		logger.Warn("profiling listener refused", "env", pprofEnv, "err", err)
		return func() {}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Warn("profiling listener refused", "env", pprofEnv, "err", err)
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// A CPU profile or trace runs for its ?seconds=; the write timeout
	// must outlast the longest one anybody asks for here.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Minute}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("profiling on", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }
}

// checkLoopback accepts host:port whose host is a loopback IP literal.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: only a loopback IP (127.0.0.0/8, ::1) may serve profiles", addr)
	}
	return nil
}
