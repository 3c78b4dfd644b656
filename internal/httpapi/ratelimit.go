package httpapi

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/pulsebase/pulsebase"
)

// Rate is a token bucket: PerSecond requests a second on average, Burst at once. A zero
// PerSecond means no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// RateLimits bound requests per source address (before authentication: a flood of bad
// tokens is refused without verifying them) and per principal (after it: one user's or
// device's app gone wrong cannot take the server from the others). Health, readiness and
// metrics are not limited.
type RateLimits struct {
	PerAddress   Rate
	PerPrincipal Rate
}

// maxLimiters is how many addresses or principals have a bucket at once; the least
// recently seen lose theirs (starting again with a full one).
const maxLimiters = 100_000

// limiters holds one token bucket per key.
type limiters struct {
	rate  Rate
	mu    sync.Mutex
	cache *lru.Cache[string, *rate.Limiter]
}

func newLimiters(r Rate) *limiters {
	if r.PerSecond <= 0 {
		return nil
	}
	c, _ := lru.New[string, *rate.Limiter](maxLimiters)
	return &limiters{rate: r, cache: c}
}

// allow takes a token of key's bucket; when there is none it returns how long until
// there is.
func (l *limiters) allow(key string, now time.Time) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	l.mu.Lock()
	lim, ok := l.cache.Get(key)
	if !ok {
		lim = rate.NewLimiter(rate.Limit(l.rate.PerSecond), max(l.rate.Burst, 1))
		l.cache.Add(key, lim)
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // refused: the token is not spent
		return d, false
	}
	return 0, true
}

// sourceAddress is the request's peer address without its port. Pulsebase does not trust
// X-Forwarded-For: behind a proxy, the proxy limits clients and Pulsebase limits the proxy.
func sourceAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// tooMany answers 429 with a Retry-After of wait, rounded up to whole seconds.
func (s *Server) tooMany(w http.ResponseWriter, scope string, wait time.Duration) {
	s.deps.Metrics.RateLimited.WithLabelValues(scope).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	writeProblem(w, pulsebase.ERATELIMITED, "too many requests from this "+scope+"; retry after the time in Retry-After")
}
