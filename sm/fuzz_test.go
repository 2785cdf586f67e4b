package sm

import (
	"testing"
)

// FuzzDecode checks that Decode never panics on any input, that every error
// wraps ErrInvalidCommand, and that whatever Decode accepts is canonical:
// encoding the decoded command gives back exactly the input bytes.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./sm
func FuzzDecode(f *testing.F) {
	for _, c := range validCommands() {
		if enc, err := c.Encode(); err == nil && len(enc) < 1<<12 {
			f.Add(enc)
		}
	}
	seeds := [][]byte{
		nil,
		{CommandVersion},
		{CommandVersion, byte(OpPut), 1, 'k', 0},
		{CommandVersion, byte(OpDelete), 0x81, 0x00, 'k'},
		{CommandVersion, byte(OpDeleteRange), 1, 'a', 1, 'b'},
		{CommandVersion, byte(OpTxn), 1, byte(CondValueEquals), 1, 'k', 1, 'v', 1, byte(OpPut), 1, 'k', 0},
		{CommandVersion, byte(OpTxn), 0xff, 0xff, 0xff, 0xff, 0x0f},
		{2, byte(OpPut), 1, 'k', 1, 'v'},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeCanonical(t, data)
	})
}
