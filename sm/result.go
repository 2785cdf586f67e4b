package sm

import (
	"encoding/binary"
	"fmt"

	"github.com/lni/dragonboat/v4/statemachine"
)

// Code is the outcome of applying one entry, carried in Result.Value.
type Code uint64

// Result codes. Zero is never used, so a zero Result is recognisably unset.
const (
	// CodeOK: the command was applied.
	CodeOK Code = 1
	// CodePreconditionFailed: a transaction's precondition did not hold and
	// nothing was written. Result.Data holds the failed condition's position
	// as a uvarint.
	CodePreconditionFailed Code = 2
	// CodeInvalidCommand: the command did not decode or broke a limit and
	// nothing was written. Result.Data holds the reason as text.
	CodeInvalidCommand Code = 3
	// CodeAlreadyApplied: the entry's index is at or below the image's
	// applied index (it was applied before, e.g. it is part of an installed
	// snapshot image) and was skipped.
	CodeAlreadyApplied Code = 4
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodePreconditionFailed:
		return "precondition failed"
	case CodeInvalidCommand:
		return "invalid command"
	case CodeAlreadyApplied:
		return "already applied"
	default:
		return fmt.Sprintf("code(%d)", uint64(c))
	}
}

// Outcome is a decoded Result.
type Outcome struct {
	Code Code
	// FailedCond is the index of the first failing precondition, for
	// CodePreconditionFailed.
	FailedCond int
	// Reason explains CodeInvalidCommand.
	Reason string
}

// DecodeResult interprets a Result returned by Update (via SyncPropose).
func DecodeResult(r statemachine.Result) Outcome {
	o := Outcome{Code: Code(r.Value)}
	switch o.Code {
	case CodePreconditionFailed:
		if v, n := binary.Uvarint(r.Data); n > 0 {
			o.FailedCond = int(v)
		}
	case CodeInvalidCommand:
		o.Reason = string(r.Data)
	}
	return o
}

func okResult() statemachine.Result { return statemachine.Result{Value: uint64(CodeOK)} }

func invalidResult(err error) statemachine.Result {
	return statemachine.Result{Value: uint64(CodeInvalidCommand), Data: []byte(err.Error())}
}

func preconditionResult(i int) statemachine.Result {
	return statemachine.Result{Value: uint64(CodePreconditionFailed), Data: binary.AppendUvarint(nil, uint64(i))}
}
