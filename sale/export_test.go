package sale

import "time"

// KnownProducts is how many products s remembers as existing.
func KnownProducts(s *Service) int {
	n := 0
	s.known.Range(func(any, any) bool { n++; return true })
	return n
}

// SetMaxKnown sets how many products s remembers as existing (maxKnown by
// default). Call it before using s.
func SetMaxKnown(s *Service, n int) { s.maxKnown = n }

// AgeBuriedLook makes s's last look for buried orders (mayBeBuried) d
// older, as if that much time had passed since.
func AgeBuriedLook(s *Service, d time.Duration) {
	s.buriedMu <- struct{}{}
	defer func() { <-s.buriedMu }()
	s.buriedAt = s.buriedAt.Add(-d)
}
