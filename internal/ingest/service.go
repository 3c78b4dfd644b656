package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// KindSample is the record kind of a sample in the SAMPLES stream; it is part of the
// associated data its ciphertext is bound to.
const KindSample = "sample"

// Publisher stores messages of one user durably; *broker.Broker is the one in production.
type Publisher interface {
	PublishSamples(ctx context.Context, user string, msgs []broker.Message) ([]broker.PubResult, error)
}

// ConsentChecker answers whether a user consented to collecting a category of data;
// *consent.Service is the one in production.
type ConsentChecker interface {
	MayCollect(ctx context.Context, user string, c pulsebase.Category) (bool, error)
}

// Service validates, normalizes, checks consent for, deduplicates, encrypts and publishes
// batches of samples. It is transport-agnostic: the HTTP handler uses it now, the
// WebSocket sync gateway later.
type Service struct {
	vault   *vault.Vault
	consent ConsentChecker
	pub     Publisher
	metrics *telemetry.Metrics
	log     *slog.Logger
	now     func() time.Time
	pkeys   processingKeys
}

// NewService returns an ingest service. now is the clock used for time sanity checks and
// for the received time of samples; nil means time.Now.
func NewService(v *vault.Vault, c ConsentChecker, pub Publisher, m *telemetry.Metrics, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{vault: v, consent: c, pub: pub, metrics: m, log: log, now: now}
}

// Result is the outcome of one batch. Rejected is never nil so that it encodes as [].
type Result struct {
	Accepted   int                   `json:"accepted"`
	Duplicates int                   `json:"duplicates"`
	Rejected   []pulsebase.Rejection `json:"rejected"`
}

// Ingest handles a batch of samples sent by p for user (an internal id). When it returns
// without error, every accepted sample is durably stored in the broker. A sample already
// stored (within the broker's duplicate window) or repeated within the batch counts as a
// duplicate; a sample with problems, or of a category the user has not consented to
// collect (code no_consent), is rejected and nothing of it is stored.
//
// It returns an error only when the batch could not be stored; the caller may retry the
// whole batch, and what was stored the first time is then reported as duplicates.
func (s *Service) Ingest(ctx context.Context, user string, p pulsebase.Principal, in []pulsebase.SampleInput) (Result, error) {
	res := Result{Rejected: []pulsebase.Rejection{}}
	keys, err := s.vault.UserKeys(ctx, user)
	if err != nil {
		return res, fmt.Errorf("user keys: %w", err)
	}
	now := s.now()
	received := now.UTC()

	msgs := make([]broker.Message, 0, len(in))
	types := make([]string, 0, len(in)) // types[i] is the type of msgs[i], for metrics
	seen := make(map[string]struct{}, len(in))
	collect := map[pulsebase.Category]bool{} // consent answers, asked once per category per batch
	var buf []byte                           // the record being sealed, reused
	for i := range in {
		smp, problems := pulsebase.Normalize(in[i], now)
		if len(problems) > 0 {
			res.Rejected = append(res.Rejected, pulsebase.Rejection{
				Index: i, Code: problems[0].Code, Detail: problems[0].Detail, Problems: problems,
			})
			s.count(typeLabel(in[i].Type), "rejected", problems[0].Code)
			continue
		}
		if ok, err := s.mayCollect(ctx, user, smp.Type, collect); err != nil {
			return res, err
		} else if !ok {
			p := pulsebase.Problem{Code: pulsebase.CodeNoConsent, Field: "type",
				Detail: "no consent to collect " + smp.Type + " data"}
			res.Rejected = append(res.Rejected, pulsebase.Rejection{Index: i, Code: p.Code, Detail: p.Detail, Problems: []pulsebase.Problem{p}})
			s.count(smp.Type, "rejected", p.Code)
			continue
		}
		id, err := keys.Identity(smp.Identity())
		if err != nil {
			return res, err
		}
		if _, dup := seen[id]; dup {
			res.Duplicates++
			s.count(smp.Type, "duplicate", "")
			continue
		}
		seen[id] = struct{}{}
		smp.Device = p.Device
		smp.Subject = p.Subject
		smp.Received = received
		buf = AppendSample(buf[:0], &smp)
		ct, err := keys.Seal(KindSample, id, buf)
		if err != nil {
			return res, fmt.Errorf("seal sample: %w", err)
		}
		msgs = append(msgs, broker.Message{ID: id, Data: ct})
		types = append(types, smp.Type)
	}
	if len(msgs) == 0 {
		return res, nil
	}
	start := time.Now()
	acks, err := s.pub.PublishSamples(ctx, user, msgs)
	if err != nil {
		return res, fmt.Errorf("publish samples: %w", err)
	}
	if s.metrics != nil {
		s.metrics.PublishDuration.Observe(time.Since(start).Seconds())
	}
	for i, a := range acks {
		if a.Duplicate {
			res.Duplicates++
			s.count(types[i], "duplicate", "")
		} else {
			res.Accepted++
			s.count(types[i], "accepted", "")
		}
	}
	return res, nil
}

// mayCollect answers from the batch's memo of consent decisions, asking the consent
// service once per category.
func (s *Service) mayCollect(ctx context.Context, user, typ string, memo map[pulsebase.Category]bool) (bool, error) {
	t, _ := pulsebase.LookupType(typ)
	ok, seen := memo[t.Category]
	if seen {
		return ok, nil
	}
	ok, err := s.consent.MayCollect(ctx, user, t.Category)
	if err != nil {
		return false, fmt.Errorf("consent: %w", err)
	}
	memo[t.Category] = ok
	return ok, nil
}

func (s *Service) count(typ, outcome, code string) {
	if s.metrics != nil {
		s.metrics.Samples.WithLabelValues(typ, outcome, code).Inc()
	}
}

// typeLabel bounds the cardinality of the type label: a client can send any string as a
// type, but only known types get their own time series.
func typeLabel(t string) string {
	if _, ok := pulsebase.LookupType(t); ok {
		return t
	}
	return "unknown"
}

// OpenSample decrypts and decodes a sample message read back from the SAMPLES stream for
// the owner of keys. id is the message's Nats-Msg-Id, which the ciphertext is bound to.
func OpenSample(keys *vault.Keys, id string, data []byte) (pulsebase.Sample, error) {
	var smp pulsebase.Sample
	pt, err := keys.Open(KindSample, id, data)
	if err != nil {
		return smp, err
	}
	if smp, err = DecodeSample(pt); err != nil {
		return smp, fmt.Errorf("decode sample: %w", err)
	}
	return smp, nil
}
