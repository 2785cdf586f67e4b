package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/keel-db/keel/client"
)

// scanShards serves a scan over every shard and merges the pages in key
// order. Each shard is asked for the same page (sq.Limit keys from sq's
// start); the merged page is the first sq.Limit keys of the union, which
// are the first sq.Limit keys overall because every shard contributed its
// own first sq.Limit. When anything is left (a page was cut, or a shard
// said more), next_key is the smallest key after the last one returned, so
// paging never repeats or skips a key. A request carrying X-Keel-Shard
// (a forwarded piece of another process's merge) scans that one shard.
func (s *server) scanShards(r *http.Request, sq client.ScanQuery, stale, b64 bool) (client.ScanResult, error) {
	if v := r.Header.Get(shardHeader); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil || s.route.hosted(id) == nil {
			return client.ScanResult{}, fmt.Errorf("%w: %s %q is not a shard hosted here", errUnavailable, shardHeader, v)
		}
		return s.scanLocal(r, s.route.hosted(id), sq, stale)
	}
	shards := s.route.shards()
	if len(shards) == 1 {
		if ls := s.route.hosted(shards[0]); ls != nil {
			return s.scanLocal(r, ls, sq, stale)
		}
	}
	limit := sq.Limit
	if limit <= 0 {
		limit = defaultScanLimit
	}
	var all []client.KV
	more := false
	for _, id := range shards {
		var page client.ScanResult
		var err error
		if ls := s.route.hosted(id); ls != nil {
			page, err = s.scanLocal(r, ls, sq, stale)
		} else {
			page, err = s.scanRemote(r, id, b64)
		}
		if err != nil {
			return client.ScanResult{}, fmt.Errorf("scan shard %d: %w", id, err)
		}
		all = append(all, page.Pairs...)
		more = more || page.More
	}
	sort.Slice(all, func(i, j int) bool { return bytes.Compare(all[i].Key, all[j].Key) < 0 })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	res := client.ScanResult{Pairs: all, More: more}
	if more && len(all) > 0 {
		res.NextKey = append(slices.Clone(all[len(all)-1].Key), 0)
	} else if more {
		// Every shard said more but returned nothing: cannot happen with a
		// positive limit; report no more rather than loop.
		res.More = false
	}
	return res, nil
}

// defaultScanLimit is the page size when the request names none; the
// state machine's default.
const defaultScanLimit = 1000

func (s *server) scanLocal(r *http.Request, ls *localShard, sq client.ScanQuery, stale bool) (client.ScanResult, error) {
	if stale {
		return ls.client.StaleScan(sq)
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	return ls.client.Scan(ctx, sq)
}

// remotePage is a scan answer from another keeld: strings, or base64
// strings with encoding=base64.
type remotePage struct {
	Pairs []struct {
		Key   json.RawMessage `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"pairs"`
	More bool `json:"more"`
}

// scanRemote asks a host of shard id for the same page, restricted to that
// shard, and decodes its answer.
func (s *server) scanRemote(r *http.Request, id uint64, b64 bool) (client.ScanResult, error) {
	resp, err := s.forwardRequest(r, id, nil, strconv.FormatUint(id, 10))
	if err != nil {
		return client.ScanResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return client.ScanResult{}, fmt.Errorf("%w: reading shard %d's page: %v", errUnavailable, id, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.Unmarshal(body, &eb)
		msg := strings.TrimSpace(eb.Error)
		if resp.StatusCode == http.StatusBadRequest {
			return client.ScanResult{}, fmt.Errorf("%w: %s", errBadRequest, msg)
		}
		return client.ScanResult{}, fmt.Errorf("%w: shard %d answered %d: %s", errUnavailable, id, resp.StatusCode, msg)
	}
	var p remotePage
	if err := json.Unmarshal(body, &p); err != nil {
		return client.ScanResult{}, fmt.Errorf("%w: shard %d's page: %v", errUnavailable, id, err)
	}
	out := client.ScanResult{More: p.More, Pairs: make([]client.KV, len(p.Pairs))}
	for i, kv := range p.Pairs {
		k, err1 := decodeField(kv.Key, b64)
		v, err2 := decodeField(kv.Value, b64)
		if err1 != nil || err2 != nil {
			return client.ScanResult{}, fmt.Errorf("%w: shard %d's page holds a malformed pair", errUnavailable, id)
		}
		out.Pairs[i] = client.KV{Key: k, Value: v}
	}
	return out, nil
}

func decodeField(raw json.RawMessage, b64 bool) ([]byte, error) {
	if b64 {
		var b []byte
		err := json.Unmarshal(raw, &b)
		return b, err
	}
	var str string
	err := json.Unmarshal(raw, &str)
	return []byte(str), err
}

// txnShard is the one shard every key of a transaction belongs to, or an
// error naming the shards when they differ.
func (s *server) txnShard(conds []client.Cond, ops []client.TxnOp) (uint64, error) {
	seen := map[uint64]bool{}
	var first uint64
	add := func(k []byte) {
		id := s.route.shardOf(k)
		if len(seen) == 0 {
			first = id
		}
		seen[id] = true
	}
	for _, c := range conds {
		add(c.Key)
	}
	for _, o := range ops {
		add(o.Key)
	}
	if len(seen) > 1 {
		ids := make([]uint64, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return 0, fmt.Errorf("%w: the transaction's keys are in shards %v; a transaction runs in one shard: give keys that must change together the same {hash tag}", errCrossShard, ids)
	}
	return first, nil
}
