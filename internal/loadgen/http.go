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
)

// HTTPTarget posts a Workload's requests to POST /v1/samples of a Pulsebase server, each
// with its user's bearer token.
type HTTPTarget struct {
	base    string
	tokens  []string
	w       *Workload
	client  *http.Client
	timeout time.Duration
}

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

// Name is "http".
func (t *HTTPTarget) Name() string { return "http" }

// Close closes the idle connections.
func (t *HTTPTarget) Close() { t.client.CloseIdleConnections() }

// WarmUp asks GET /v1/users/me for every user, so that the server creates the users and
// their keys before the clock starts rather than during the first requests.
func (t *HTTPTarget) WarmUp(ctx context.Context, concurrency int) error {
	errc := make(chan error, len(t.tokens))
	sem := make(chan struct{}, concurrency)
	for _, tok := range t.tokens {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errc <- t.me(ctx, tok)
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

func (t *HTTPTarget) me(ctx context.Context, tok string) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/v1/users/me", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/users/me: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	// Like an app, record the user's consent before sending data: without it every sample
	// would be rejected with no_consent.
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, t.base+"/v1/users/me/consents", strings.NewReader(benchConsent))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err = t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 4<<10))
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
}

// Send posts request n.
func (t *HTTPTarget) Send(ctx context.Context, n int64) Outcome {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/v1/samples", bytes.NewReader(t.w.Body(n)))
	if err != nil {
		return Outcome{Status: "error", Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+t.tokens[t.w.User(n)])
	resp, err := t.client.Do(req)
	if err != nil {
		return Outcome{Status: "error", Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	o := Outcome{Status: strconv.Itoa(resp.StatusCode)}
	if err != nil {
		o.Err = fmt.Errorf("read response: %w", err)
		return o
	}
	var res ingestResult
	if jerr := json.Unmarshal(body, &res); jerr != nil && resp.StatusCode == http.StatusAccepted {
		o.Err = fmt.Errorf("decode response: %w", jerr)
		return o
	}
	o.Accepted, o.Duplicates, o.Rejected = res.Accepted, res.Duplicates, len(res.Rejected)
	if resp.StatusCode != http.StatusAccepted {
		o.Err = fmt.Errorf("%s: %s", resp.Status, res.Detail)
	}
	return o
}
