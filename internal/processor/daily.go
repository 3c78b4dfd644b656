package processor

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Daily metrics in the stream (see docs/processor-dataflow.md, "Daily metrics"): a user's
// samples of the types agg.DailyMetrics reads are kept in a journal per local date (the
// date a sample starts on, on its own clock); when a sample arrives, the dates it can
// change — the day before its start through the day after its end — are marked, and at
// most every RunnerConfig.DailyEvery the marked dates are recomputed with agg.DailyMetrics
// itself over the journal of the marked dates, two days before and one after. That is the
// reference computation, so stream and batch agree by construction within those bounds:
// a sleep session longer than a day and a half, or an interval sample longer than a day,
// may be seen in part.
//
// The journal of a date is one sealed record (key "<date>/") plus, between two
// recomputations, one record per commit that added to it ("<date>/<seq>"); recomputing a
// date folds them into one. The marked dates are part of the user's checkpointed state,
// and the users with marked dates are listed in the partition's pending record, so a
// crash between the two delays a recomputation and never loses it.

// Kinds of the derived records of daily metrics.
const (
	// KindDaily is a local day's metrics and baselines, key the date, as the API's day
	// object (JSON).
	KindDaily = "daily"
	// KindJournal holds a user's samples of one local date for recomputing daily metrics.
	KindJournal = "journal"
	// KindPending lists the users of a partition with dates awaiting recomputation; its
	// record's user is PendingOwner(p), key "".
	KindPending = "pending"
)

// PendingOwner is the user column of partition p's pending record: it lists pseudonymous
// user ids only.
func PendingOwner(p int) string { return fmt.Sprintf("partition/%d", p) }

// dailyInput reports whether agg.DailyMetrics reads samples of type typ.
func dailyInput(typ string) bool {
	switch typ {
	case "steps", "activity_intensity", "heart_rate", "rr_interval", "resting_heart_rate", "hrv_rmssd",
		"sleep_stage", "active_energy", "distance", "water", "body_weight", "mood":
		return true
	}
	return false
}

// dailyMetrics are the numeric metrics of a day object, each with a baseline; hrv_rmssd's
// is on ln(rMSSD).
var dailyMetrics = []string{"steps", "active_minutes", "sedentary_bouts", "sedentary_minutes",
	"resting_heart_rate", "hrv_rmssd", "sleep_minutes", "sleep_efficiency", "sleep_midpoint", "active_energy",
	"distance", "water", "weight", "mood"}

// DayObject is a day of GET /v1/users/{user}/daily: the date, each metric that has data,
// and "baselines" (see Baselines).
type DayObject = map[string]any

// dayFields returns the API fields of d (without baselines); absent metrics are absent.
func dayFields(d agg.Daily) DayObject {
	o := DayObject{"date": d.Date}
	putF := func(k string, v *float64) {
		if v != nil {
			o[k] = round6(*v)
		}
	}
	putI := func(k string, v *int) {
		if v != nil {
			o[k] = float64(*v)
		}
	}
	putF("steps", d.Steps)
	putI("active_minutes", d.ActiveMinutes)
	putI("sedentary_bouts", d.SedentaryBouts)
	putI("sedentary_minutes", d.SedentaryMinutes)
	putF("resting_heart_rate", d.RestingHeartRate)
	if d.RestingHeartRate != nil {
		o["resting_heart_rate_source"] = d.RestingHeartRateFrom
	}
	putF("hrv_rmssd", d.HRVRMSSD)
	if d.HRVRMSSD != nil {
		o["hrv_source"] = d.HRVFrom
	}
	putI("sleep_minutes", d.SleepMinutes)
	putF("sleep_efficiency", d.SleepEfficiency)
	putF("sleep_midpoint", d.SleepMidpoint)
	if len(d.SleepStages) > 0 {
		st := make(map[string]any, len(d.SleepStages))
		for k, v := range d.SleepStages {
			st[k] = float64(v)
		}
		o["sleep_stages"] = st
	}
	putF("active_energy", d.ActiveEnergy)
	putF("distance", d.Distance)
	putF("water", d.Water)
	putF("weight", d.Weight)
	putF("mood", d.Mood)
	return o
}

