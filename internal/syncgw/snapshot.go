package syncgw

import (
	"context"
	"fmt"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// Snapshot is the state a device without a usable cursor starts from: what the changes
// that follow the welcome then update. A coach's holds only what its grant allows: the
// series of the categories granted and the days reduced to their fields; no
// recommendations (an empty list), and Profile and Consents left zero, being the user's
// own.
type Snapshot struct {
	// Taken is when the snapshot was read.
	Taken time.Time `json:"taken"`
	// Daily holds the day objects of the last SnapshotDays days (as GET …/daily).
	Daily []processor.DayObject `json:"daily"`
	// Series holds today's buckets: the hour buckets of the last 24 hours and the day
	// buckets of the local dates around now, of every type, keyed as series changes are.
	Series []SeriesBucket `json:"series"`
	// Recommendations are the active recommendations, newest first, as
	// GET …/recommendations lists them: state active, or accepted and not expired.
	Recommendations []recommend.Recommendation `json:"recommendations"`
	// Profile is the merged profile document and its version.
	Profile ProfileState `json:"profile"`
	// Consents is the user's current consent.
	Consents pulsebase.Consent `json:"consents"`
}

// SeriesBucket is one bucket: its key and point, as in a series change.
type SeriesBucket struct {
	Key  string         `json:"key"`
	Data map[string]any `json:"data"`
}

// ProfileState is a profile in a snapshot: its view, its version, and its CRDT state
// (internal/crdt's binary encoding, base64 in JSON), from which a device builds its
// replica.
type ProfileState struct {
	Version int64          `json:"version"`
	Doc     map[string]any `json:"doc"`
	State   []byte         `json:"state"`
}

// snapshot reads user's current state, as much of it as access allows: all of it, or for
// a reader of some categories only (a coach), those categories' series and day fields.
func (g *Gateway) snapshot(ctx context.Context, user string, access auth.Decision) (*Snapshot, error) {
	scoped := access.Categories != nil
	now := time.Now().UTC()
	keys, err := g.deps.Vault.UserKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Taken: now, Daily: []processor.DayObject{}, Series: []SeriesBucket{}}
	// Day objects are keyed by local date: "today" runs to the UTC date plus one, for
	// users east of UTC.
	to := now.AddDate(0, 0, 1)
	from := to.AddDate(0, 0, -g.cfg.SnapshotDays)
	recs, err := g.deps.Store.DerivedRecords(ctx, user, processor.KindDaily, from.Format(agg.DateLayout), to.Format(agg.DateLayout))
	if err != nil {
		return nil, fmt.Errorf("daily: %w", err)
	}
	for _, rec := range recs {
		day, err := processor.OpenDay(keys, rec.Key, rec.Ciphertext)
		if err != nil {
			return nil, err
		}
		if scoped {
			day = processor.ScopeDay(day, access.MayRead) // as GET …/daily shows it to them
		}
		s.Daily = append(s.Daily, day)
	}
	allowed := g.allowedCategories(ctx, user)
	for _, t := range pulsebase.SampleTypes() {
		if i := categoryIndex(t.Category); i >= 0 && !allowed[i] {
			continue // a category the user stopped consenting to is not sent
		}
		if !access.MayRead(t.Category) {
			continue // nor one the reader was not granted
		}
		ranges := [][2]string{
			{processor.BucketKey(t.Name, agg.Hour, now.Add(-24*time.Hour).Truncate(time.Hour), ""),
				processor.BucketKey(t.Name, agg.Hour, now, "")},
			{processor.BucketKey(t.Name, agg.Day, time.Time{}, now.Add(-14*time.Hour).Format(agg.DateLayout)),
				processor.BucketKey(t.Name, agg.Day, time.Time{}, now.Add(14*time.Hour).Format(agg.DateLayout))},
		}
		for _, r := range ranges {
			recs, err := g.deps.Store.DerivedRecords(ctx, user, processor.KindBucket, r[0], r[1])
			if err != nil {
				return nil, fmt.Errorf("buckets: %w", err)
			}
			for _, rec := range recs {
				cs, err := processor.OpenBuckets(keys, rec.Key, rec.Ciphertext)
				if err != nil {
					return nil, err
				}
				for _, c := range cs {
					s.Series = append(s.Series, SeriesBucket{Key: processor.BucketKey(c.Type, c.Res, c.Start, c.Date), Data: processor.SeriesPoint(c)})
				}
			}
		}
	}
	if scoped {
		s.Recommendations = []recommend.Recommendation{}
		return s, nil
	}
	// Ops stored but not yet on the feed go out first, so that the document and the feed
	// after the snapshot's cursor hold every op between them.
	if err := g.deps.Profiles.Flush(ctx, user); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	doc, version, err := g.deps.Profiles.Get(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	state, err := doc.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	s.Profile = ProfileState{Version: version, Doc: doc.View(), State: state}
	if s.Consents, err = g.deps.Consent.Get(ctx, user); err != nil {
		return nil, fmt.Errorf("consent: %w", err)
	}
	if s.Recommendations, err = recommend.List(ctx, g.deps.Store, keys, user, recommend.Query{Active: true, Now: now}); err != nil {
		return nil, fmt.Errorf("recommendations: %w", err)
	}
	return s, nil
}

// Store is what the gateway reads snapshots from: derived records, and the feedback that
// gives recommendations their state. pulsebase.Store is one.
type Store = recommend.Store
