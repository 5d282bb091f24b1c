package sale

// KnownProducts is how many products s remembers as existing.
func KnownProducts(s *Service) int {
	n := 0
	s.known.Range(func(any, any) bool { n++; return true })
	return n
}

// SetMaxKnown sets how many products s remembers as existing (maxKnown by
// default). Call it before using s.
func SetMaxKnown(s *Service, n int) { s.maxKnown = n }
