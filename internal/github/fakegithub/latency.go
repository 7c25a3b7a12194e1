package fakegithub

import (
	"path"
	"time"
)

// latency delays the answers to endpoints matching pattern by d.
type latency struct {
	pattern string
	d       time.Duration
}

// SetLatency makes every request whose endpoint name matches pattern
// (path.Match syntax over the Endpoint* names, as FailNext's) wait d
// before it is answered, as a slow or distant GitHub would; d <= 0 removes
// the delay for pattern. The wait holds no lock: requests wait side by
// side, as they would on the network.
func (s *Server) SetLatency(pattern string, d time.Duration) {
	if _, err := path.Match(pattern, ""); err != nil {
		panic("fakegithub: SetLatency: bad pattern " + pattern + ": " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.latencies {
		if l.pattern == pattern {
			s.latencies = append(s.latencies[:i], s.latencies[i+1:]...)
			break
		}
	}
	if d > 0 {
		s.latencies = append(s.latencies, latency{pattern: pattern, d: d})
	}
}

// wait sleeps for the latency set for endpoint, if any (the first match).
func (s *Server) wait(endpoint string) {
	s.mu.Lock()
	var d time.Duration
	for _, l := range s.latencies {
		if ok, _ := path.Match(l.pattern, endpoint); ok {
			d = l.d
			break
		}
	}
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}
