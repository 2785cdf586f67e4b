package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
)

// requestTimeout bounds each proposal or linearizable read. Dragonboat
// needs a deadline; a shard without a leader answers 503 after it.
const requestTimeout = 5 * time.Second

// maxBodyBytes bounds a request body: the largest command the state machine
// takes plus room for JSON framing. Larger bodies get 413.
const maxBodyBytes = sm.MaxCommandSize + 64<<10

// server is keeld's HTTP API over one replica. It holds no mutable state of
// its own; everything it touches is safe for concurrent use.
type server struct {
	nh     *dragonboat.NodeHost
	client *client.Client
	// writes carries PUT and DELETE /kv: a client.Batcher (group commit)
	// or, with --write-batch 1, the client itself.
	writes keyWriter
	// route finds each key's shard and how to reach it; the client and
	// writes above are its first placed shard's.
	route *router
	// removeReplica deletes a removed replica's Raft data and tablet
	// (host.Host.RemoveReplica); nil in tests that build a bare server.
	removeReplica func(ctx context.Context, shardID, replicaID uint64) (int64, error)
	// deletions is the NodeHost's event listener, which tells when one of
	// this process's replicas applied its own removal (selfremove.go);
	// nil in tests that build a bare server.
	deletions *deletions
	factory   *host.Factory
	svc       *services
	cfg       config
	log       *slog.Logger
	metrics   *metrics
	started   time.Time
	// disk refuses writes while the disk is over its reserve; nil in
	// tests that build a server without one.
	disk *diskGuard
	// placeMu serialises POST /admin/shards/{id}/join, so two joins of
	// one shard never both start a replica; it guards no data of its own.
	placeMu sync.Mutex
}

func newServer(nh *dragonboat.NodeHost, f *host.Factory, svc *services, cfg config, logger *slog.Logger) *server {
	s := &server{
		nh:      nh,
		route:   newRouter(nh, cfg),
		factory: f,
		svc:     svc,
		cfg:     cfg,
		log:     logger,
		started: time.Now(),
	}
	first := s.route.get(cfg.ShardID)
	s.client, s.writes = first.client, first.writes
	s.metrics = newMetrics(s)
	return s
}

// keyWriter is what the single-key write endpoints need; client.Client and
// client.Batcher both provide it.
type keyWriter interface {
	Put(ctx context.Context, key, value []byte) error
	Delete(ctx context.Context, key []byte) error
}

// route is one endpoint: its metrics label and handlers by method.
type route struct {
	name    string
	methods map[string]http.HandlerFunc
}

// match finds the route for a path. Routing is done by hand rather than by
// http.ServeMux because keys may contain "//" or "..", which ServeMux would
// redirect to a cleaned path, and because every error, 404 and 405
// included, must be JSON.
func (s *server) match(path string) route {
	switch {
	case strings.HasPrefix(path, "/kv/"):
		return route{"kv", map[string]http.HandlerFunc{
			http.MethodGet: s.handleGet, http.MethodHead: s.handleGet,
			http.MethodPut: s.handlePut, http.MethodDelete: s.handleDelete,
		}}
	case path == "/kv":
		return route{"scan", map[string]http.HandlerFunc{http.MethodGet: s.handleScan}}
	case path == "/txn":
		return route{"txn", map[string]http.HandlerFunc{http.MethodPost: s.handleTxn}}
	case path == "/status":
		return route{"status", map[string]http.HandlerFunc{http.MethodGet: s.handleStatus}}
	case path == "/metrics":
		return route{"metrics", map[string]http.HandlerFunc{http.MethodGet: s.metrics.handler.ServeHTTP}}
	case path == "/admin/snapshot":
		return route{"admin_snapshot", map[string]http.HandlerFunc{http.MethodPost: s.handleSnapshot}}
	case path == "/admin/export":
		return route{"admin_export", map[string]http.HandlerFunc{http.MethodPost: s.handleExport}}
	case strings.HasPrefix(path, "/admin/shards/"):
		return s.matchShardAdmin(path)
	case strings.HasPrefix(path, "/admin/members/"):
		return route{"admin_members", map[string]http.HandlerFunc{
			http.MethodPost: s.handleAddMember, http.MethodDelete: s.handleDeleteMember,
		}}
	default:
		return route{name: "unknown"}
	}
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := s.match(r.URL.EscapedPath())
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() { s.metrics.requests.WithLabelValues(rt.name, strconv.Itoa(rec.code)).Inc() }()
	if rt.methods == nil {
		writeError(rec, http.StatusNotFound, fmt.Errorf("%w: no endpoint at %s", errNotFound, r.URL.Path))
		return
	}
	h, ok := rt.methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(rt.methods))
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete} {
			if rt.methods[m] != nil {
				allowed = append(allowed, m)
			}
		}
		rec.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(rec, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
		return
	}
	if err := checkQuery(rt.name, r.Method, r.URL.RawQuery); err != nil {
		s.fail(rec, err)
		return
	}
	if writesDisk(rt.name, r.Method) {
		if err := s.disk.refuse(); err != nil {
			s.fail(rec, err)
			return
		}
	}
	h(rec, r)
}

