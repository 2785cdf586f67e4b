package client

import "github.com/keel-db/keel/sm"

// Re-exported codec types so hosts need import only this package.
type (
	// Cond is a transaction precondition.
	Cond = sm.Cond
	// TxnOp is one write in a transaction.
	TxnOp = sm.TxnOp
	// KV is a key and its value.
	KV = sm.KV
	// ScanQuery selects keys for Scan.
	ScanQuery = sm.ScanQuery
	// ScanResult is a page of keys.
	ScanResult = sm.ScanResult
)

// IfAbsent is a precondition that key has no value.
func IfAbsent(key []byte) Cond { return Cond{Kind: sm.CondAbsent, Key: key} }

// IfExists is a precondition that key has a value.
func IfExists(key []byte) Cond { return Cond{Kind: sm.CondExists, Key: key} }

// IfEquals is a precondition that key has exactly value.
func IfEquals(key, value []byte) Cond {
	return Cond{Kind: sm.CondValueEquals, Key: key, Value: value}
}

// PutOp sets key to value inside a transaction.
func PutOp(key, value []byte) TxnOp { return TxnOp{Op: sm.OpPut, Key: key, Value: value} }

// DeleteOp removes key inside a transaction.
func DeleteOp(key []byte) TxnOp { return TxnOp{Op: sm.OpDelete, Key: key} }

// PutCommand encodes a Put for NodeHost.SyncPropose.
func PutCommand(key, value []byte) ([]byte, error) {
	return (&sm.Command{Op: sm.OpPut, Key: key, Value: value}).Encode()
}

// DeleteCommand encodes a Delete.
func DeleteCommand(key []byte) ([]byte, error) {
	return (&sm.Command{Op: sm.OpDelete, Key: key}).Encode()
}

// DeleteRangeCommand encodes a DeleteRange of [start, end).
func DeleteRangeCommand(start, end []byte) ([]byte, error) {
	return (&sm.Command{Op: sm.OpDeleteRange, Key: start, End: end}).Encode()
}

// TxnCommand encodes a transaction: if every condition holds, apply ops.
func TxnCommand(conds []Cond, ops []TxnOp) ([]byte, error) {
	return (&sm.Command{Op: sm.OpTxn, Conds: conds, Ops: ops}).Encode()
}

// DecodeResult interprets the Result of a proposal.
var DecodeResult = sm.DecodeResult
