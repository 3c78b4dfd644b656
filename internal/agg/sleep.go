package agg

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"github.com/pulsebase/pulsebase"
)

// SessionGap is the gap between sleep_stage samples of one source that ends a sleep
// session: samples less than SessionGap apart belong to the same session.
const SessionGap = 60 * time.Minute

// SleepSession is a run of one source's sleep_stage samples with gaps shorter than
// SessionGap.
type SleepSession struct {
	// Date is the local day on which the session ends (the day of its last instant, on the
	// clock of the sample that ends last): the night of the 3rd to the 4th counts on the 4th.
	Date   string
	Source string
	// Start is the start of the first sample and End the end of the last, each on the
	// clock of that sample.
	Start, End time.Time
	// InBed is the time covered by at least one of the session's samples, whatever the
	// stage: an in_bed sample spanning the night and the stage samples inside it are not
	// counted twice, and the gaps between samples (under SessionGap) are not counted at all.
	InBed time.Duration
	// Asleep is the total sleep time, Stages["light"] + Stages["deep"] + Stages["rem"].
	Asleep time.Duration
	// Stages is the time covered by the samples of each level present in the session
	// (in_bed, awake, light, deep, rem).
	Stages map[string]time.Duration
	// Efficiency is Asleep/InBed, a fraction from 0 to 1 (more only if one source's stages
	// overlap each other); 0 when InBed is 0.
	Efficiency float64
}

var asleepLevels = [...]string{"light", "deep", "rem"}

// Sessions returns the sleep sessions of the sleep_stage samples, sorted by Start (then
// Source). Sessions are built per source; when sessions of different sources overlap (a
// ring and a watch worn the same night), only one is kept so that a night never counts
// twice: the one with the most Asleep time, then the most InBed time, then the earliest
// Start, then the lexically smallest source. The choice is greedy in that order, so a
// session is dropped only for one that was kept.
func Sessions(samples []pulsebase.Sample) []SleepSession {
	return sessions(sorted(samples, func(s *pulsebase.Sample) bool { return s.Type == "sleep_stage" }))
}

// sessions builds the sessions of sleep_stage samples in canonical order.
func sessions(ss []*pulsebase.Sample) []SleepSession {
	t, _ := pulsebase.LookupType("sleep_stage")
	bySource := make(map[string][]*pulsebase.Sample)
	var sources []string
	for _, s := range ss {
		if s.Type != "sleep_stage" {
			continue
		}
		if _, ok := levelName(t, s); !ok {
			continue
		}
		if bySource[s.Source] == nil {
			sources = append(sources, s.Source)
		}
		bySource[s.Source] = append(bySource[s.Source], s)
	}
	slices.Sort(sources)
	var all []SleepSession
	for _, src := range sources {
		var run []*pulsebase.Sample
		var end time.Time
		for _, s := range bySource[src] {
			if len(run) > 0 && s.Start.Sub(end) >= SessionGap {
				all = append(all, newSession(t, run))
				run = nil
			}
			if len(run) == 0 || s.End.After(end) {
				end = s.End
			}
			run = append(run, s)
		}
		if len(run) > 0 {
			all = append(all, newSession(t, run))
		}
	}

	// Keep one session of overlapping ones, greedily by priority.
	byPriority := slices.Clone(all)
	slices.SortStableFunc(byPriority, func(a, b SleepSession) int {
		if c := cmp.Compare(b.Asleep, a.Asleep); c != 0 {
			return c
		}
		if c := cmp.Compare(b.InBed, a.InBed); c != 0 {
			return c
		}
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.Source, b.Source)
	})
	var kept []SleepSession
	for _, c := range byPriority {
		if !slices.ContainsFunc(kept, func(k SleepSession) bool {
			return c.Start.Before(k.End) && k.Start.Before(c.End)
		}) {
			kept = append(kept, c)
		}
	}
	slices.SortFunc(kept, func(a, b SleepSession) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.Source, b.Source)
	})
	return kept
}

// newSession summarizes a run of samples of one source, in canonical (start) order.
func newSession(t *pulsebase.SampleType, run []*pulsebase.Sample) SleepSession {
	first, last := run[0], run[0]
	for _, s := range run[1:] {
		if !s.End.Before(last.End) {
			last = s
		}
	}
	endLoc := location(last)
	ss := SleepSession{
		Date:   LastInstant(last).In(endLoc).Format(DateLayout),
		Source: first.Source,
		Start:  first.Start.In(location(first)),
		End:    last.End.In(endLoc),
		Stages: make(map[string]time.Duration),
	}
	all := make([]span, 0, len(run))
	byLevel := make(map[string][]span)
	for _, s := range run {
		level, _ := levelName(t, s)
		sp := span{s.Start, s.End}
		all = append(all, sp)
		byLevel[level] = append(byLevel[level], sp)
	}
	ss.InBed = union(all)
	for level, spans := range byLevel {
		ss.Stages[level] = union(spans)
	}
	for _, l := range asleepLevels {
		ss.Asleep += ss.Stages[l]
	}
	if ss.InBed > 0 {
		ss.Efficiency = float64(ss.Asleep) / float64(ss.InBed)
	}
	return ss
}

type span struct{ start, end time.Time }

// union returns the length of the union of spans sorted by start.
func union(spans []span) time.Duration {
	var total time.Duration
	var cur span
	for i, s := range spans {
		if i > 0 && !s.start.After(cur.end) {
			if s.end.After(cur.end) {
				cur.end = s.end
			}
			continue
		}
		if i > 0 {
			total += cur.end.Sub(cur.start)
		}
		cur = s
	}
	if len(spans) > 0 {
		total += cur.end.Sub(cur.start)
	}
	return total
}

// sessionIndex finds the session whose [Start, End) contains t, or −1. The sessions must
// be sorted by Start and must not overlap, as Sessions returns them.
func sessionIndex(sessions []SleepSession, t time.Time) int {
	i := sort.Search(len(sessions), func(i int) bool { return sessions[i].Start.After(t) }) - 1
	if i >= 0 && t.Before(sessions[i].End) {
		return i
	}
	return -1
}
