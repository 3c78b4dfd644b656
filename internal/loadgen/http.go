package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
)

// HTTPTarget posts a Workload's requests to POST /v1/samples of a Pulsebase server, each
// with its user's bearer token.
type HTTPTarget struct {
	base    string
	tokens  []string
	w       *Workload
	client  *http.Client
	timeout time.Duration

	// sealed posts every batch sealed to the processing key (as application/
	// pulsebase-sealed+json); key and userIDs are learnt in WarmUp.
	sealed  bool
	key     pulsebase.ProcessingKey
	userIDs []string
}

// Seal makes the target seal every batch to the server's processing key, as a device
// that wants the ingest tier not to read its samples does. Call it before WarmUp.
func (t *HTTPTarget) Seal() { t.sealed = true }

// NewHTTPTarget returns a target for the server at baseURL (http://host:port). tokens[u]
// is the bearer token of w.Subject(u); there must be one per user. conns is the most
// connections kept open to the server, at least the run's concurrency; timeout bounds a
// request.
func NewHTTPTarget(baseURL string, tokens []string, w *Workload, conns int, timeout time.Duration) (*HTTPTarget, error) {
	if len(tokens) != w.Users() {
		return nil, fmt.Errorf("got %d tokens for %d users", len(tokens), w.Users())
	}
	tr := &http.Transport{
		Proxy:               nil, // a benchmark measures the server, not a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &HTTPTarget{
		base:    strings.TrimSuffix(baseURL, "/"),
		tokens:  tokens,
		w:       w,
		client:  &http.Client{Transport: tr},
		timeout: timeout,
	}, nil
}

// Name is "http", or "http-sealed" for sealed batches.
func (t *HTTPTarget) Name() string {
	if t.sealed {
		return "http-sealed"
	}
	return "http"
}

// Close closes the idle connections.
func (t *HTTPTarget) Close() { t.client.CloseIdleConnections() }

// WarmUp asks GET /v1/users/me for every user, so that the server creates the users and
// their keys before the clock starts rather than during the first requests.
func (t *HTTPTarget) WarmUp(ctx context.Context, concurrency int) error {
	if t.sealed {
		if err := t.getJSON(ctx, "", "/v1/keys/processing", &struct {
			Keys []*pulsebase.ProcessingKey `json:"keys"`
		}{Keys: []*pulsebase.ProcessingKey{&t.key}}); err != nil {
			return err
		}
	}
	t.userIDs = make([]string, len(t.tokens))
	errc := make(chan error, len(t.tokens))
	sem := make(chan struct{}, concurrency)
	for u, tok := range t.tokens {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errc <- t.me(ctx, u, tok)
		}()
	}
	var errs []error
	for range t.tokens {
		if err := <-errc; err != nil && len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// getJSON GETs path with tok (if any) and decodes the 200 answer into out.
func (t *HTTPTarget) getJSON(ctx context.Context, tok, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return getJSON(ctx, t.client, t.base+path, tok, out)
}

// getJSON GETs url with tok (if any) and decodes the 200 answer into out.
func getJSON(ctx context.Context, c *http.Client, url, tok string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", req.URL.Path, resp.Status, bytes.TrimSpace(body[:min(len(body), 512)]))
	}
	return json.Unmarshal(body, out)
}

func (t *HTTPTarget) me(ctx context.Context, u int, tok string) error {
	var me struct {
		ID string `json:"id"`
	}
	if err := t.getJSON(ctx, tok, "/v1/users/me", &me); err != nil {
		return err
	}
	t.userIDs[u] = me.ID
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// Like an app, record the user's consent before sending data: without it every sample
	// would be rejected with no_consent.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, t.base+"/v1/users/me/consents", strings.NewReader(benchConsent))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT /v1/users/me/consents: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// benchConsent grants every category the workload sends.
const benchConsent = `{"collect":{"heart":true,"activity":true,"sleep":true,"body":true,"mind":true,"nutrition":true},"purposes":{"personalization":true}}`

// ingestResult is the part of a 202 (or 422 problem) body the report needs.
type ingestResult struct {
	Accepted   int               `json:"accepted"`
	Duplicates int               `json:"duplicates"`
	Rejected   []json.RawMessage `json:"rejected"`
	Detail     string            `json:"detail"`
	Sealed     *struct {
		Duplicate bool `json:"duplicate"`
	} `json:"sealed"`
}

// Send posts request n.
func (t *HTTPTarget) Send(ctx context.Context, n int64) Outcome {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	body, ct := t.w.Body(n), "application/json"
	if t.sealed {
		// Sealing is the device's work: it is done here, inside the request's time, as a
		// device would before sending.
		sb, err := pulsebase.SealBatch(t.key, t.userIDs[t.w.User(n)], body)
		if err == nil {
			body, err = json.Marshal(sb)
		}
		if err != nil {
			return Outcome{Status: "error", Err: err}
		}
		ct = pulsebase.MediaSealed
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/v1/samples", bytes.NewReader(body))
	if err != nil {
		return Outcome{Status: "error", Err: err}
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+t.tokens[t.w.User(n)])
	resp, err := t.client.Do(req)
	if err != nil {
		return Outcome{Status: "error", Err: err}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	o := Outcome{Status: strconv.Itoa(resp.StatusCode)}
	if err != nil {
		o.Err = fmt.Errorf("read response: %w", err)
		return o
	}
	var res ingestResult
	if jerr := json.Unmarshal(answer, &res); jerr != nil && resp.StatusCode == http.StatusAccepted {
		o.Err = fmt.Errorf("decode response: %w", jerr)
		return o
	}
	o.Accepted, o.Duplicates, o.Rejected = res.Accepted, res.Duplicates, len(res.Rejected)
	if res.Sealed != nil {
		// A sealed batch is stored whole; its samples are counted by the processor.
		if res.Sealed.Duplicate {
			o.Duplicates = t.w.Batch()
		} else {
			o.Accepted = t.w.Batch()
		}
	}
	if resp.StatusCode != http.StatusAccepted {
		o.Err = fmt.Errorf("%s: %s", resp.Status, res.Detail)
	}
	return o
}
