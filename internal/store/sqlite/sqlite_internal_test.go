package sqlite

// These tests look inside the store, at its schema_migrations table and
// its connections' pragmas, which are SQLite details no other store
// shares; behaviour tests are in package sqlite_test.

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return db, path
}

func appliedVersions(t *testing.T, db *DB) []int {
	t.Helper()
	rows, err := db.read.Query("SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

func TestMigrations(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []int
	for _, m := range ms {
		all = append(all, m.version)
	}
	if len(all) == 0 || all[0] != 1 {
		t.Fatalf("embedded migrations %v do not start at 1", all)
	}

	t.Run("a new file gets every migration once", func(t *testing.T) {
		db, _ := openTemp(t)
		defer db.Close()
		if got := appliedVersions(t, db); !slices.Equal(got, all) {
			t.Errorf("applied %v, want %v", got, all)
		}
	})

	t.Run("reopening applies nothing again and keeps the data", func(t *testing.T) {
		db, path := openTemp(t)
		if _, err := db.write.Exec("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', 0)"); err != nil {
			t.Fatal(err)
		}
		var appliedAt int64
		if err := db.read.QueryRow("SELECT applied_at FROM schema_migrations WHERE version = 1").Scan(&appliedAt); err != nil {
			t.Fatal(err)
		}
		db.Close()
		for range 2 {
			db, err = Open(context.Background(), path)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if got := appliedVersions(t, db); !slices.Equal(got, all) {
				t.Errorf("applied %v, want %v", got, all)
			}
			var again int64
			if err := db.read.QueryRow("SELECT applied_at FROM schema_migrations WHERE version = 1").Scan(&again); err != nil {
				t.Fatal(err)
			}
			if again != appliedAt {
				t.Errorf("migration 1 was applied again")
			}
			var n int
			if err := db.read.QueryRow("SELECT count(*) FROM tenants").Scan(&n); err != nil || n != 1 {
				t.Errorf("tenants = %d, %v; want 1", n, err)
			}
			db.Close()
		}
	})

	t.Run("a file from a newer program is refused", func(t *testing.T) {
		db, path := openTemp(t)
		if _, err := db.write.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err := Open(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("Open = %v, want an error about a newer schema", err)
		}
	})
}

// TestPragmasOnEveryConnection holds several connections of each pool at
// once, so that the pool must open new ones, and checks each one's
// settings: a pragma run once after sql.Open would hold on the first
// connection only.
func TestPragmasOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	defer db.Close()
	for _, pool := range []struct {
		name      string
		db        *sql.DB
		conns     int
		queryOnly int
		cacheSize int
	}{
		{"write", db.write, 1, 0, -writeCacheKiB},
		{"read", db.read, 4, 1, -2000},
	} {
		t.Run("every "+pool.name+" connection has the store's settings", func(t *testing.T) {
			var conns []*sql.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range pool.conns {
				c, err := pool.db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			for i, c := range conns {
				var (
					mode                                 string
					fk, sync, busy, queryOnly, cacheSize int
				)
				for _, p := range []struct {
					pragma string
					dest   any
				}{
					{"journal_mode", &mode}, {"foreign_keys", &fk}, {"synchronous", &sync},
					{"busy_timeout", &busy}, {"query_only", &queryOnly}, {"cache_size", &cacheSize},
				} {
					if err := c.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(p.dest); err != nil {
						t.Fatalf("conn %d: %s: %v", i, p.pragma, err)
					}
				}
				if mode != "wal" || fk != 1 || sync != 2 || busy != int(busyTimeout.Milliseconds()) || queryOnly != pool.queryOnly || cacheSize != pool.cacheSize {
					t.Errorf("conn %d: journal_mode=%s foreign_keys=%d synchronous=%d busy_timeout=%d query_only=%d cache_size=%d",
						i, mode, fk, sync, busy, queryOnly, cacheSize)
				}
			}
		})
	}
}
