package main

// Routing requests to shards: which shard a request belongs to, whether
// this process hosts it, and forwarding to a process that does.
//
// With --members every process hosts a replica of every shard, so nothing
// is forwarded. With --shard-map a request for a shard this process does
// not host is sent on to a host of that shard (its http_addr in the map):
// the caller's Authorization header goes with it, the hop count travels in
// X-Keel-Hops (a request that has already been forwarded maxHops times
// gets 508 instead of bouncing), and the time left of the caller's
// deadline travels in X-Keel-Timeout-Ms so the last hop never waits longer
// than the first would have. A forwarded request costs one more HTTP round
// trip on loopback or the LAN, and the forwarding process's CPU for
// copying the request and answer; reads and writes are otherwise the same.
//
// A merged scan asks every shard for the same page (a host of each remote
// shard via X-Keel-Shard) and merges the answers in key order.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keel-db/keel/client"
	"github.com/lni/dragonboat/v4"
)

const (
	// hopsHeader counts how often a request was forwarded.
	hopsHeader = "X-Keel-Hops"
	// timeoutHeader carries the milliseconds left of the caller's deadline.
	timeoutHeader = "X-Keel-Timeout-Ms"
	// shardHeader restricts a forwarded scan to one shard.
	shardHeader = "X-Keel-Shard"
	// maxHops bounds forwarding: one hop reaches a host of any shard, the
	// second only happens while a shard map is being changed.
	maxHops = 2
)

// localShard is a shard this process hosts: how to read and write it.
type localShard struct {
	id     uint64
	client *client.Client
	// writes carries PUT and DELETE /kv: a client.Batcher (group commit)
	// or, with --write-batch 1, the client itself.
	writes keyWriter
	// removed is set once this process's replica of the shard was removed
	// and its data deleted; requests for it are then forwarded.
	removed atomic.Bool
}

// hosted returns the shard if this process serves it.
func (rt *router) hosted(shard uint64) *localShard {
	if ls := rt.get(shard); ls != nil && !ls.removed.Load() {
		return ls
	}
	return nil
}

// get returns the shard if this process has a replica of it, removed or
// not.
func (rt *router) get(shard uint64) *localShard {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	return rt.local[shard]
}

// placed lists the replicas this process runs, in shard order: those
// placed at start-up and those joined since (POST /admin/shards/{id}/join).
func (rt *router) placed() []placed {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	return slices.Clone(rt.placement)
}

// add makes a replica started at runtime (a join) served here.
func (rt *router) add(p placed, ls *localShard) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.local[p.ShardID] = ls
	rt.placement = append(rt.placement, p)
	sort.Slice(rt.placement, func(i, j int) bool { return rt.placement[i].ShardID < rt.placement[j].ShardID })
}

// router knows the shard of every key and where each shard runs.
//
// Invariants: n >= 1; local holds exactly the shards in placement (those
// placed at start-up and those joined since); m is nil in --members mode,
// where local holds all n shards.
type router struct {
	n uint64
	// only is the shard every key belongs to when n is 1 (--shard-id).
	only uint64
	// mu guards local and placement, which grow when a replica joins at
	// runtime; a localShard, once in local, is never replaced.
	mu        sync.RWMutex
	local     map[uint64]*localShard
	placement []placed
	m         *shardMap
	self      uint64
	hc        *http.Client
	// scheme is this process's own API scheme; forwarded requests use it.
	scheme string
}

func newRouter(nh *dragonboat.NodeHost, cfg config) *router {
	rt := &router{
		n:      cfg.Sharding.Shards,
		local:  map[uint64]*localShard{},
		m:      cfg.Sharding.Map,
		self:   cfg.ReplicaID,
		scheme: "http",
		hc:     &http.Client{Timeout: requestTimeout + 5*time.Second},
	}
	if cfg.Security.HTTPTLSCert != "" {
		rt.scheme = "https"
	}
	if rt.n <= 1 {
		rt.only = cfg.ShardID
	}
	for _, p := range cfg.Sharding.Placement {
		rt.local[p.ShardID] = newLocalShard(nh, cfg, p.ShardID)
	}
	rt.placement = slices.Clone(cfg.Sharding.Placement)
	return rt
}

