package registry

import (
	"context"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
)

// maxKeyName bounds an API key's name, in bytes.
const maxKeyName = 256

// CreateAPIKey creates an API key of tenant for programs, with a name
// that says who uses it and a role. It returns the key and, this once,
// its secret ("ak_<id>.<secret>"); only the hash is stored.
func (s *Service) CreateAPIKey(ctx context.Context, tenant, name, role string) (*tether.APIKey, string, error) {
	if name == "" || len(name) > maxKeyName {
		return nil, "", tether.Errorf(tether.EINVALID, "an API key needs a name of 1 to %d bytes saying who uses it", maxKeyName)
	}
	if !tether.ValidRole(role) {
		return nil, "", tether.Errorf(tether.EINVALID, "role %q must be admin, operator or viewer", truncate(role))
	}
	k := &tether.APIKey{TenantID: tenant, ID: "ak_" + secret.ID(), Name: name, Role: role, CreatedAt: s.now()}
	key := secret.Token(k.ID)
	k.Hash = secret.Hash(key)
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return nil, "", err
	}
	s.log.Info("API key created", "tenant", tenant, "key", k.ID, "role", role)
	return k, key, nil
}

// APIKeys lists the tenant's API keys (never their secrets).
func (s *Service) APIKeys(ctx context.Context, tenant string) ([]*tether.APIKey, error) {
	return s.store.APIKeys(ctx, tenant)
}

// DeleteAPIKey revokes an API key: it is refused from the next request
// on. Any key may go, the last admin key too: admin users remain, and
// the next start creates a new admin key if the tenant has none.
func (s *Service) DeleteAPIKey(ctx context.Context, tenant, id string) error {
	if err := s.store.DeleteAPIKey(ctx, tenant, id); err != nil {
		return err
	}
	s.log.Info("API key deleted", "tenant", tenant, "key", id)
	return nil
}
