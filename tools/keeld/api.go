package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keel-db/keel/client"
	"github.com/keel-db/keel/host"
	"github.com/keel-db/keel/sm"
	"github.com/lni/dragonboat/v4"
)

// scanPair is one key and value in a scan response. Strings by default;
// with ?encoding=base64 the fields hold base64 (for binary keys and values
// that are not UTF-8, which JSON strings cannot carry).
type scanPair struct {
	Key   any `json:"key"`
	Value any `json:"value"`
}

type scanResponse struct {
	Pairs   []scanPair `json:"pairs"`
	More    bool       `json:"more"`
	NextKey any        `json:"next_key,omitempty"`
}

func (s *server) handleScan(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	stale, err := boolParam(q, "stale")
	if err != nil {
		s.fail(w, err)
		return
	}
	enc := q.Get("encoding")
	if enc != "" && enc != "base64" {
		s.fail(w, fmt.Errorf("%w: encoding=%q: only base64 is supported", errBadRequest, enc))
		return
	}
	var sq client.ScanQuery
	for _, p := range []struct {
		name string
		dst  *[]byte
	}{{"prefix", &sq.Prefix}, {"start", &sq.Start}, {"end", &sq.End}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		b := []byte(v)
		if enc == "base64" {
			if b, err = decodeBase64(p.name, v); err != nil {
				s.fail(w, err)
				return
			}
		}
		if len(b) > sm.MaxKeySize {
			s.fail(w, fmt.Errorf("%w: %s of %d bytes is over the %d byte limit", errBadRequest, p.name, len(b), sm.MaxKeySize))
			return
		}
		if len(b) > 0 {
			*p.dst = b
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > sm.MaxScanLimit {
			s.fail(w, fmt.Errorf("%w: limit=%q must be a number from 1 to %d", errBadRequest, l, sm.MaxScanLimit))
			return
		}
		sq.Limit = n
	}
	var res client.ScanResult
	err = s.metrics.timeRead("scan", stale, func() error {
		res, err = s.scanShards(r, sq, stale, enc == "base64")
		return err
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	conv := func(b []byte) any { return string(b) }
	if enc == "base64" {
		conv = func(b []byte) any { return b } // encoding/json writes []byte as base64
	} else if err := checkUTF8(res); err != nil {
		s.fail(w, err)
		return
	}
	out := scanResponse{Pairs: make([]scanPair, len(res.Pairs)), More: res.More}
	for i, kv := range res.Pairs {
		out.Pairs[i] = scanPair{Key: conv(kv.Key), Value: conv(kv.Value)}
	}
	if res.More {
		out.NextKey = conv(res.NextKey)
	}
	writeJSON(w, http.StatusOK, out)
}

// checkUTF8 refuses a scan result a JSON string cannot carry exactly:
// encoding/json would write U+FFFD for each byte that is not UTF-8, so two
// keys could print alike and a next_key sent back as start would sort
// before the real key and return the same page forever.
func checkUTF8(res client.ScanResult) error {
	bad := func(b []byte) bool { return !utf8.Valid(b) }
	for _, kv := range res.Pairs {
		if bad(kv.Key) || bad(kv.Value) {
			return fmt.Errorf("%w: the scan reached key %q, whose key or value is not UTF-8 and cannot be a JSON string; scan with encoding=base64", errBadRequest, kv.Key)
		}
	}
	if res.More && bad(res.NextKey) {
		return fmt.Errorf("%w: the next key %q is not UTF-8 and cannot be a JSON string; scan with encoding=base64", errBadRequest, res.NextKey)
	}
	return nil
}

// txnRequest is POST /txn's body. Each condition sets exactly one of
// Absent, Exists and Equals; each operation sets exactly one of Put (with
// Value) and Delete.
// With Encoding "base64" every key, value and "equals" is base64
// (standard alphabet, padded), for binary data JSON strings cannot carry.
type txnRequest struct {
	If       []txnCond `json:"if"`
	Then     []txnOp   `json:"then"`
	Encoding string    `json:"encoding"`
}

type txnCond struct {
	Key    *string `json:"key"`
	Absent bool    `json:"absent"`
	Exists bool    `json:"exists"`
	Equals *string `json:"equals"`
}

type txnOp struct {
	Put    *string `json:"put"`
	Value  *string `json:"value"`
	Delete *string `json:"delete"`
}

type txnResponse struct {
	Succeeded bool `json:"succeeded"`
	// FailedCond is the position in "if" of the first condition that did
	// not hold; present only when Succeeded is false.
	FailedCond *int `json:"failed_cond,omitempty"`
}

// decodeTxn parses and checks a txn body. Nothing here panics on any input:
// unknown fields, a name given twice, text that is not UTF-8, trailing
// data and every shape error are refused.
func decodeTxn(body []byte) ([]client.Cond, []client.TxnOp, error) {
	if err := checkJSONText(body); err != nil {
		return nil, nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req txnRequest
	if err := dec.Decode(&req); err != nil {
		return nil, nil, jsonDecodeError("txn body", err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: txn body has data after the JSON object", errBadRequest)
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return nil, nil, fmt.Errorf("%w: txn body must be a JSON object, not null", errBadRequest)
	}
	bin := func(where, s string) ([]byte, error) { return []byte(s), nil }
	switch req.Encoding {
	case "":
	case "base64":
		bin = decodeBase64
	default:
		return nil, nil, fmt.Errorf(`%w: txn "encoding": %q: only "base64" is supported`, errBadRequest, req.Encoding)
	}
	if len(req.Then) == 0 {
		return nil, nil, fmt.Errorf(`%w: txn needs at least one operation in "then"`, errBadRequest)
	}
	if n := len(req.If) + len(req.Then); n > sm.MaxTxnItems {
		return nil, nil, fmt.Errorf("%w: txn has %d conditions and operations, limit %d", errBadRequest, n, sm.MaxTxnItems)
	}
	conds := make([]client.Cond, 0, len(req.If))
	for i, c := range req.If {
		where := fmt.Sprintf("if[%d]", i)
		if c.Key == nil {
			return nil, nil, fmt.Errorf(`%w: %s has no "key"`, errBadRequest, where)
		}
		k, err := bin(where+".key", *c.Key)
		if err != nil {
			return nil, nil, err
		}
		if err := checkKey(where+".key", k); err != nil {
			return nil, nil, err
		}
		kinds := 0
		var cond client.Cond
		if c.Absent {
			kinds++
			cond = client.IfAbsent(k)
		}
		if c.Exists {
			kinds++
			cond = client.IfExists(k)
		}
		if c.Equals != nil {
			kinds++
			v, err := bin(where+".equals", *c.Equals)
			if err != nil {
				return nil, nil, err
			}
			if err := checkValue(v); err != nil {
				return nil, nil, err
			}
			cond = client.IfEquals(k, v)
		}
		if kinds != 1 {
			return nil, nil, fmt.Errorf(`%w: %s must set exactly one of "absent": true, "exists": true, "equals": "value"`, errBadRequest, where)
		}
		conds = append(conds, cond)
	}
	ops := make([]client.TxnOp, 0, len(req.Then))
	for i, o := range req.Then {
		where := fmt.Sprintf("then[%d]", i)
		switch {
		case o.Put != nil && o.Delete == nil:
			if o.Value == nil {
				return nil, nil, fmt.Errorf(`%w: %s puts without a "value"`, errBadRequest, where)
			}
			k, err := bin(where+".put", *o.Put)
			if err != nil {
				return nil, nil, err
			}
			v, err := bin(where+".value", *o.Value)
			if err != nil {
				return nil, nil, err
			}
			if err := checkKey(where+".put", k); err != nil {
				return nil, nil, err
			}
			if err := checkValue(v); err != nil {
				return nil, nil, err
			}
			ops = append(ops, client.PutOp(k, v))
		case o.Delete != nil && o.Put == nil:
			if o.Value != nil {
				return nil, nil, fmt.Errorf(`%w: %s deletes but has a "value"`, errBadRequest, where)
			}
			k, err := bin(where+".delete", *o.Delete)
			if err != nil {
				return nil, nil, err
			}
			if err := checkKey(where+".delete", k); err != nil {
				return nil, nil, err
			}
			ops = append(ops, client.DeleteOp(k))
		default:
			return nil, nil, fmt.Errorf(`%w: %s must set exactly one of "put" (with "value") and "delete"`, errBadRequest, where)
		}
	}
	return conds, ops, nil
}

func (s *server) handleTxn(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxBodyBytes)
	if err != nil {
		s.fail(w, err)
		return
	}
	conds, ops, err := decodeTxn(body)
	if err != nil {
		s.fail(w, err)
		return
	}
	shard, err := s.txnShard(conds, ops)
	if err != nil {
		s.fail(w, err)
		return
	}
	ls := s.route.hosted(shard)
	if ls == nil {
		s.forward(w, r, shard, body)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	var res client.TxnResult
	err = s.metrics.timeProposal("txn", func() error {
		res, err = ls.client.Txn(ctx, conds, ops)
		return err
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	out := txnResponse{Succeeded: res.Succeeded}
	if !res.Succeeded {
		out.FailedCond = &res.FailedCond
	}
	writeJSON(w, http.StatusOK, out)
}

// replicaIDFromPath parses the {id} of /admin/members/{id} and
// /admin/shards/{shard}/members/{id}.
func replicaIDFromPath(r *http.Request) (uint64, error) {
	p := r.URL.EscapedPath()
	s := p[strings.LastIndex(p, "/members/")+len("/members/"):]
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: replica ID %q must be a number above 0", errBadRequest, s)
	}
	return id, nil
}

func (s *server) handleAddMember(w http.ResponseWriter, r *http.Request) {
	id, err := replicaIDFromPath(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	shard, ok := s.adminShard(w, r)
	if !ok {
		return
	}
	// addr may come in the query or as a form body ("addr=host:port",
	// whatever the Content-Type, so plain curl -d works).
	body, err := readBody(w, r, 4<<10)
	if err != nil {
		s.fail(w, err)
		return
	}
	form, err := url.ParseQuery(strings.TrimSpace(string(body)))
	if err != nil {
		s.fail(w, fmt.Errorf("%w: body must be addr=host:port: %v", errBadRequest, err))
		return
	}
	addr := r.URL.Query().Get("addr")
	if addr == "" {
		addr = form.Get("addr")
	}
	if err := host.CheckHostPort(addr, false); err != nil {
		s.fail(w, fmt.Errorf("%w: addr: %v", errBadRequest, err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if err := s.checkAdd(ctx, shard, id, addr); err != nil {
		s.fail(w, fmt.Errorf("add replica %d at %s: %w", id, addr, err))
		return
	}
	if err := s.nh.SyncRequestAddReplica(ctx, shard, id, addr, 0); err != nil {
		s.fail(w, fmt.Errorf("add replica %d at %s: %w", id, addr, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"shard": shard, "added": id, "addr": addr})
}

func (s *server) handleDeleteMember(w http.ResponseWriter, r *http.Request) {
	id, err := replicaIDFromPath(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	shard, ok := s.adminShard(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	voting, err := s.checkDelete(ctx, shard, id)
	if err != nil {
		s.fail(w, fmt.Errorf("delete replica %d: %w", id, err))
		return
	}
	// This process's own replica cannot be trusted to hear of its own
	// removal (selfremove.go).
	ls := s.route.hosted(shard)
	own := ls != nil && id == s.replicaOf(shard)
	if own {
		err = s.removeOwnReplica(ctx, shard, id, voting)
	} else {
		err = s.nh.SyncRequestDeleteReplica(ctx, shard, id, 0)
	}
	if err != nil {
		s.fail(w, fmt.Errorf("delete replica %d: %w", id, err))
		return
	}
	out := map[string]any{"shard": shard, "removed": id}
	// This process's own replica: it is no longer a member, so its Raft
	// data and its tablet go too, and the disk comes back.
	if own && s.removeReplica != nil {
		ls.removed.Store(true)
		if s.metrics != nil {
			s.metrics.compactors.Remove(shard, id) // its log is gone
		}
		s.svc.stopShard(shard) // and its timer and compactor loops
		// The removal may have used up the request's deadline; the
		// cleanup has its own.
		cctx, ccancel := context.WithTimeout(context.Background(), requestTimeout)
		defer ccancel()
		freed, err := s.removeReplica(cctx, shard, id)
		if err != nil {
			s.log.Warn("removed replica's data not deleted", "shard", shard, "replica", id, "err", err)
			out["cleanup_error"] = err.Error()
		} else {
			out["freed_bytes"] = freed
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	shard, ok := s.adminShard(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	idx, err := s.snapshotVia(ctx, shard)
	if errors.Is(err, dragonboat.ErrRejected) {
		s.fail(w, fmt.Errorf("snapshot: %w: nothing was applied since the last snapshot", err))
		return
	}
	if err != nil {
		s.fail(w, fmt.Errorf("snapshot: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"shard": shard, "index": idx})
}

// exportTimeout bounds POST /admin/export: the image is written whole
// (about the state's size at disk speed), so it gets far longer than an
// ordinary request.
const exportTimeout = 30 * time.Minute

// handleExport writes an exported snapshot, exact at its index, under
// --export-dir and answers with its index and directory (see host.Export;
// restore it with keelctl import). The directory comes from the command
// line, never from the request, so the API cannot write elsewhere.
func (s *server) handleExport(w http.ResponseWriter, r *http.Request) {
	shard, ok := s.adminShard(w, r)
	if !ok {
		return
	}
	// The server's write deadline suits ordinary requests; an export of a
	// large state outlives it.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(exportTimeout + time.Minute))
	ctx, cancel := context.WithTimeout(r.Context(), exportTimeout)
	defer cancel()
	idx, path, err := host.Export(ctx, s.nh, shard, s.cfg.ExportDir)
	if errors.Is(err, dragonboat.ErrRejected) {
		s.fail(w, fmt.Errorf("export: %w: nothing was applied since the last snapshot or export, so there is nothing new to export", err))
		return
	}
	if err != nil {
		s.fail(w, fmt.Errorf("export: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"shard": shard, "index": idx, "path": path})
}

// adminShard is the shard an admin request is for: {shard} in
// /admin/shards/{shard}/..., else the first shard this process hosts
// (cfg.ShardID: the single-shard endpoints). A shard hosted elsewhere is
// forwarded, and ok is false.
func (s *server) adminShard(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, "/admin/shards/") {
		return s.cfg.ShardID, true
	}
	rest := strings.TrimPrefix(p, "/admin/shards/")
	idStr, _, _ := strings.Cut(rest, "/")
	shard, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil || shard == 0 || shard > s.route.n && s.route.n > 1 {
		s.fail(w, fmt.Errorf("%w: shard %q: shards are numbered 1 to %d", errNotFound, idStr, max(s.route.n, s.cfg.ShardID)))
		return 0, false
	}
	if s.route.hosted(shard) == nil {
		s.forward(w, r, shard, nil)
		return 0, false
	}
	return shard, true
}

// replicaOf is this process's replica ID in shard (0 if none).
func (s *server) replicaOf(shard uint64) uint64 {
	for _, p := range s.route.placed() {
		if p.ShardID == shard {
			return p.ReplicaID
		}
	}
	return 0
}
