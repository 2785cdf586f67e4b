package engine

// Recorder is told about every user key and range a Batch is about to
// write, before the write enters the batch. The snapshot package's Tracker
// is one: a capture rewinds exactly the keys written after its snapshot
// index, so a write that reaches Pebble unrecorded would leave an image
// that is not exact. Recording in the Batch, the one path every write of
// apply takes, means a new operation cannot forget to record.
type Recorder interface {
	// Key is called for a put or delete of user key k.
	Key(k []byte)
	// Range is called for a delete of the user keys in [start, end); a nil
	// end means the end of user data.
	Range(start, end []byte)
}

// SetRecorder makes b report every write it takes from now on to r (nil
// stops reporting).
func (b *Batch) SetRecorder(r Recorder) { b.rec = r }
