package sm

// IsOpen reports whether the state machine has an engine open: Open
// succeeded and Close has not run. A host checks it before deleting a
// removed replica's tablet.
func (s *StateMachine) IsOpen() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.eng != nil
}