// Baselines returns the "baselines" of the day date given every day object of the 60 days
// before it and the day itself (by date): per metric with a value on at least one of those
// days, agg.Baseline (agg.LogBaseline for hrv_rmssd) as mean, sd, mean_7d, days, days_7d,
// established, and z when today has a value.
func Baselines(days map[string]DayObject, date string) map[string]any {
	out := map[string]any{}
	for _, m := range dailyMetrics {
		values := map[string]float64{}
		for d, o := range days {
			if v, ok := o[m].(float64); ok {
				values[d] = v
			}
		}
		if len(values) == 0 {
			continue
		}
		var b agg.BaselineStat
		if m == "hrv_rmssd" {
			b = agg.LogBaseline(values, date)
		} else {
			b = agg.Baseline(values, date)
		}
		if b.Days == 0 && b.Days7 == 0 {
			continue
		}
		x := map[string]any{"mean": round6(b.Mean60), "sd": round6(b.SD60), "mean_7d": round6(b.Mean7), "days": float64(b.Days),
			"days_7d": float64(b.Days7), "established": b.Established}
		if b.HasToday && b.SD60 > 0 {
			x["z"] = round6(b.Z)
		}
		if m == "hrv_rmssd" {
			x["scale"] = "ln"
		}
		out[m] = x
	}
	return out
}

// noteDaily journals an applied sample for the daily metrics and marks the dates it can
// change.
func (u *userRun) noteDaily(smp pulsebase.Sample, now time.Time) {
	if !dailyInput(smp.Type) {
		return
	}
	loc := agg.Location(smp)
	first := smp.Start.In(loc)
	last := agg.LastInstant(&smp).In(loc)
	date := first.Format(agg.DateLayout)
	j := pulsebase.Sample{Type: smp.Type, Value: smp.Value, Level: smp.Level, Start: smp.Start, End: smp.End, Zone: smp.Zone, Source: smp.Source}
	u.journal[date] = append(u.journal[date], j)
	if len(u.days) == 0 {
		u.daysSince = now
	}
	from := civil(first).AddDate(0, 0, -1)
	to := civil(last).AddDate(0, 0, 1)
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		u.days[d.Format(agg.DateLayout)] = true
	}
}

// round6 rounds to six decimals: spreading a sample over minutes leaves sums such as
// 1999.9999999999998 steps, which the API should not show.
func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }

// civil is t's local date as midnight UTC, for date arithmetic.
func civil(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func addDays(date string, n int) string {
	t, err := time.Parse(agg.DateLayout, date)
	if err != nil {
		return date
	}
	return t.AddDate(0, 0, n).Format(agg.DateLayout)
}

// maxRecomputeDates is how many days from the earliest marked date one recomputation
// takes.
const maxRecomputeDates = 7

// journalChunk is the key of a commit's additions to a date's journal.
// It names the owner's epoch and commit count: unique for every commit, including the
// many commits of a replay, which all stand at the same stream position.
func journalChunk(date string, pr *partition) string {
	return fmt.Sprintf("%s/%020d.%020d", date, pr.epoch, pr.commits)
}

// journalBase is the key of a date's folded journal.
func journalBase(date string) string { return date + "/" }

func sealJournal(keys *vault.Keys, key string, samples []pulsebase.Sample) ([]byte, error) {
	var b []byte
	var rec []byte
	for i := range samples {
		rec = ingest.AppendSample(rec[:0], &samples[i])
		b = binary.AppendUvarint(b, uint64(len(rec)))
		b = append(b, rec...)
	}
	return keys.Seal(KindJournal, key, b)
}

func openJournal(keys *vault.Keys, key string, ct []byte, into []pulsebase.Sample) ([]pulsebase.Sample, error) {
	pt, err := keys.Open(KindJournal, key, ct)
	if err != nil {
		return nil, err
	}
	for len(pt) > 0 {
		n, k := binary.Uvarint(pt)
		if k <= 0 || uint64(len(pt)-k) < n {
			return nil, fmt.Errorf("journal %s: truncated", key)
		}
		s, err := ingest.DecodeSample(pt[k : k+int(n)])
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", key, err)
		}
		into = append(into, s)
		pt = pt[k+int(n):]
	}
	return into, nil
}

