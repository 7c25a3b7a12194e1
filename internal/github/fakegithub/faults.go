package fakegithub

// ClearFaults drops every fault FailNext and FailAfter injected that has
// not fired yet: the fake GitHub is back up.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}
