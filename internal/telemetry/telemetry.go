// Package telemetry sets up what the server tells operators: structured logs (slog) and
// Prometheus metrics. Every metric of the server is declared here, on a registry of its own
// so that several servers can run in one test process.
//
// It is imported by cmd/pulsebase and by every package that records metrics.
package telemetry

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewLogger returns a logger writing to w: text when format is "text", JSON when "json",
// and for "auto" (or "") text on a terminal and JSON otherwise.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(format, "text") {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Metrics are the server's Prometheus metrics.
type Metrics struct {
	Registry *prometheus.Registry

	// Samples counts samples by type and outcome (accepted, duplicate, rejected) and, for
	// rejections, the code.
	Samples *prometheus.CounterVec
	// HTTPDuration is request latency by route pattern, method and status code.
	HTTPDuration *prometheus.HistogramVec
	// PublishDuration is the time from the first publish of a batch to its last broker ack.
	PublishDuration prometheus.Histogram
	// AuthFailures counts rejected credentials by reason.
	AuthFailures *prometheus.CounterVec

	// Processed counts samples the processor handled, by type and outcome: applied,
	// duplicate (a re-send or redelivery), backfill (applied through the stored buckets)
	// or no_consent.
	Processed *prometheus.CounterVec
	// Lag is, per partition, how many messages the processor has yet to apply.
	Lag *prometheus.GaugeVec
	// CheckpointTime is, per partition, the Unix time of the last committed checkpoint.
	CheckpointTime *prometheus.GaugeVec
	// DeadLetters counts messages set aside by reason.
	DeadLetters *prometheus.CounterVec
	// OwnedPartitions is how many partitions this process runs.
	OwnedPartitions prometheus.Gauge
	// ChangeLatency is the time from a sample's storage in SAMPLES (its broker
	// timestamp, just before ingest's ack) to the publication of the change it caused on
	// CHANGES.
	ChangeLatency prometheus.Histogram

	// SyncConnections is how many sync connections this process serves.
	SyncConnections prometheus.Gauge
	// SyncChangesSent counts change frames written to sync connections.
	SyncChangesSent prometheus.Counter
	// SyncCloses counts sync connections the server closed, by close code (or
	// "dead_peer" for one that stopped answering pings).
	SyncCloses *prometheus.CounterVec
	// SyncOverflows counts sync connections closed because their send queue overflowed.
	SyncOverflows prometheus.Counter
	// SyncSnapshots counts snapshots sent to devices without a usable cursor.
	SyncSnapshots prometheus.Counter
	// SyncDeliveryLatency is the time from a change message's storage in CHANGES to a
	// live change frame of it written to a sync connection.
	SyncDeliveryLatency prometheus.Histogram

	// RateLimited counts requests refused with 429, by scope (address, principal).
	RateLimited *prometheus.CounterVec

	// RecCandidates counts rules that fired (candidates before ranking), by kind.
	RecCandidates *prometheus.CounterVec
	// RecDecisions counts what became of candidates, by kind and reason: "delivered" or
	// why not (recommend.Reasons).
	RecDecisions *prometheus.CounterVec
	// RecFeedback counts feedback on recommendations, by kind and action.
	RecFeedback *prometheus.CounterVec
	// RecAcceptance is the pooled acceptance rate of a kind: the share of rewarded
	// feedback that was positive, over every user who allowed pooling.
	RecAcceptance *prometheus.GaugeVec
	// RuleErrors counts rule evaluations that failed, by kind.
	RuleErrors *prometheus.CounterVec
	// RuleEvaluation is the time one user's evaluation of the rule library takes.
	RuleEvaluation prometheus.Histogram
	// RuleReloads counts rule library loads by outcome (ok, error).
	RuleReloads *prometheus.CounterVec
	// RuleLibrary is 1 for the rule library in use, by its file and version.
	RuleLibrary *prometheus.GaugeVec
}

