package httpapi

import (
	"net/http"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// maxSeriesBuckets bounds one series answer.
const maxSeriesBuckets = 10_080 // a week of minutes

// seriesResponse is the body of GET /v1/users/{user}/series/{type}.
type seriesResponse struct {
	Type       string           `json:"type"`
	Unit       string           `json:"unit"`
	Resolution string           `json:"resolution"`
	Points     []map[string]any `json:"points"`
}

func (s *Server) handleSeries(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	typ, ok := pulsebase.LookupType(r.PathValue("type"))
	if !ok {
		writeProblem(w, pulsebase.ENOTFOUND, "unknown sample type")
		return
	}
	q := r.URL.Query()
	res := agg.Hour
	if v := q.Get("resolution"); v != "" {
		if res, ok = agg.ParseResolution(v); !ok {
			writeProblem(w, pulsebase.EINVALID, "resolution must be 1m, 1h or 1d")
			return
		}
	}
	to, from := time.Now(), time.Time{}
	var err error
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			writeProblem(w, pulsebase.EINVALID, "to must be an RFC 3339 time")
			return
		}
	}
	from = to.Add(-24 * time.Hour)
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			writeProblem(w, pulsebase.EINVALID, "from must be an RFC 3339 time")
			return
		}
	}
	width := map[agg.Resolution]time.Duration{agg.Minute: time.Minute, agg.Hour: time.Hour, agg.Day: 24 * time.Hour}[res]
	switch {
	case !from.Before(to):
		writeProblem(w, pulsebase.EINVALID, "from must be before to")
		return
	case to.Sub(from)/width > maxSeriesBuckets:
		writeProblem(w, pulsebase.EINVALID, "the range holds too many buckets at this resolution; narrow it or use a coarser resolution")
		return
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "series keys", err)
		return
	}
	// Day buckets are keyed by local date: widen by the largest UTC offsets, then keep the
	// buckets whose start lies in the range.
	lo := processor.ChunkKey(typ.Name, res, from, from.Add(-14*time.Hour).UTC().Format(agg.DateLayout))
	hi := processor.BucketKey(typ.Name, res, to, to.Add(14*time.Hour).UTC().Format(agg.DateLayout))
	recs, err := s.deps.Store.DerivedRecords(r.Context(), usr.ID, processor.KindBucket, lo, hi)
	if err != nil {
		s.internalError(w, r, "series", err)
		return
	}
	// Keys sort by start (Unix seconds, or local date for days), and a chunk of minutes
	// holds them in order, so points come in order.
	out := seriesResponse{Type: typ.Name, Unit: typ.Unit, Resolution: res.String(), Points: []map[string]any{}}
	for _, rec := range recs {
		cs, err := processor.OpenBuckets(keys, rec.Key, rec.Ciphertext)
		if err != nil {
			s.serviceError(w, r, "open bucket", err)
			return
		}
		for _, c := range cs {
			if c.Point.Start.Before(from) || !c.Point.Start.Before(to) {
				continue
			}
			out.Points = append(out.Points, processor.SeriesPoint(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
}
