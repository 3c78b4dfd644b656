package auth

import "time"

// SetClock makes r read the time from now. Call it before Run.
func SetClock(r *Revocations, now func() time.Time) { r.now = now }

// Prune drops the revocations that no longer matter at now, as Run does every hour.
func Prune(r *Revocations, now time.Time) { r.prune(now) }