// journalRecords returns the records that add u's pending journal samples to the store
// as one chunk per date, for a commit that does not recompute.
func (pr *partition) journalRecords(u *userRun, now time.Time) ([]pulsebase.DerivedRecord, error) {
	var recs []pulsebase.DerivedRecord
	for _, date := range slices.Sorted(maps.Keys(u.journal)) {
		key := journalChunk(date, pr)
		ct, err := sealJournal(u.keys, key, u.journal[date])
		if err != nil {
			return nil, err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindJournal, Key: key, Ciphertext: ct, Updated: now})
	}
	return recs, nil
}

// recomputeDaily recomputes u's marked dates: their metrics, and the baselines of every
// day those metrics feed (the 60 days after each). It returns the records to commit and
// the changes for the feed.
func (pr *partition) recomputeDaily(ctx context.Context, u *userRun, now time.Time) ([]pulsebase.DerivedRecord, []Change, error) {
	// The earliest marked dates within a week of each other: an import marks years of
	// dates, and their journal must not be read at once. The rest stay marked, due at once.
	marked := slices.Sorted(maps.Keys(u.days))
	week := addDays(marked[0], maxRecomputeDates-1)
	if n := sort.SearchStrings(marked, week+"~"); n < len(marked) {
		marked = marked[:n]
		u.daysSince = time.Time{}
	}
	for _, d := range marked {
		delete(u.days, d)
	}
	lo, hi := addDays(marked[0], -2), addDays(marked[len(marked)-1], 1)
	stored, err := pr.r.store.DerivedRecords(ctx, u.id, KindJournal, journalBase(lo), hi+"/~")
	if err != nil {
		return nil, nil, err
	}
	// The journal of the span: stored records, then this commit's samples.
	byDate := map[string][]pulsebase.Sample{}
	keysOf := map[string][]string{}
	for _, rec := range stored {
		date, _, _ := bytes.Cut([]byte(rec.Key), []byte("/"))
		d := string(date)
		if byDate[d], err = openJournal(u.keys, rec.Key, rec.Ciphertext, byDate[d]); err != nil {
			return nil, nil, err
		}
		keysOf[d] = append(keysOf[d], rec.Key)
	}
	var recs []pulsebase.DerivedRecord
	for d, ss := range u.journal {
		if d < lo || d > hi {
			// Outside what was read: added as a chunk, folded when its turn comes.
			key := journalChunk(d, pr)
			ct, err := sealJournal(u.keys, key, ss)
			if err != nil {
				return nil, nil, err
			}
			recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindJournal, Key: key, Ciphertext: ct, Updated: now})
			continue
		}
		byDate[d] = append(byDate[d], ss...)
	}
	for d, ss := range byDate {
		// Fold the date's records into one when it has more than its folded record.
		if len(u.journal[d]) == 0 && len(keysOf[d]) == 1 && keysOf[d][0] == journalBase(d) {
			continue
		}
		ct, err := sealJournal(u.keys, journalBase(d), ss)
		if err != nil {
			return nil, nil, err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindJournal, Key: journalBase(d), Ciphertext: ct, Updated: now})
		for _, k := range keysOf[d] {
			if k != journalBase(d) {
				recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindJournal, Key: k, Delete: true})
			}
		}
	}
	var all []pulsebase.Sample
	for _, ss := range byDate {
		all = append(all, ss...)
	}
	fresh := map[string]agg.Daily{}
	for _, d := range agg.DailyMetrics(all) {
		fresh[d.Date] = d
	}

	// The stored days that the marked dates' baselines read, and those they feed.
	docs, err := readDays(ctx, pr.r.store, u.keys, u.id, addDays(marked[0], -agg.LongDays), addDays(marked[len(marked)-1], agg.LongDays))
	if err != nil {
		return nil, nil, err
	}
	before := make(map[string]DayObject, len(docs))
	maps.Copy(before, docs)
	days := maps.Clone(docs)
	for _, d := range marked {
		if x, ok := fresh[d]; ok {
			days[d] = dayFields(x)
		} else {
			delete(days, d)
		}
	}
	// Baselines: of every day with data from the first marked date to 60 days after the
	// last, each from the 60 days before it.
	var changes []Change
	for _, d := range slices.Sorted(maps.Keys(days)) {
		if d < marked[0] {
			continue
		}
		o := maps.Clone(days[d])
		delete(o, "baselines")
		window := map[string]DayObject{}
		for back := 0; back <= agg.LongDays; back++ {
			if x, ok := days[addDays(d, -back)]; ok {
				window[addDays(d, -back)] = x
			}
		}
		o["baselines"] = Baselines(window, d)
		days[d] = o
	}
	for _, d := range slices.Sorted(maps.Keys(days)) {
		if d < marked[0] {
			continue
		}
		diff := dayDiff(before[d], days[d])
		if len(diff) == 0 {
			continue
		}
		b, err := json.Marshal(days[d])
		if err != nil {
			return nil, nil, err
		}
		ct, err := u.keys.Seal(KindDaily, d, b)
		if err != nil {
			return nil, nil, err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindDaily, Key: d, Ciphertext: ct, Updated: now})
		changes = append(changes, Change{Kind: "daily", Key: d, Data: diff})
	}
	for _, d := range marked {
		if _, ok := days[d]; !ok && before[d] != nil {
			// The day lost all its data (a recomputation after a change of rules).
			recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindDaily, Key: d, Delete: true})
			changes = append(changes, Change{Kind: "daily", Key: d, Data: map[string]any{"date": d, "deleted": true}})
		}
	}
	u.patchDays(days, marked)
	return recs, changes, nil
}

