package pulsebase

import "time"

// Role is what kind of principal a token speaks for.
type Role string

// Roles. A device writes samples (and later syncs) for its own user only; coach, analyst
// and admin are defined now and given their rights by the policy layer.
const (
	RoleUser    Role = "user"
	RoleDevice  Role = "device"
	RoleCoach   Role = "coach"
	RoleAnalyst Role = "analyst"
	RoleAdmin   Role = "admin"
	RoleService Role = "service"
)

// Roles lists every role, in a stable order.
func Roles() []Role {
	return []Role{RoleUser, RoleDevice, RoleCoach, RoleAnalyst, RoleAdmin, RoleService}
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	for _, k := range Roles() {
		if r == k {
			return true
		}
	}
	return false
}

// Principal is the verified identity behind a request.
type Principal struct {
	// Subject is the external subject of the token (a user name at the identity provider).
	Subject string
	Role    Role
	// Device is the device id a device token was minted for; empty for other roles.
	Device string
	// TokenID is the token's unique id (jti), for revocation and audit.
	TokenID string
	// Issued is when the token was minted (its iat, whole seconds); zero when the token
	// does not say. Revocation compares it with the time a device was revoked.
	Issued time.Time
	// Expires is when the token stops being valid (its exp, whole seconds).
	Expires time.Time
	// Confirmation is the SHA-256 thumbprint of the client certificate the token is bound
	// to (RFC 8705 cnf "x5t#S256"); empty for a bearer token usable by whoever holds it.
	Confirmation string
	// Family is the refresh-token family the token was issued in (device enrollment); a
	// reuse of a spent refresh token revokes the whole family.
	Family string
}
