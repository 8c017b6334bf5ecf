package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
)

func TestAPIKeyManagement(t *testing.T) {
	ctx := context.Background()
	reg, _, _ := newRegistry(t)
	if _, err := reg.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	k, key, err := reg.CreateAPIKey(ctx, tether.DefaultTenantID, "grafana", tether.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a new key authenticates with its role, and only its hash is stored", func(t *testing.T) {
		if !strings.HasPrefix(key, k.ID+".") || !strings.HasPrefix(k.ID, "ak_") || len(key) < len(k.ID)+40 {
			t.Errorf("key %q for id %q", key, k.ID)
		}
		got, err := reg.AuthenticateAPIKey(ctx, key)
		if err != nil || got.ID != k.ID || got.Role != tether.RoleViewer || got.Name != "grafana" {
			t.Errorf("AuthenticateAPIKey = %+v, %v", got, err)
		}
		if strings.Contains(string(got.Hash), key[len(k.ID)+1:]) {
			t.Error("the secret is stored")
		}
	})
	t.Run("the tenant's keys are listed with the bootstrap key", func(t *testing.T) {
		ks, err := reg.APIKeys(ctx, tether.DefaultTenantID)
		if err != nil || len(ks) != 2 || ks[1].ID != k.ID {
			t.Errorf("APIKeys = %v, %v", ks, err)
		}
		if ks, err := reg.APIKeys(ctx, "other"); err != nil || len(ks) != 0 {
			t.Errorf("another tenant's keys = %v, %v", ks, err)
		}
	})
	for _, c := range []struct{ name, keyName, role string }{
		{"a key without a name", "", tether.RoleViewer},
		{"a key with a name over 256 bytes", strings.Repeat("n", 257), tether.RoleViewer},
		{"a key with an unknown role", "x", "root"},
		{"a key without a role", "x", ""},
	} {
		t.Run(c.name+" is refused", func(t *testing.T) {
			_, _, err := reg.CreateAPIKey(ctx, tether.DefaultTenantID, c.keyName, c.role)
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Errorf("CreateAPIKey = %v", err)
			}
		})
	}
	t.Run("a deleted key is refused from then on", func(t *testing.T) {
		if err := reg.DeleteAPIKey(ctx, tether.DefaultTenantID, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.AuthenticateAPIKey(ctx, key); tether.ErrorCode(err) != tether.EUNAUTHORIZED {
			t.Errorf("AuthenticateAPIKey = %v", err)
		}
		if err := reg.DeleteAPIKey(ctx, tether.DefaultTenantID, k.ID); tether.ErrorCode(err) != tether.ENOTFOUND {
			t.Errorf("delete again: %v", err)
		}
	})
	t.Run("the last admin key may go too", func(t *testing.T) {
		ks, _ := reg.APIKeys(ctx, tether.DefaultTenantID)
		if len(ks) != 1 || ks[0].Role != tether.RoleAdmin {
			t.Fatalf("keys %v", ks)
		}
		if err := reg.DeleteAPIKey(ctx, tether.DefaultTenantID, ks[0].ID); err != nil {
			t.Error(err)
		}
	})
}