// matchShardAdmin routes /admin/shards/{id}/snapshot, .../export and
// .../members/{replica} to the same handlers as the single-shard admin
// endpoints; the handlers read the shard from the path (adminShard).
// .../join and .../hash act on this process's own replica and are never
// forwarded (shardjoin.go).
func (s *server) matchShardAdmin(path string) route {
	rest := strings.TrimPrefix(path, "/admin/shards/")
	_, sub, _ := strings.Cut(rest, "/")
	switch {
	case sub == "snapshot":
		return route{"admin_snapshot", map[string]http.HandlerFunc{http.MethodPost: s.handleSnapshot}}
	case sub == "export":
		return route{"admin_export", map[string]http.HandlerFunc{http.MethodPost: s.handleExport}}
	case strings.HasPrefix(sub, "members/"):
		return route{"admin_members", map[string]http.HandlerFunc{
			http.MethodPost: s.handleAddMember, http.MethodDelete: s.handleDeleteMember,
		}}
	case sub == "join":
		return route{"admin_join", map[string]http.HandlerFunc{http.MethodPost: s.handleJoin}}
	case sub == "hash":
		return route{"admin_hash", map[string]http.HandlerFunc{http.MethodGet: s.handleHash}}
	}
	return route{name: "unknown"}
}

// statusRecorder remembers the status code for the request counter.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// keyFromPath returns the URL-unescaped path after prefix.
func keyFromPath(r *http.Request, prefix string) ([]byte, error) {
	raw := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	k, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: bad escape in key: %v", errBadRequest, err)
	}
	if err := checkKey("key", []byte(k)); err != nil {
		return nil, err
	}
	return []byte(k), nil
}

func checkKey(what string, k []byte) error {
	if len(k) == 0 {
		return fmt.Errorf("%w: empty %s", errBadRequest, what)
	}
	if len(k) > sm.MaxKeySize {
		return fmt.Errorf("%w: %s of %d bytes is over the %d byte limit", errBadRequest, what, len(k), sm.MaxKeySize)
	}
	return nil
}

func checkValue(v []byte) error {
	if len(v) > sm.MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes is over the %d byte limit", errTooLarge, len(v), sm.MaxValueSize)
	}
	return nil
}

// readBody reads a body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: body of %d bytes is over the %d byte limit", errTooLarge, r.ContentLength, limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fmt.Errorf("%w: body is over the %d byte limit", errTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %v", errBadRequest, err)
	}
	return b, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q is not true or false", errBadRequest, name, v)
	}
	return b, nil
}

