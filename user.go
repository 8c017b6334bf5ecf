package tether

import "time"

// Roles of users and API keys, from most to least privileged. An admin
// may do everything in its tenant; an operator runs the fleet (sends
// commands, edits desired state, acknowledges alerts, tries rules out)
// but changes no configuration, credential or user; a viewer reads.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
)

// roleRank orders the roles; an unknown role ranks below viewer.
var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// ValidRole reports whether role is one of the roles above.
func ValidRole(role string) bool { return roleRank[role] > 0 }

// RoleAtLeast reports whether a caller with role have may do what needs
// role need.
func RoleAtLeast(have, need string) bool {
	return roleRank[have] > 0 && roleRank[have] >= roleRank[need]
}

// Principal is who makes an API call: a user signed in with a session,
// or a program with an API key. Every API (REST, GraphQL, live streams)
// authorizes by its tenant and role.
type Principal struct {
	TenantID string `json:"tenant_id"`
	// Kind is PrincipalUser or PrincipalAPIKey.
	Kind string `json:"kind"`
	// ID is the user's or the API key's ID.
	ID string `json:"id"`
	// Name is the user's e-mail or the key's name.
	Name string `json:"name"`
	Role string `json:"role"`
	// SessionID is the session a user's call came with; "" for a key.
	SessionID string `json:"-"`
}

// Principal kinds.
const (
	PrincipalUser   = "user"
	PrincipalAPIKey = "api_key"
)

// Source names the principal as the originator of a change, as stored
// with commands and alert acknowledgements: "user:<id>" or "api:<id>".
func (p *Principal) Source() string {
	if p.Kind == PrincipalUser {
		return "user:" + p.ID
	}
	return "api:" + p.ID
}

// User is a person who signs in to the dashboard and the API with an
// e-mail address and a password.
type User struct {
	TenantID string `json:"tenant_id"`
	ID       string `json:"id"`
	Email    string `json:"email"`
	Role     string `json:"role"`
	// PasswordHash is the PHC-formatted argon2id hash of the password.
	PasswordHash string `json:"-"`
	// FailedLogins counts failed logins since the last success;
	// LockedUntil, when set and in the future, refuses every login.
	FailedLogins int        `json:"-"`
	LockedUntil  *time.Time `json:"locked_until,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	LastLoginAt  *time.Time `json:"last_login_at,omitempty"`
}

// Session is a signed-in user's session. The cookie carries its secret;
// the store keeps only the secret's hash.
type Session struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	UserID   string `json:"user_id"`
	// Hash is the SHA-256 of the session secret.
	Hash []byte `json:"-"`
	// CSRFToken must come back in the X-CSRF-Token header of every
	// unsafe request made with the session's cookie.
	CSRFToken string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	LastSeen  time.Time `json:"last_seen"`
}
