package pulsebase

import (
	"encoding/json"
	"time"
)

// Category is a consent category a sample type belongs to.
type Category string

// The consent categories of DOMAIN.md.
const (
	CategoryHeart     Category = "heart"
	CategoryActivity  Category = "activity"
	CategorySleep     Category = "sleep"
	CategoryBody      Category = "body"
	CategoryMind      Category = "mind"
	CategoryNutrition Category = "nutrition"
)

// SampleInput is a sample as a client sends it, before validation. Value is kept raw so
// that a number, a category name or a wrong JSON type can each be told apart.
type SampleInput struct {
	ID     string          `json:"id,omitempty"`
	Type   string          `json:"type"`
	Value  json.RawMessage `json:"value"`
	Unit   string          `json:"unit,omitempty"`
	Start  string          `json:"start"`
	End    string          `json:"end,omitempty"`
	Source string          `json:"source"`
	Zone   string          `json:"zone,omitempty"`
}

// Sample is a validated, normalized measurement together with its provenance.
type Sample struct {
	// ID is the client's id for the sample, if it gave one.
	ID   string `json:"id,omitempty"`
	Type string `json:"type"`
	// Value is in the canonical unit of Type. For categorical types it is the level index
	// (sleep_stage: in_bed 0, awake 1, light 2, deep 3, rem 4; activity_intensity 0..3)
	// and Level holds the name.
	Value float64 `json:"value"`
	Level string  `json:"level,omitempty"`
	Unit  string  `json:"unit"`
	// OrigValue and OrigUnit are the value and unit exactly as sent.
	OrigValue json.RawMessage `json:"orig_value"`
	OrigUnit  string          `json:"orig_unit,omitempty"`
	// Start and End keep the offset the client sent; End equals Start for instant readings.
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Zone   string    `json:"zone,omitempty"`
	Source string    `json:"source"`

	// Provenance, set by the server.
	Device   string    `json:"device,omitempty"`  // device id of the token, if any
	Subject  string    `json:"subject,omitempty"` // external subject of the token
	Received time.Time `json:"received"`
}

// Problem is one thing wrong with a sample.
type Problem struct {
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
	Detail string `json:"detail"`
}

// Rejection reports why the sample at Index of a batch was not accepted. Code and Detail
// are those of the first problem; Problems lists all of them.
type Rejection struct {
	Index    int       `json:"index"`
	Code     string    `json:"code"`
	Detail   string    `json:"detail"`
	Problems []Problem `json:"problems,omitempty"`
}