// dayDiff returns the fields of b that differ from a (a field of a missing from b as
// null), with the date; nil when they are equal.
func dayDiff(a, b DayObject) map[string]any {
	diff := map[string]any{}
	for k, v := range b {
		if w, ok := a[k]; !ok || !jsonEqual(v, w) {
			diff[k] = v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			diff[k] = nil
		}
	}
	if len(diff) == 0 {
		return nil
	}
	diff["date"] = b["date"]
	return diff
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// readDays reads and opens the user's day objects from the date from to the date to.
func readDays(ctx context.Context, store pulsebase.Store, keys *vault.Keys, user, from, to string) (map[string]DayObject, error) {
	recs, err := store.DerivedRecords(ctx, user, KindDaily, from, to)
	if err != nil {
		return nil, err
	}
	out := make(map[string]DayObject, len(recs))
	for _, rec := range recs {
		o, err := OpenDay(keys, rec.Key, rec.Ciphertext)
		if err != nil {
			return nil, err
		}
		out[rec.Key] = o
	}
	return out, nil
}

// OpenDay decrypts a stored day object.
func OpenDay(keys *vault.Keys, date string, ciphertext []byte) (DayObject, error) {
	pt, err := keys.Open(KindDaily, date, ciphertext)
	if err != nil {
		return nil, err
	}
	var o DayObject
	if err := json.Unmarshal(pt, &o); err != nil {
		return nil, fmt.Errorf("decode day %s: %w", date, err)
	}
	return o, nil
}

// The user's checkpointed state is the window state, the marked dates and the
// recommendation state (recommend.go; absent in states written before it), in an
// envelope.
const stateEnvelope = 0xD1

func encodeState(window []byte, days map[string]bool, rec []byte) []byte {
	b := []byte{stateEnvelope}
	b = binary.AppendUvarint(b, uint64(len(window)))
	b = append(b, window...)
	b = binary.AppendUvarint(b, uint64(len(days)))
	for _, d := range slices.Sorted(maps.Keys(days)) {
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	b = binary.AppendUvarint(b, uint64(len(rec)))
	return append(b, rec...)
}

var errState = errors.New("corrupt user state")

// decodeState splits a stored state; a state written before the envelope is the window
// state alone.
func decodeState(b []byte) (window []byte, days map[string]bool, rec []byte, err error) {
	days = map[string]bool{}
	if len(b) == 0 || b[0] != stateEnvelope {
		return b, days, nil, nil
	}
	b = b[1:]
	next := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, false
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, true
	}
	window, ok := next()
	if !ok {
		return nil, nil, nil, errState
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, nil, errState
	}
	b = b[k:]
	for range n {
		d, ok := next()
		if !ok {
			return nil, nil, nil, errState
		}
		days[string(d)] = true
	}
	if len(b) > 0 {
		if rec, ok = next(); !ok {
			return nil, nil, nil, errState
		}
	}
	return window, days, rec, nil
}
