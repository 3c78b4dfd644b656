package client

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// Recommendation is a recommendation delivered to the user (API.md "Recommendations"),
// with its state as of the answer and the user's feedback on it.
type Recommendation struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	Title string `json:"title"`
	Body  string `json:"body"`
	// Why says in words what in the user's own data made it; Evidence holds the values
	// it quotes.
	Why      string         `json:"why"`
	Evidence map[string]any `json:"evidence"`
	Created  time.Time      `json:"created"`
	Expires  time.Time      `json:"expires"`
	// State is active, accepted, completed, dismissed, snoozed, ignored or expired.
	State    string `json:"state"`
	Priority int    `json:"priority"`
	// Decision is the id of the ranking decision that delivered it; Library the version
	// of the rule library that made it.
	Decision string `json:"decision"`
	Library  string `json:"library"`
	// Feedback lists the user's actions on it, oldest first.
	Feedback []RecommendationFeedback `json:"feedback,omitempty"`
}

// RecommendationFeedback is one action of the user on a recommendation; Rating is 0 when
// none was given.
type RecommendationFeedback struct {
	Action string    `json:"action"`
	Rating int       `json:"rating,omitempty"`
	At     time.Time `json:"at"`
}

// Recommendations returns the caller's recommendations, newest first: with state "" or
// "active" those still on screen (active, or accepted and not expired), with "all" every
// one of the last 90 days (at most 100). Another state is refused with an *Error with
// status 400.
func (c *Client) Recommendations(ctx context.Context, state string) ([]Recommendation, error) {
	path := "/v1/users/me/recommendations"
	if state != "" {
		path += "?state=" + url.QueryEscape(state)
	}
	var out struct {
		Recommendations []Recommendation `json:"recommendations"`
	}
	err := c.do(ctx, "GET", path, "", nil, &out)
	return out.Recommendations, err
}

// Feedback records the caller's action on the recommendation id: "accepted", "dismissed",
// "completed" or "snoozed", with a rating from 1 to 5, or 0 for none. Sending the same
// action again is harmless (it is recorded once), so a failed call may simply be retried.
// An unknown action or a rating out of range is an *Error with status 400, an unknown id
// one with status 404.
func (c *Client) Feedback(ctx context.Context, id, action string, rating int) error {
	in := struct {
		Action string `json:"action"`
		Rating int    `json:"rating,omitempty"`
	}{action, rating}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, "POST", "/v1/users/me/recommendations/"+url.PathEscape(id)+"/feedback", "application/json", body, nil)
}
