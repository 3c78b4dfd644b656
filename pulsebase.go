// Package pulsebase holds the domain of the Pulsebase wellness backend: samples, sample
// types and units, users, keys and the service interfaces the internal packages implement.
//
// It imports only the standard library (a test enforces it). Every other package of the
// module may import it; it imports none of them. Wiring happens in cmd/pulsebase.
package pulsebase