// NewMetrics registers the server's metrics, with Go runtime and process collectors, on a
// new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		Samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulsebase_samples_total",
			Help: "Samples received, by sample type, outcome (accepted, duplicate, rejected) and rejection code.",
		}, []string{"type", "outcome", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pulsebase_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern, method and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "method", "code"}),
		PublishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pulsebase_broker_publish_duration_seconds",
			Help:    "Time from publishing a batch of samples to the broker's last persistence ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulsebase_auth_failures_total",
			Help: "Requests refused for missing or invalid credentials, by reason.",
		}, []string{"reason"}),
	}
	m.Processed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_processor_samples_total",
		Help: "Samples handled by the stream processor, by type and outcome (applied, duplicate, backfill, no_consent).",
	}, []string{"type", "outcome"})
	m.Lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulsebase_processor_lag_messages",
		Help: "Messages of a SAMPLES partition not yet applied (stream sequence minus applied sequence).",
	}, []string{"partition"})
	m.CheckpointTime = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulsebase_processor_checkpoint_timestamp_seconds",
		Help: "Unix time of a partition's last committed checkpoint; its age is time() minus this.",
	}, []string{"partition"})
	m.DeadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_processor_dead_letters_total",
		Help: "Messages the processor could not use and set aside on the DEADLETTER stream, by reason.",
	}, []string{"reason"})
	m.OwnedPartitions = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pulsebase_processor_owned_partitions",
		Help: "SAMPLES partitions this process currently owns.",
	})
	m.ChangeLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulsebase_processor_change_latency_seconds",
		Help:    "Time from a sample's storage in the SAMPLES stream to the publication of its change on CHANGES.",
		Buckets: prometheus.ExponentialBuckets(0.001, 1.25, 40),
	})
	m.SyncConnections = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pulsebase_sync_connections",
		Help: "Sync (WebSocket) connections this process serves.",
	})
	m.SyncChangesSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pulsebase_sync_changes_sent_total",
		Help: "Change frames written to sync connections.",
	})
	m.SyncCloses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_sync_closes_total",
		Help: "Sync connections closed by the server, by close code (dead_peer: no answer to pings).",
	}, []string{"code"})
	m.SyncOverflows = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pulsebase_sync_overflows_total",
		Help: "Sync connections closed with 4008 because their send queue overflowed.",
	})
	m.SyncSnapshots = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pulsebase_sync_snapshots_total",
		Help: "Snapshots sent to devices that had no usable cursor.",
	})
	m.SyncDeliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulsebase_sync_delivery_latency_seconds",
		Help:    "Time from a change's storage in the CHANGES stream to its frame written to a sync connection.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 1.25, 40),
	})
	m.RateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_http_rate_limited_total",
		Help: "Requests refused with 429 by the rate limits, by scope (address: before authentication; principal: after).",
	}, []string{"scope"})
	r.MustRegister(m.RateLimited)
	m.RecCandidates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_recommend_candidates_total",
		Help: "Recommendation rules that fired for a user (candidates before ranking), by kind.",
	}, []string{"kind"})
	m.RecDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_recommend_decisions_total",
		Help: "Candidates by kind and outcome: delivered, or the reason they were suppressed (quiet_hours, daily_cap, cooldown, already_active, nudge_disabled, outranked).",
	}, []string{"kind", "reason"})
	m.RecFeedback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_recommend_feedback_total",
		Help: "Feedback on recommendations by kind and action (accepted, dismissed, completed, snoozed, ignored).",
	}, []string{"kind", "action"})
	m.RecAcceptance = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulsebase_recommend_acceptance_ratio",
		Help: "Pooled acceptance rate of a recommendation kind (positive share of rewarded feedback).",
	}, []string{"kind"})
	m.RuleErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_recommend_rule_errors_total",
		Help: "Rule evaluations that failed (the rule did not fire), by kind.",
	}, []string{"kind"})
	m.RuleEvaluation = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pulsebase_recommend_evaluation_seconds",
		Help:    "Time to evaluate a user's rules once (building the state, the conditions, the texts).",
		Buckets: prometheus.ExponentialBuckets(0.000001, 2, 20),
	})
	m.RuleReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsebase_recommend_rule_reloads_total",
		Help: "Rule library loads by outcome (ok, error: the last good library stays in use).",
	}, []string{"outcome"})
	m.RuleLibrary = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulsebase_recommend_rule_library",
		Help: "1 for the rule library in use, by file (starter.yaml: the built-in one) and version.",
	}, []string{"file", "version"})
	r.MustRegister(m.RecCandidates, m.RecDecisions, m.RecFeedback, m.RecAcceptance, m.RuleErrors, m.RuleEvaluation, m.RuleReloads, m.RuleLibrary)
	r.MustRegister(m.Samples, m.HTTPDuration, m.PublishDuration, m.AuthFailures,
		m.Processed, m.Lag, m.CheckpointTime, m.DeadLetters, m.OwnedPartitions, m.ChangeLatency,
		m.SyncConnections, m.SyncChangesSent, m.SyncCloses, m.SyncOverflows, m.SyncSnapshots, m.SyncDeliveryLatency)
	return m
}
