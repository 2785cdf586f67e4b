package sm

// IsOpen reports whether the state machine is open: Open succeeded and
// Close has not run (its tablet may be closed while idle, see TabletOpen).
// A host checks it before deleting a removed replica's tablet.
func (s *StateMachine) IsOpen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.open
}
