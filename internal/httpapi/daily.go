package httpapi

import (
	"net/http"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// maxDailyDays bounds one daily answer.
const maxDailyDays = 366

// dailyResponse is the body of GET /v1/users/{user}/daily.
type dailyResponse struct {
	Days []processor.DayObject `json:"days"`
}

func (s *Server) handleDaily(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	q := r.URL.Query()
	// The default is the week up to today; "today" is the UTC date plus one, so that the
	// current local day of a user east of UTC is included.
	to := time.Now().UTC().AddDate(0, 0, 1)
	var err error
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(agg.DateLayout, v); err != nil {
			writeProblem(w, pulsebase.EINVALID, "to must be a date, YYYY-MM-DD")
			return
		}
	}
	from := to.AddDate(0, 0, -7)
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(agg.DateLayout, v); err != nil {
			writeProblem(w, pulsebase.EINVALID, "from must be a date, YYYY-MM-DD")
			return
		}
	}
	switch {
	case to.Before(from):
		writeProblem(w, pulsebase.EINVALID, "from must not be after to")
		return
	case to.Sub(from) >= maxDailyDays*24*time.Hour:
		writeProblem(w, pulsebase.EINVALID, "at most 366 days at once")
		return
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "daily keys", err)
		return
	}
	recs, err := s.deps.Store.DerivedRecords(r.Context(), usr.ID, processor.KindDaily, from.Format(agg.DateLayout), to.Format(agg.DateLayout))
	if err != nil {
		s.internalError(w, r, "daily", err)
		return
	}
	out := dailyResponse{Days: make([]processor.DayObject, 0, len(recs))}
	for _, rec := range recs {
		day, err := processor.OpenDay(keys, rec.Key, rec.Ciphertext)
		if err != nil {
			s.serviceError(w, r, "open day", err)
			return
		}
		if d := accessOf(r).decision; d.Categories != nil {
			day = processor.ScopeDay(day, d.MayRead)
		}
		out.Days = append(out.Days, day)
	}
	writeJSON(w, http.StatusOK, out)
}
