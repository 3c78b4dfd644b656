// Package agg is the batch reference for every number Pulsebase derives from samples: time
// buckets of a series (Buckets), per-day metrics (DailyMetrics), sleep sessions (Sessions)
// and personal baselines (Baseline, LogBaseline). It computes them in one pass over a
// slice of samples, with no state, no I/O and no clock, so that it can be read as the
// specification.
//
// The stream processor computes the same results incrementally, per user and in event
// time. Its property tests compare what it persisted with this package applied to the
// distinct samples it was given: agg is the reference semantics the processor must match.
// Anything may import agg; agg imports only the domain package and the standard library.
//
// # Inputs
//
// Callers pass one user's distinct samples. Deduplication (DOMAIN.md: the client id, or a
// hash of user, type, start, end, source and value) is the ingest path's job, not this
// package's: a sample passed twice counts twice. Samples are expected to be valid
// (pulsebase.Normalize): a categorical Value is a level index, End ≥ Start. Samples of an
// unknown type are ignored. Results never depend on the order of the input: every function
// first sorts its samples into one canonical order (start, end, type, source, value, …), so
// even floating-point sums come out bit for bit the same for any permutation. A streaming
// implementation that adds in arrival order will differ in the last bits: compare sums with
// a relative tolerance (1e-9 is ample), counts and minutes exactly.
//
// # Local time
//
// Every sample carries its own clock (Location): its IANA Zone when it has one, else the
// fixed UTC offset of its Start. Days, hours and minutes are those of that clock, so a user
// who flies from −05:00 to +01:00 mid-week keeps correct local days: samples sent before
// the flight count on the days of −05:00, those after on the days of +01:00. Hour buckets
// start at local hh:00 (04:30Z for +05:30), day buckets at local midnight (and last 23 or
// 25 hours on the days a zone changes to or from daylight saving time).
//
// # Series buckets
//
// Buckets spreads the samples of one type over minute, hour or day buckets:
//
//   - Instant samples (heart_rate, body_weight, …) fall in the bucket that contains their
//     start. Daily-shape samples (resting_heart_rate, hrv_rmssd), a device's summary of a
//     day or a night, fall in the bucket that contains their last instant (End minus 1 ns,
//     or Start when End == Start), so that a night's value lands on the day it ends, like a
//     sleep session.
//   - Interval numeric samples (steps, distance, active_energy, mindful_session) are spread
//     over the buckets [start, end) overlaps, in proportion to the overlap: 120 steps from
//     10:50 to 11:10 give 60 to the 10:00 bucket and 60 to the 11:00 bucket. The parts of a
//     sample add up to its value (up to rounding), so totals agree at every resolution. An
//     interval with End == Start counts wholly in the bucket of its start.
//   - Categorical samples (activity_intensity, sleep_stage) add the minutes they overlap
//     each bucket to Minutes[level]; their numeric fields stay zero.
//
// Every statistic of a numeric bucket is over the contributions it holds: Count is the
// number of samples that touch the bucket (a sample spread over three buckets counts once
// in each), Sum the sum of their parts, Min and Max the smallest and largest part, Mean is
// Sum/Count, and Last is the part of the sample with the latest start (ties: the latest
// end, then the larger part). For instant types that is the usual mean, minimum, maximum
// and latest reading of the bucket. For interval types a chart wants Sum (steps in the
// hour); Mean is the mean contribution per sample, and a rate is Sum divided by the bucket's
// length, which the caller knows. Buckets does not choose between sources: two devices
// counting the same walk both count in the series, while DailyMetrics' Steps does choose.
//
// # Daily metrics
//
// DailyMetrics derives the metrics of DOMAIN.md per local day; a metric with no data on a
// day is nil (absent), never zero. The rules where DOMAIN.md leaves a choice are written on
// Daily's fields and on Sessions; in short:
//
//   - Steps: each sample is spread over the local minutes it overlaps; per local hour the
//     steps of one source are kept, the source with the most data in that hour: the longest
//     total overlap of its samples with the hour, then the most samples, then the most
//     steps, then the lexically smallest source id.
//   - A local minute's intensity is the level that covers most of it (ties: the higher
//     level); its steps are those of the hour's chosen source. Active minute: intensity ≥ 2,
//     or no intensity and ≥ 100 steps. Sedentary minute: outside every sleep session and
//     intensity 0, or no intensity and 0 steps; a minute with neither is unknown and ends
//     a run. A bout is ≥ 30 consecutive sedentary minutes and counts on the day it ends,
//     with its minutes of that day and the day before.
//   - Resting heart rate: the device's value (the last of the day); else the lowest mean
//     of 5 consecutive minute means of heart rate inside the sleep sessions of the day;
//     else the same over sedentary minutes with no steps in that minute and the 10 before.
//   - HRV: rMSSD over the RR intervals inside the day's sleep sessions, using successive
//     pairs of one source less than 3 s apart that change by at most 20 %, when there are
//     at least 30 such pairs; else the mean of the day's hrv_rmssd samples.
//   - Sleep: see Sessions. A session counts on the day it ends; in bed is the time covered
//     by any of its samples, asleep the time covered by light, deep or rem.
//   - Active energy and distance are spread over local days by overlap and summed; water
//     is summed, weight is the last reading, mood the mean.
//
// # Baselines
//
// Baseline compares the 7 days ending today with the 60 days before today (mean and sample
// standard deviation) and scores today against the latter; it is established once 14 of
// those 60 days have a value. LogBaseline does the same on ln(value), as HRV wants.
package agg
