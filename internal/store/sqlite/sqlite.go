// Package sqlite stores Tether's registry (tenants, devices, API keys) and
// its telemetry in one SQLite file. The schema is created and upgraded by
// versioned migrations embedded in the binary and recorded in a
// schema_migrations table.
//
// A PostgreSQL store with the same method set is planned, so the SQL here
// stays close to what both databases accept (ON CONFLICT upserts, integer
// times, no SQLite-only types); the few SQLite-only constructs are marked
// where they are used.
//
// The SQLite driver is chosen at build time: github.com/mattn/go-sqlite3
// (cgo) by default, modernc.org/sqlite (pure Go) with the build tag
// "modernc" or when cgo is disabled. docs/sqlite-driver.md records the
// measurements behind the default.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// busyTimeout is how long a connection waits for another one's lock
// before failing with SQLITE_BUSY. Another process (a backup, the sqlite3
// shell) is the only thing that should ever make it wait.
const busyTimeout = 5 * time.Second

// writeCacheKiB is the page cache of the write connection. The default
// (2 MiB) holds the last leaf pages of only a few hundred series, and
// WriteMessages touches one per device and key, so a batch spent much of
// its time re-reading pages: 64 MiB made it 46% faster in
// BenchmarkWriteMessages. SQLite allocates the cache as it fills; the
// read connections keep the default.
const writeCacheKiB = 64 << 10

// DB is a Tether store in one SQLite file. It is safe for concurrent use.
//
// It holds two connection pools on the same file. All writes go through
// write, a pool of exactly one connection whose transactions begin
// IMMEDIATE: SQLite allows one writer at a time anyway, and queueing
// writers in Go rather than in SQLite's busy handler avoids the case where
// a deferred transaction that read first fails with SQLITE_BUSY at once,
// whatever the busy timeout, when another writer committed meanwhile (with
// one pool of deferred transactions, TestConcurrentUse fails that way in
// most runs). Reads go through read, a pool of several query-only
// connections; in WAL mode they run alongside the writer and see the last
// committed state.
type DB struct {
	write  *sql.DB
	read   *sql.DB
	series *seriesCache
	stmts  *stmtCache // on write
	// commits groups short write transactions (see inWriteTx).
	commits committer
}

// Open opens the store in the SQLite file at path, creating the file if it
// is missing, and applies any migrations the file has not had yet. The path
// must name a file: ":memory:" would give each pooled connection its own
// empty database.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.Contains(path, "?") {
		return nil, tether.Errorf(tether.EINVALID, "sqlite: %q is not a plain file path", path)
	}
	write, err := openPool(ctx, path, true)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One connection, kept open: a closed and reopened connection would
	// have to redo its pragmas and lose its statement cache.
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	// Checkpoint every 20,000 WAL pages (80 MiB) instead of SQLite's
	// 1,000: the writer touches thousands of series per batch, and a page
	// rewritten many times between checkpoints is copied into the database
	// once. Measured end to end at 50,000 points/s: publish-to-stored p99
	// from about 1 s down to about 350 ms.
	if _, err := write.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 20000"); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}

	// The read pool is opened after the migrations so that its first
	// connection finds the file in WAL mode with its schema in place.
	read, err := openPool(ctx, path, false)
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	read.SetConnMaxLifetime(0)
	stmts, err := prepareBulk(ctx, write, findProcessed, markProcessed, touchDevices, insertPoints, updateLatest)
	if err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &DB{write: write, read: read, series: newSeriesCache(), stmts: stmts}, nil
}

// openPool opens a pool whose every connection is configured by the DSN,
// so that pragmas hold on connections the pool opens later too.
func openPool(ctx context.Context, path string, write bool) (*sql.DB, error) {
	pool, err := sql.Open(driverName, dsn(path, write))
	if err != nil {
		return nil, err
	}
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	var mode string
	if err := pool.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		pool.Close()
		return nil, fmt.Errorf("read journal mode: %w", err)
	}
	// WAL cannot be enabled on some file systems (network mounts); the
	// pragma then keeps the old mode without failing. Readers would block
	// the writer, so refuse rather than run slowly.
	if !strings.EqualFold(mode, "wal") {
		pool.Close()
		return nil, fmt.Errorf("journal mode is %q, not wal", mode)
	}
	return pool, nil
}

// Close closes both connection pools.
func (db *DB) Close() error {
	return errors.Join(db.stmts.close(), db.read.Close(), db.write.Close())
}

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order. A file is
// named NNNN_description.sql; its version is NNNN.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		prefix, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name does not start with a version", base)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate applies the embedded migrations the database has not had yet,
// each in its own transaction together with its schema_migrations row, so
// a failed migration leaves the schema at the previous version.
func migrate(ctx context.Context, pool *sql.DB) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := pool.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	var current int
	if err := pool.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("migrate: read version: %w", err)
	}
	if n := len(ms); n > 0 && current > ms[n-1].version {
		return fmt.Errorf("migrate: the database is at schema version %d, newer than this program's %d", current, ms[n-1].version)
	}
	for _, m := range ms {
		if err := applyMigration(ctx, pool, m); err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
	}
	return nil
}

func applyMigration(ctx context.Context, pool *sql.DB, m migration) error {
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Checked inside the (immediate) transaction, so that two processes
	// opening a new file at once do not both apply it.
	var done int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", m.version).Scan(&done); err != nil {
		return err
	}
	if done > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
		m.version, time.Now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// inWriteTxCommit is inWriteTx with commit in place of tx.Commit, for
// callers that must do something in step with the commit.
func (db *DB) inWriteTxCommit(ctx context.Context, fn, commit func(*sql.Tx) error) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return commit(tx)
}

// inReadTx runs fn in a transaction on a read connection, so that the
// several queries of one call see one snapshot.
func (db *DB) inReadTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.read.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	// A read transaction has nothing to commit; rolling back ends it.
	defer tx.Rollback()
	return fn(tx)
}

// one reads the single row of a query with scan: notFound's error when
// there is none, and any other error wrapped with what (a format and its
// arguments) naming what was read.
func one[T any](row *sql.Row, scan func(interface{ Scan(...any) error }) (T, error), notFound func() error, what string, args ...any) (T, error) {
	v, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		var zero T
		return zero, notFound()
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf(what+": %w", append(args, err)...)
	}
	return v, nil
}

// collect reads every row of rows with scan and closes rows. The slice is
// never nil, so that an empty list encodes as [] in JSON.
func collect[T any](rows *sql.Rows, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// nanos returns t as Unix nanoseconds, the form every time is stored in.
func nanos(t time.Time) int64 { return t.UnixNano() }

// fromNanos returns the UTC time of Unix nanoseconds n.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// nullNanos returns t as Unix nanoseconds, or NULL for nil.
func nullNanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixNano()
}

// timePtr returns the time of n, or nil for NULL.
func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// constraint names the kind of constraint violation a driver error reports.
type constraint int

const (
	notConstraint constraint = iota
	uniqueConstraint
	foreignKeyConstraint
	otherConstraint
)

func busyTimeoutMillis() string { return strconv.FormatInt(busyTimeout.Milliseconds(), 10) }

// writeCacheSize is the cache_size pragma's value for writeCacheKiB
// (negative means KiB rather than pages).
func writeCacheSize() string { return strconv.Itoa(-writeCacheKiB) }
