package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Sealed batches.
const (
	// MediaSealed is the content type of a batch sealed to the processing tier.
	MediaSealed = pulsebase.MediaSealed
	// KindSealed is the record kind of a sealed batch in the SAMPLES stream.
	KindSealed = "sealed"
	// KindHeader names the kind of a SAMPLES message; plain samples have none.
	KindHeader = "Pulsebase-Kind"
)

// SealedBatch is the body of a sealed request.
type SealedBatch = pulsebase.SealedBatch

// SealedRecord is what the stream keeps of a sealed batch, itself sealed under the user's
// data key: the HPKE ciphertext, which only the processing tier opens, and provenance.
type SealedRecord struct {
	KeyID    string    `json:"key_id"`
	Sealed   []byte    `json:"sealed"`
	Device   string    `json:"device,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Received time.Time `json:"received"`
}

// SealedResult is the outcome of a sealed batch: stored as one record, whose samples are
// validated, deduplicated and counted by the processor.
type SealedResult struct {
	Batch     string `json:"batch"`
	Duplicate bool   `json:"duplicate"`
}

// processingKeys caches the processing tier's public keys; rotations are rare, so a
// short refresh interval keeps the ingest tier current without a query per request.
type processingKeys struct {
	mu      sync.Mutex
	keys    []vault.ProcessingKey
	fetched time.Time
}

const processingKeysTTL = 10 * time.Second

func (s *Service) acceptedKey(ctx context.Context, id string) (bool, error) {
	pk := &s.pkeys
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if time.Since(pk.fetched) > processingKeysTTL {
		keys, err := s.vault.ProcessingKeys(ctx)
		if err != nil {
			return false, err
		}
		pk.keys, pk.fetched = keys, time.Now()
	}
	for _, k := range pk.keys {
		if k.KeyID == id && (k.NotAfter.IsZero() || time.Now().Before(k.NotAfter)) {
			return true, nil
		}
	}
	return false, nil
}

// IngestSealed stores a sealed batch for user without opening it: the ingest tier checks
// the token, the size and that the key id is a current processing key, then keeps the
// ciphertext, sealed once more under the user's data key. Re-sending the same sealed bytes
// is a duplicate. Consent and per-sample validation happen in the processor, which reports
// rejections on the user's change feed.
func (s *Service) IngestSealed(ctx context.Context, user string, p pulsebase.Principal, b SealedBatch) (SealedResult, error) {
	if b.KeyID == "" || len(b.Sealed) == 0 {
		return SealedResult{}, pulsebase.Errorf(pulsebase.EINVALID, "key_id and sealed are required")
	}
	ok, err := s.acceptedKey(ctx, b.KeyID)
	if err != nil {
		return SealedResult{}, err
	}
	if !ok {
		return SealedResult{}, pulsebase.Errorf(pulsebase.EINVALID, "unknown or expired processing key id; fetch GET /v1/keys/processing")
	}
	keys, err := s.vault.UserKeys(ctx, user)
	if err != nil {
		return SealedResult{}, fmt.Errorf("user keys: %w", err)
	}
	sum := sha256.Sum256(b.Sealed)
	id, err := keys.Identity(append([]byte("sealed\x00"), sum[:]...))
	if err != nil {
		return SealedResult{}, err
	}
	pt, err := json.Marshal(SealedRecord{KeyID: b.KeyID, Sealed: b.Sealed, Device: p.Device, Subject: p.Subject, Received: s.now().UTC()})
	if err != nil {
		return SealedResult{}, err
	}
	ct, err := keys.Seal(KindSealed, id, pt)
	if err != nil {
		return SealedResult{}, err
	}
	acks, err := s.pub.PublishSamples(ctx, user, []broker.Message{{ID: id, Data: ct, Header: nats.Header{KindHeader: []string{KindSealed}}}})
	if err != nil {
		return SealedResult{}, fmt.Errorf("publish sealed batch: %w", err)
	}
	outcome := "accepted"
	if acks[0].Duplicate {
		outcome = "duplicate"
	}
	s.count("sealed_batch", outcome, "")
	return SealedResult{Batch: id, Duplicate: acks[0].Duplicate}, nil
}

// OpenSealedRecord decrypts a sealed-batch message read back from the SAMPLES stream.
func OpenSealedRecord(keys *vault.Keys, id string, data []byte) (SealedRecord, error) {
	var r SealedRecord
	pt, err := keys.Open(KindSealed, id, data)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(pt, &r); err != nil {
		return r, fmt.Errorf("decode sealed record: %w", err)
	}
	return r, nil
}
