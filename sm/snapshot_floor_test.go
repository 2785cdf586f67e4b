package sm

import "testing"

func TestStreamFloor(t *testing.T) {
	s := New(Config{Dir: t.TempDir(), ShardID: 1, ReplicaID: 1})
	if _, ok := s.StreamFloor(); ok {
		t.Fatal("floor without a save in progress")
	}
	s.startSaving(30)
	s.startSaving(10)
	s.startSaving(10)
	if f, ok := s.StreamFloor(); !ok || f != 10 {
		t.Fatalf("floor %d %v, want 10", f, ok)
	}
	s.endSaving(10)
	if f, _ := s.StreamFloor(); f != 10 {
		t.Fatalf("floor %d after one of two saves at 10 ended, want 10", f)
	}
	s.endSaving(10)
	if f, _ := s.StreamFloor(); f != 30 {
		t.Fatalf("floor %d, want 30", f)
	}
	s.endSaving(30)
	if _, ok := s.StreamFloor(); ok {
		t.Fatal("floor after every save ended")
	}
}