func newLocalShard(nh *dragonboat.NodeHost, cfg config, shard uint64) *localShard {
	c := client.NewClient(nh, shard)
	ls := &localShard{id: shard, client: c, writes: c}
	if cfg.WriteBatch > 1 {
		ls.writes = client.NewBatcher(c, client.BatcherOptions{MaxOps: cfg.WriteBatch, Timeout: requestTimeout})
	}
	return ls
}

// shardOf is the shard key belongs to.
func (rt *router) shardOf(key []byte) uint64 {
	if rt.n <= 1 {
		return rt.only
	}
	return shardFor(key, rt.n)
}

// shards lists every shard of the keyspace.
func (rt *router) shards() []uint64 {
	if rt.n <= 1 {
		return []uint64{rt.only}
	}
	out := make([]uint64, rt.n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// remoteAddrs are the HTTP addresses of the other hosts of shard, in the
// map's order, for forwarding: the first that answers is used.
func (rt *router) remoteAddrs(shard uint64) ([]string, error) {
	if rt.m == nil || shard == 0 || shard > uint64(len(rt.m.Shards)) {
		return nil, fmt.Errorf("%w: shard %d is not hosted here and no shard map says where it is", errUnavailable, shard)
	}
	var out []string
	for _, id := range rt.m.Shards[shard-1].Hosts {
		if id == rt.self {
			continue
		}
		if h, ok := rt.m.hostByID(id); ok {
			out = append(out, h.HTTPAddr)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: shard %d has no other host", errUnavailable, shard)
	}
	return out, nil
}

// requestContext is the deadline a request runs under: requestTimeout, or
// less when a forwarding process said less is left.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	d := requestTimeout
	if v := r.Header.Get(timeoutHeader); v != "" {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 && time.Duration(ms)*time.Millisecond < d {
			d = time.Duration(ms) * time.Millisecond
		}
	}
	return context.WithTimeout(r.Context(), d)
}

// forward sends r (with body, already read, or r.Body when body is nil) to
// a host of shard and copies the answer back.
func (s *server) forward(w http.ResponseWriter, r *http.Request, shard uint64, body []byte) {
	resp, err := s.forwardRequest(r, shard, body, "")
	if err != nil {
		s.fail(w, err)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After", "Allow"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (s *server) forwardRequest(r *http.Request, shard uint64, body []byte, onlyShard string) (*http.Response, error) {
	hops, _ := strconv.Atoi(r.Header.Get(hopsHeader))
	if hops >= maxHops {
		return nil, fmt.Errorf("%w: shard %d: request already forwarded %d times", errLoop, shard, hops)
	}
	addrs, err := s.route.remoteAddrs(shard)
	if err != nil {
		return nil, err
	}
	if body == nil && r.Body != nil && r.Body != http.NoBody {
		// Read once so the request can go to another host when the first
		// one cannot be reached.
		if body, err = io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1)); err != nil {
			return nil, fmt.Errorf("%w: reading body: %v", errBadRequest, err)
		}
		if len(body) > maxBodyBytes {
			return nil, fmt.Errorf("%w: body is over the %d byte limit", errTooLarge, maxBodyBytes)
		}
	}
	ctx, cancel := requestContext(r)
	var lastErr error
	for _, addr := range addrs {
		req, err := http.NewRequestWithContext(ctx, r.Method, s.route.scheme+"://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("%w: forward to %s: %v", errUnavailable, addr, err)
		}
		req.ContentLength = int64(len(body))
		for _, h := range []string{"Authorization", "Content-Type"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		req.Header.Set(hopsHeader, strconv.Itoa(hops+1))
		if dl, ok := ctx.Deadline(); ok {
			req.Header.Set(timeoutHeader, strconv.FormatInt(max(1, time.Until(dl).Milliseconds()), 10))
		}
		if onlyShard != "" {
			req.Header.Set(shardHeader, onlyShard)
		}
		resp, err := s.route.hc.Do(req)
		if err == nil {
			resp.Body = cancelOnClose{resp.Body, cancel}
			s.metrics.forwarded.Inc()
			return resp, nil
		}
		lastErr = err
		// Only a host that could not be reached at all is skipped: a
		// request that got there may have been applied, and is not sent
		// twice.
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			break
		}
	}
	cancel()
	return nil, fmt.Errorf("%w: forward shard %d: %v", errUnavailable, shard, lastErr)
}

// cancelOnClose releases a forwarded request's context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
