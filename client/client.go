// Package client is the Go SDK for Pulsebase: what a device, an app or a test uses to send
// samples, record consent and seal batches for the processing tier. It speaks the public
// HTTP API of API.md and nothing else, so it works against any Pulsebase deployment.
//
// The sync connection, the offline queue and the profile replica join it with issue [4].
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
)

// Client calls one Pulsebase server with one bearer token. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (for TLS settings, proxies or timeouts); the default
// has a 30-second timeout.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// New returns a client of the server at baseURL (e.g. "https://api.example.com")
// authenticating with token.
func New(baseURL, token string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is an error answer of the server: an RFC 9457 problem with a stable Code.
type Error struct {
	Status   int                   `json:"status"`
	Code     string                `json:"code"`
	Detail   string                `json:"detail"`
	Rejected []pulsebase.Rejection `json:"rejected,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("pulsebase: %d %s: %s", e.Status, e.Code, e.Detail)
}

// IngestResult is the answer to a batch of samples. For a sealed batch, Sealed says
// whether it was stored or was a duplicate; its samples are counted by the processor.
type IngestResult struct {
	Accepted   int                   `json:"accepted"`
	Duplicates int                   `json:"duplicates"`
	Rejected   []pulsebase.Rejection `json:"rejected"`
	Sealed     *struct {
		Batch     string `json:"batch"`
		Duplicate bool   `json:"duplicate"`
	} `json:"sealed,omitempty"`
}

// PostSamples sends a batch (at most 5,000 samples). A nil error means every accepted
// sample is durably stored; rejected samples are listed in the result. When every sample
// is rejected the error is an *Error with status 422 listing them.
func (c *Client) PostSamples(ctx context.Context, samples []pulsebase.SampleInput) (IngestResult, error) {
	body, err := json.Marshal(map[string]any{"samples": samples})
	if err != nil {
		return IngestResult{}, err
	}
	var res IngestResult
	err = c.do(ctx, "POST", "/v1/samples", "application/json", body, &res)
	return res, err
}

// User is the caller's account.
type User struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// Me returns the caller's internal pseudonymous user.
func (c *Client) Me(ctx context.Context) (User, error) {
	var u User
	err := c.do(ctx, "GET", "/v1/users/me", "", nil, &u)
	return u, err
}

// Consent returns the caller's current consent.
func (c *Client) Consent(ctx context.Context) (pulsebase.Consent, error) {
	var out pulsebase.Consent
	err := c.do(ctx, "GET", "/v1/users/me/consents", "", nil, &out)
	return out, err
}

// SetConsent replaces the caller's consent (absent entries are false) and returns the new
// version. Only a user token may do this, not a device token.
func (c *Client) SetConsent(ctx context.Context, collect map[pulsebase.Category]bool, purposes map[pulsebase.Purpose]bool) (pulsebase.Consent, error) {
	body, err := json.Marshal(map[string]any{"collect": collect, "purposes": purposes})
	if err != nil {
		return pulsebase.Consent{}, err
	}
	var out pulsebase.Consent
	err = c.do(ctx, "PUT", "/v1/users/me/consents", "application/json", body, &out)
	return out, err
}

// ProcessingKey returns the processing tier's current public key, to seal batches to.
func (c *Client) ProcessingKey(ctx context.Context) (pulsebase.ProcessingKey, error) {
	var out struct {
		Keys []pulsebase.ProcessingKey `json:"keys"`
	}
	if err := c.do(ctx, "GET", "/v1/keys/processing", "", nil, &out); err != nil {
		return pulsebase.ProcessingKey{}, err
	}
	if len(out.Keys) == 0 {
		return pulsebase.ProcessingKey{}, errors.New("pulsebase: the server published no processing key")
	}
	return out.Keys[0], nil
}

// Seal seals samples for user (the internal id from Me) to the processing key k, so that
// only the processing tier can read them; the ingest tier stores them unopened.
func Seal(k pulsebase.ProcessingKey, user string, samples []pulsebase.SampleInput) (pulsebase.SealedBatch, error) {
	pt, err := json.Marshal(map[string]any{"samples": samples})
	if err != nil {
		return pulsebase.SealedBatch{}, err
	}
	return pulsebase.SealBatch(k, user, pt)
}

// PostSealed sends a sealed batch. Re-sending the same sealed batch is reported as a
// duplicate.
func (c *Client) PostSealed(ctx context.Context, b pulsebase.SealedBatch) (IngestResult, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return IngestResult{}, err
	}
	var res IngestResult
	err = c.do(ctx, "POST", "/v1/samples", pulsebase.MediaSealed, body, &res)
	return res, err
}

// do sends one request and decodes a 2xx JSON answer into out, or returns an *Error.
func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Detail = "http_error", resp.Status
		}
		return e
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, out)
}