func (s *server) handlePut(w http.ResponseWriter, r *http.Request) {
	key, err := keyFromPath(r, "/kv/")
	if err != nil {
		s.fail(w, err)
		return
	}
	ls := s.localFor(w, r, key)
	if ls == nil {
		return
	}
	val, err := readBody(w, r, maxBodyBytes)
	if err == nil {
		err = checkValue(val)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	err = s.metrics.timeProposal("put", func() error { return ls.writes.Put(ctx, key, val) })
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) handleDelete(w http.ResponseWriter, r *http.Request) {
	key, err := keyFromPath(r, "/kv/")
	if err != nil {
		s.fail(w, err)
		return
	}
	ls := s.localFor(w, r, key)
	if ls == nil {
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	err = s.metrics.timeProposal("delete", func() error { return ls.writes.Delete(ctx, key) })
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) handleGet(w http.ResponseWriter, r *http.Request) {
	key, err := keyFromPath(r, "/kv/")
	if err != nil {
		s.fail(w, err)
		return
	}
	ls := s.localFor(w, r, key)
	if ls == nil {
		return
	}
	stale, err := boolParam(r.URL.Query(), "stale")
	if err != nil {
		s.fail(w, err)
		return
	}
	var val []byte
	var found bool
	err = s.metrics.timeRead("get", stale, func() error {
		if stale {
			val, found, err = ls.client.StaleGet(key)
			return err
		}
		ctx, cancel := requestContext(r)
		defer cancel()
		val, found, err = ls.client.Get(ctx, key)
		return err
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("%w: key %q", errNotFound, key))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(val)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(val)
	}
}

// localFor returns the local shard key belongs to, or forwards the request
// to a host of that shard and returns nil.
func (s *server) localFor(w http.ResponseWriter, r *http.Request, key []byte) *localShard {
	shard := s.route.shardOf(key)
	if ls := s.route.hosted(shard); ls != nil {
		return ls
	}
	s.forward(w, r, shard, nil)
	return nil
}

// fail writes err as a JSON error with the status it maps to.
func (s *server) fail(w http.ResponseWriter, err error) {
	code := statusFor(err)
	if code >= 500 && code != http.StatusServiceUnavailable && code != http.StatusInsufficientStorage {
		s.log.Error("request failed", "err", err)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, code, err)
}

// statusFor maps an error to an HTTP status. Anything that says "the shard
// cannot serve this right now" is 503 so clients retry; errDiskFull is 507.
// Every error Dragonboat exports has a deliberate class here (the test reads
// Dragonboat's source to keep it so): 503 for the temporary ones, the
// deadline ones (ErrTimeoutTooSmall, ErrInvalidDeadline: the request's time
// ran out) and a replica that is closing, removed or not started; 500 for
// those that mean a bug or a misconfigured host (ErrInvalidSession,
// ErrDeadlineNotSet, ErrShardAlreadyExist, ...).
func statusFor(err error) int {
	switch {
	case errors.Is(err, errBadRequest),
		errors.Is(err, sm.ErrInvalidCommand),
		errors.Is(err, dragonboat.ErrInvalidAddress),
		errors.Is(err, dragonboat.ErrInvalidTarget):
		return http.StatusBadRequest
	case errors.Is(err, errCrossShard):
		return http.StatusBadRequest
	case errors.Is(err, errLoop):
		return http.StatusLoopDetected
	case errors.Is(err, errUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	case errors.Is(err, errTooLarge), errors.Is(err, dragonboat.ErrPayloadTooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errDiskFull):
		return http.StatusInsufficientStorage
	case errors.Is(err, dragonboat.ErrRejected):
		return http.StatusConflict
	case dragonboat.IsTempError(err),
		errors.Is(err, dragonboat.ErrShardNotInitialized),
		errors.Is(err, dragonboat.ErrShardNotFound),
		errors.Is(err, dragonboat.ErrReplicaRemoved),
		errors.Is(err, dragonboat.ErrLogDBNotCreatedOrClosed),
		errors.Is(err, dragonboat.ErrCanceled),
		errors.Is(err, dragonboat.ErrTimeoutTooSmall),
		errors.Is(err, dragonboat.ErrInvalidDeadline),
		errors.Is(err, sm.ErrClosed),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":"encoding response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
