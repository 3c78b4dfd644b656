package httpapi

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

type obj = map[string]any

// buildOpenAPI renders the OpenAPI 3.1 document of routes.
func buildOpenAPI(routes []route, version string) []byte {
	paths := obj{}
	for _, rt := range routes {
		op := obj{"operationId": rt.ID, "summary": rt.Summary, "tags": []string{rt.Tag}}
		if rt.Action != "" {
			var roles []string
			for _, r := range auth.Roles(rt.Action) {
				roles = append(roles, string(r))
			}
			op["security"] = []obj{{"bearer": []string{}}}
			op["x-roles"] = roles
		} else {
			op["security"] = []obj{}
		}
		if len(rt.Params) > 0 {
			var ps []obj
			for _, p := range rt.Params {
				ps = append(ps, obj{"name": p.Name, "in": p.In, "description": p.Description, "required": p.Required, "schema": obj{"type": "string"}})
			}
			op["parameters"] = ps
		}
		if len(rt.RequestBody) > 0 {
			content := obj{}
			for ct, schema := range rt.RequestBody {
				content[ct] = obj{"schema": ref(schema)}
			}
			op["requestBody"] = obj{"required": true, "content": content}
		}
		resps := obj{}
		for _, r := range rt.Responses {
			o := obj{"description": r.Description}
			if r.ContentType != "" {
				c := obj{}
				if r.Schema != "" {
					c["schema"] = ref(r.Schema)
				}
				o["content"] = obj{r.ContentType: c}
			}
			resps[strconv.Itoa(r.Status)] = o
		}
		if _, ok := resps["429"]; !ok && !rt.Unlimited {
			resps["429"] = obj{"description": "rate limited (per source address, and per principal once authenticated); see Retry-After",
				"headers": obj{"Retry-After": obj{"schema": obj{"type": "integer"}, "description": "seconds to wait"}},
				"content": obj{problemJSON: obj{"schema": ref("Problem")}}}
		}
		op["responses"] = resps
		item, _ := paths[rt.Pattern].(obj)
		if item == nil {
			item = obj{}
			paths[rt.Pattern] = item
		}
		item[lower(rt.Method)] = op
	}
	doc := obj{
		"openapi": "3.1.0",
		"info": obj{
			"title":       "Pulsebase API",
			"version":     version,
			"description": "The backend personalized wellness apps run on. Every error is application/problem+json (RFC 9457) with a stable `code`.",
		},
		"paths": paths,
		"components": obj{
			"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
			"schemas":         schemas(),
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err) // the document is built from literals; failing here is a programming error
	}
	return b
}

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func lower(m string) string {
	b := []byte(m)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func schemas() obj {
	var types []string
	for _, t := range pulsebase.SampleTypes() {
		types = append(types, t.Name)
	}
	var categories, purposes []string
	for _, c := range pulsebase.Categories() {
		categories = append(categories, string(c))
	}
	for _, p := range pulsebase.Purposes() {
		purposes = append(purposes, string(p))
	}
	str := obj{"type": "string"}
	integer := obj{"type": "integer"}
	dateTime := obj{"type": "string", "format": "date-time"}
	num := obj{"type": "number"}
	rejection := obj{
		"type":     "object",
		"required": []string{"index", "code", "detail"},
		"properties": obj{
			"index":  integer,
			"code":   obj{"type": "string", "enum": []string{pulsebase.CodeUnknownType, pulsebase.CodeBadUnit, pulsebase.CodeOutOfRange, pulsebase.CodeBadTime, pulsebase.CodeFutureTime, pulsebase.CodeMissingField, pulsebase.CodeBadValue, pulsebase.CodeNoConsent}},
			"detail": str,
			"problems": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
				"code": str, "field": str, "detail": str,
			}}},
		},
	}
	return obj{
		"TokenKeyRotation": obj{"type": "object", "required": []string{"kid", "retired_kid", "retired_until"},
			"properties": obj{"kid": str, "retired_kid": str, "retired_until": dateTime}},
		"DeviceEnrollment": obj{
			"type": "object", "required": []string{"csr"},
			"properties": obj{
				"device": obj{"type": "string", "description": "the device id (enrollment only): 1..64 printable ASCII characters, no spaces"},
				"csr":    obj{"type": "string", "description": "PKCS#10 certificate request, PEM (or base64 DER), for an ECDSA P-256/P-384, Ed25519 or RSA ≥ 2048 key"},
			},
		},
		"DeviceCredentials": obj{
			"type": "object", "required": []string{"device", "serial", "not_after", "access_token", "token_type", "expires_in", "refresh_token"},
			"properties": obj{
				"device": str, "serial": str, "not_after": dateTime,
				"certificate":   obj{"type": "string", "description": "the client certificate, PEM (enrollment and renewal)"},
				"ca":            obj{"type": "string", "description": "the device CA's certificate, PEM"},
				"access_token":  obj{"type": "string", "description": "a device token bound to the certificate (cnf x5t#S256)"},
				"token_type":    str,
				"expires_in":    integer,
				"refresh_token": obj{"type": "string", "description": "single-use; rotated at every exchange"},
				"device_url":    obj{"type": "string", "description": "the device listener's base URL"},
			},
		},
		"Devices": obj{"type": "object", "required": []string{"devices"},
			"properties": obj{"devices": obj{"type": "array", "items": obj{
				"type": "object", "required": []string{"id", "serial", "not_after", "enrolled", "renewed", "rotations"},
				"properties": obj{"id": str, "serial": str, "not_after": dateTime, "enrolled": dateTime, "renewed": dateTime,
					"rotations": obj{"type": "integer", "description": "how many times the refresh token was rotated (refreshes and renewals)"}, "revoked": dateTime, "revoked_reason": obj{"type": "string", "enum": []string{"owner", "refresh_reuse"}}},
			}}}},
		"TokenRequest": obj{"type": "object", "required": []string{"grant_type", "refresh_token"},
			"properties": obj{"grant_type": obj{"type": "string", "enum": []string{"refresh_token"}}, "refresh_token": str}},
		"GrantInput": obj{
			"type": "object", "required": []string{"to", "categories", "until"},
			"properties": obj{
				"to":         obj{"type": "string", "description": "the grantee's subject"},
				"categories": obj{"type": "array", "items": obj{"type": "string", "enum": categories}},
				"until":      dateTime,
			},
		},
		"Grant": obj{
			"type": "object", "required": []string{"id", "to", "categories", "until", "created", "active"},
			"properties": obj{
				"id": str, "to": str, "until": dateTime, "created": dateTime,
				"categories": obj{"type": "array", "items": obj{"type": "string", "enum": categories}},
				"active":     obj{"type": "boolean"},
			},
		},
		"Grants": obj{"type": "object", "required": []string{"grants"},
			"properties": obj{"grants": obj{"type": "array", "items": ref("Grant")}}},
		"SampleInput": obj{
			"type":     "object",
			"required": []string{"type", "value", "start", "source"},
			"properties": obj{
				"id":     obj{"type": "string", "description": "client id; the sample's identity for deduplication when given"},
				"type":   obj{"type": "string", "enum": types},
				"value":  obj{"description": "a number, or a level name for categorical types", "oneOf": []obj{{"type": "number"}, {"type": "string"}}},
				"unit":   obj{"type": "string", "description": "canonical UCUM unit or an accepted alias; empty means canonical"},
				"start":  dateTime,
				"end":    obj{"type": "string", "format": "date-time", "description": "required for interval types; equal to start (or absent) for instant readings"},
				"source": str,
				"zone":   obj{"type": "string", "description": "IANA time zone"},
			},
		},
		"SampleBatch": obj{
			"type":       "object",
			"required":   []string{"samples"},
			"properties": obj{"samples": obj{"type": "array", "minItems": 1, "maxItems": MaxSamples, "items": ref("SampleInput")}},
		},
		"Rejection": rejection,
		"IngestResult": obj{
			"type":     "object",
			"required": []string{"accepted", "duplicates", "rejected"},
			"properties": obj{
				"accepted":   integer,
				"duplicates": integer,
				"rejected":   obj{"type": "array", "items": ref("Rejection")},
				"sealed": obj{"type": "object", "description": "for a sealed batch: its id and whether it was a duplicate", "properties": obj{
					"batch": str, "duplicate": obj{"type": "boolean"},
				}},
			},
		},
		"Problem": obj{
			"type":     "object",
			"required": []string{"type", "title", "status", "code"},
			"properties": obj{
				"type": str, "title": str, "status": integer, "code": str, "detail": str,
				"rejected": obj{"type": "array", "items": ref("Rejection")},
			},
		},
		"User": obj{
			"type":       "object",
			"required":   []string{"id", "created"},
			"properties": obj{"id": str, "created": dateTime},
		},
		"Status": obj{"type": "object", "properties": obj{"status": str}},
		"Series": obj{
			"type":     "object",
			"required": []string{"type", "unit", "resolution", "points"},
			"properties": obj{
				"type": str, "unit": str, "resolution": str,
				"points": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
					"start": dateTime, "count": integer, "sum": obj{"type": "number"}, "min": obj{"type": "number"},
					"max": obj{"type": "number"}, "mean": obj{"type": "number"}, "last": obj{"type": "number"},
					"minutes": obj{"type": "object", "additionalProperties": obj{"type": "number"}},
				}}},
			},
		},
		"Daily": obj{
			"type":     "object",
			"required": []string{"days"},
			"properties": obj{"days": obj{"type": "array", "items": obj{
				"type":     "object",
				"required": []string{"date"},
				"properties": obj{
					"date": obj{"type": "string", "format": "date"}, "steps": num, "active_minutes": num,
					"sedentary_bouts": num, "sedentary_minutes": num, "resting_heart_rate": num,
					"resting_heart_rate_source": obj{"type": "string", "enum": []string{"device", "sleep", "sedentary"}},
					"hrv_rmssd":                 num, "hrv_source": obj{"type": "string", "enum": []string{"rr", "device"}},
					"sleep_minutes": num, "sleep_efficiency": num,
					"sleep_stages":  obj{"type": "object", "additionalProperties": num},
					"active_energy": num, "distance": num, "water": num, "weight": num, "mood": num,
					"baselines": obj{"type": "object", "additionalProperties": obj{"type": "object", "properties": obj{
						"mean": num, "sd": num, "mean_7d": num, "days": num, "days_7d": num, "z": num,
						"established": obj{"type": "boolean"}, "scale": obj{"type": "string", "enum": []string{"ln"}},
					}}},
				},
			}}},
		},
		"Changes": obj{
			"type":     "object",
			"required": []string{"changes", "cursor", "has_more"},
			"properties": obj{
				"changes": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
					"cursor": str, "kind": obj{"type": "string", "enum": []string{"series", "daily", "recommendation", "profile", "consent", "rejection"}},
					"key": str, "data": obj{"type": "object"},
				}}},
				"cursor": str, "has_more": obj{"type": "boolean"},
			},
		},
		"Profile": obj{"type": "object", "description": "the merged profile document (see internal/crdt)"},
		"ProfileOps": obj{
			"type": "object", "required": []string{"ops"},
			"properties": obj{"ops": obj{"type": "array", "maxItems": 200, "items": obj{"type": "object", "properties": obj{
				"id": str, "ts": obj{"type": "object"}, "kind": obj{"type": "string", "enum": []string{"set", "add", "remove", "incr"}},
				"path": str, "value": obj{}, "observed": obj{"type": "object"},
			}}}},
		},
		"ProfileOpsResult": obj{
			"type": "object",
			"properties": obj{
				"results": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
					"id": str, "applied": obj{"type": "boolean"}, "code": str, "detail": str}}},
				"profile": ref("Profile"), "version": integer,
			},
		},
		"ReprocessInput": obj{
			"type":       "object",
			"properties": obj{"user": str, "all": obj{"type": "boolean"}},
		},
		"Reprocess": obj{
			"type": "object",
			"properties": obj{
				"request":    obj{"type": "object", "properties": obj{"id": str, "user": str, "all": obj{"type": "boolean"}, "requested": dateTime, "by": str}},
				"partitions": integer, "done": integer, "complete": obj{"type": "boolean"},
			},
		},
		"SealedBatch": obj{
			"type":        "object",
			"required":    []string{"key_id", "sealed"},
			"description": "An application/json sample batch sealed with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode) to a processing key, with info \"pulsebase/sealed/v1\\0<key_id>\\0<internal user id>\". The answer's `sealed` member says whether the batch was stored or a duplicate; its samples are validated by the processor.",
			"properties": obj{
				"key_id": str,
				"sealed": obj{"type": "string", "contentEncoding": "base64", "description": "the encapsulated key followed by the ciphertext"},
			},
		},
		"ProcessingKeys": obj{
			"type": "object",
			"properties": obj{"keys": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
				"key_id": str, "kem": str, "kdf": str, "aead": str,
				"public_key": obj{"type": "string", "contentEncoding": "base64"},
				"created":    dateTime, "not_after": dateTime,
			}}}},
		},
		"ConsentInput": obj{
			"type": "object",
			"properties": obj{
				"collect":  obj{"type": "object", "propertyNames": obj{"enum": categories}, "additionalProperties": obj{"type": "boolean"}},
				"purposes": obj{"type": "object", "propertyNames": obj{"enum": purposes}, "additionalProperties": obj{"type": "boolean"}},
			},
		},
		"Consent": obj{
			"type":     "object",
			"required": []string{"collect", "purposes", "version"},
			"properties": obj{
				"collect":  obj{"type": "object", "additionalProperties": obj{"type": "boolean"}},
				"purposes": obj{"type": "object", "additionalProperties": obj{"type": "boolean"}},
				"version":  integer,
				"updated":  dateTime,
			},
		},
		"ConsentHistory": obj{
			"type": "object",
			"properties": obj{"history": obj{"type": "array", "items": obj{
				"allOf": []obj{ref("Consent"), {"type": "object", "properties": obj{"actor": obj{"type": "object", "properties": obj{
					"subject": str, "role": str, "device": str, "token_id": str,
				}}}}},
			}}},
		},
		"Recommendation": obj{
			"type":     "object",
			"required": []string{"id", "kind", "title", "body", "why", "created", "expires", "state"},
			"properties": obj{
				"id": obj{"type": "string", "description": "time-sortable id"}, "kind": str, "title": str, "body": str,
				"why":      obj{"type": "string", "description": "the evidence in words: what in the user's own data made the rule fire"},
				"evidence": obj{"type": "object", "description": "the named values the rule quoted"},
				"created":  dateTime, "expires": dateTime,
				"state": obj{"type": "string", "enum": []string{recommend.StateActive, recommend.StateAccepted, recommend.StateCompleted,
					recommend.StateDismissed, recommend.StateSnoozed, recommend.StateIgnored, recommend.StateExpired},
					"description": "the latest action's (a later accepted does not undo completed); without any, active until it expires, then expired"},
				"priority": integer,
				"decision": obj{"type": "string", "description": "the id of the decision that delivered it (GET …/recommendations/{id}/decision)"},
				"library":  obj{"type": "string", "description": "the rule library's version"},
				"feedback": obj{"type": "array", "description": "the user's actions on it, oldest first", "items": ref("FeedbackView")},
			},
		},
		"FeedbackView": obj{
			"type":     "object",
			"required": []string{"action", "at"},
			"properties": obj{
				"action": obj{"type": "string", "enum": append(slices.Clone(feedbackActions), pulsebase.ActionIgnored)},
				"rating": obj{"type": "integer", "minimum": 1, "maximum": 5},
				"at":     dateTime,
			},
		},
		"Recommendations": obj{
			"type":       "object",
			"required":   []string{"recommendations"},
			"properties": obj{"recommendations": obj{"type": "array", "items": ref("Recommendation")}},
		},
		"FeedbackInput": obj{
			"type":                 "object",
			"required":             []string{"action"},
			"additionalProperties": false,
			"properties": obj{
				"action": obj{"type": "string", "enum": feedbackActions},
				"rating": obj{"type": "integer", "minimum": 1, "maximum": 5},
			},
		},
		"Decision": obj{
			"type":     "object",
			"required": []string{"id", "library", "at", "trigger", "features", "candidates", "delivered"},
			"properties": obj{
				"id": str, "library": str,
				"recommendation": obj{"type": "string", "description": "the recommendation it delivered, if any"},
				"at":             dateTime,
				"trigger":        obj{"type": "string", "description": "what ran the rules: changed metrics, or a scheduled local time"},
				"features":       obj{"type": "object", "description": "the context known at the decision (hour, weekday, daypart, delivered_today, daily_cap, quiet_hours, …)"},
				"candidates": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
					"kind": str, "priority": integer,
					"alpha": obj{"type": "number", "description": "Beta posterior of the kind for this user"}, "beta": num,
					"sample": obj{"type": "number", "description": "the Thompson draw (only candidates that passed the constraints)"},
					"score":  obj{"type": "number", "description": "the draw weighed by priority"},
					"reason": obj{"type": "string", "enum": recommend.Reasons},
				}}},
				"delivered": obj{"type": "integer", "description": "index of the delivered candidate, -1 for none"},
			},
		},
		"Decisions": obj{
			"type":       "object",
			"required":   []string{"decisions"},
			"properties": obj{"decisions": obj{"type": "array", "items": ref("Decision")}},
		},
		"JWKS": obj{
			"type":       "object",
			"properties": obj{"keys": obj{"type": "array", "items": obj{"type": "object"}}},
		},
	}
}
