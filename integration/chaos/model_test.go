package chaos

import (
	"fmt"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// opKind is what a client asked for.
type opKind string

const (
	opPut    opKind = "put"
	opGet    opKind = "get"
	opDelete opKind = "delete"
	// opTxn is a single-key transaction: one precondition on Key, and when
	// it holds one operation (put Value, or delete) on the same Key.
	opTxn opKind = "txn"
)

// condKind is a txn precondition.
type condKind string

const (
	condEquals condKind = "equals"
	condAbsent condKind = "absent"
	condExists condKind = "exists"
)

// outcome classifies how an operation ended for the client.
type outcome string

const (
	// outcomeOK: the server answered definitely (2xx, or 404 for a get).
	outcomeOK outcome = "ok"
	// outcomeUnknown: a write whose effect the client cannot know (timeout,
	// 503, 5xx, connection lost after the request was sent).
	outcomeUnknown outcome = "unknown"
	// outcomeFailed: certainly not applied (connection refused) or a read
	// that got no answer; kept in the history file, left out of the check.
	outcomeFailed outcome = "failed"
)

// record is one operation of the history.
type record struct {
	Client int      `json:"client"`
	Kind   opKind   `json:"kind"`
	Key    string   `json:"key"`
	Value  string   `json:"value,omitempty"` // put, txn put
	Cond   condKind `json:"cond,omitempty"`
	// CondValue is the expected value of condEquals.
	CondValue string `json:"cond_value,omitempty"`
	// TxnDelete makes the txn's operation a delete instead of a put.
	TxnDelete bool    `json:"txn_delete,omitempty"`
	Target    int     `json:"target"` // replica the request went to
	Call      int64   `json:"call"`   // ns since the run started
	Return    int64   `json:"return"` // ns; math.MaxInt64 when unknown
	Outcome   outcome `json:"outcome"`
	// Found and Got are a get's answer; Succeeded is a txn's.
	Found     bool   `json:"found,omitempty"`
	Got       string `json:"got,omitempty"`
	Succeeded bool   `json:"succeeded,omitempty"`
	Detail    string `json:"detail,omitempty"` // error text, for humans
}

// kvState is one key's state in the model. Comparable, so porcupine's
// default equality works.
type kvState struct {
	Exists bool
	Value  string
}

// condHolds evaluates a txn's precondition against s.
func condHolds(r *record, s kvState) bool {
	switch r.Cond {
	case condEquals:
		return s.Exists && s.Value == r.CondValue
	case condAbsent:
		return !s.Exists
	case condExists:
		return s.Exists
	}
	return false
}

// kvModel is a single-register-per-key model of Keel's KV API. Inputs and
// outputs are both the *record: the input half is the request, the output
// half the answer.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(*record).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return kvState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, r := state.(kvState), input.(*record)
		unknown := r.Outcome == outcomeUnknown
		switch r.Kind {
		case opGet:
			return r.Found == s.Exists && (!r.Found || r.Got == s.Value), s
		case opPut:
			return true, kvState{Exists: true, Value: r.Value}
		case opDelete:
			return true, kvState{}
		case opTxn:
			holds := condHolds(r, s)
			next := s
			if holds {
				if r.TxnDelete {
					next = kvState{}
				} else {
					next = kvState{Exists: true, Value: r.Value}
				}
			}
			return unknown || r.Succeeded == holds, next
		}
		return false, s
	},
	Hash: func(state interface{}) uint64 {
		s := state.(kvState)
		var h uint64 = 14695981039346656037
		for i := 0; i < len(s.Value); i++ {
			h = (h ^ uint64(s.Value[i])) * 1099511628211
		}
		if s.Exists {
			h ^= 1
		}
		return h
	},
	DescribeOperation: func(input, output interface{}) string {
		r := input.(*record)
		res := ""
		switch {
		case r.Outcome == outcomeUnknown:
			res = "?"
		case r.Kind == opGet && r.Found:
			res = fmt.Sprintf("%q", r.Got)
		case r.Kind == opGet:
			res = "missing"
		case r.Kind == opTxn:
			res = fmt.Sprint(r.Succeeded)
		default:
			res = "ok"
		}
		switch r.Kind {
		case opPut:
			return fmt.Sprintf("put(%s, %s) -> %s", r.Key, r.Value, res)
		case opDelete:
			return fmt.Sprintf("delete(%s) -> %s", r.Key, res)
		case opTxn:
			then := "put " + r.Value
			if r.TxnDelete {
				then = "delete"
			}
			return fmt.Sprintf("txn(if %s %s %s then %s) -> %s", r.Key, r.Cond, r.CondValue, then, res)
		default:
			return fmt.Sprintf("get(%s) -> %s", r.Key, res)
		}
	},
	DescribeState: func(state interface{}) string {
		s := state.(kvState)
		if !s.Exists {
			return "missing"
		}
		return fmt.Sprintf("%q", s.Value)
	},
}

// operations turns the checkable part of the history into porcupine
// operations: definite results, plus unknown writes with an infinite return
// time. Failed operations and writes to ack/ keys are left out (the latter
// are checked for durability separately).
func operations(history []*record) []porcupine.Operation {
	ops := make([]porcupine.Operation, 0, len(history))
	for _, r := range history {
		if r.Outcome == outcomeFailed || isAckKey(r.Key) {
			continue
		}
		ret := r.Return
		if r.Outcome == outcomeUnknown {
			if r.Kind == opGet {
				continue // a read with no answer has no effect
			}
			ret = math.MaxInt64
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r, Output: r, Call: r.Call, Return: ret})
	}
	return ops
}
