package auth

import "sync"

// subscribers is a set of callbacks that hear of changes (revocations, grants), safe for
// concurrent use. Callbacks run outside its lock, so they may call back into their
// source.
type subscribers[T any] struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(T)
}

// add registers fn; after cancel returns, fn is called at most once more, by a
// notification already under way.
func (s *subscribers[T]) add(fn func(T)) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(T){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

// notify calls every callback with v.
func (s *subscribers[T]) notify(v T) {
	s.mu.Lock()
	fns := make([]func(T), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(v)
	}
}
