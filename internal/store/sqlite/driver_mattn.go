//go:build cgo && !modernc

package sqlite

import (
	"errors"
	"net/url"

	"github.com/mattn/go-sqlite3"
)

// driverName is the database/sql name of github.com/mattn/go-sqlite3, the
// default driver wherever cgo is enabled; see docs/sqlite-driver.md for
// why.
const driverName = "sqlite3"

// dsn returns the data source name for a connection to the file at path.
// The driver runs the pragmas it names on every connection it opens, so
// they hold for connections the pool opens later too. The write pool's
// transactions begin IMMEDIATE (take the write lock at BEGIN) and its one
// connection has a larger page cache; the read pool's connections are
// query-only.
func dsn(path string, write bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", busyTimeoutMillis())
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "on")
	// Each connection keeps its prepared statements: preparing one costs
	// more than running it for the short statements of the device state
	// services (measured: a third of a command's CPU time).
	q.Set("_stmt_cache_size", "128")
	if write {
		q.Set("_txlock", "immediate")
		q.Set("_cache_size", writeCacheSize())
	} else {
		q.Set("_query_only", "on")
	}
	return path + "?" + q.Encode()
}

// constraintOf classifies err as a constraint violation or not.
func constraintOf(err error) constraint {
	var e sqlite3.Error
	if !errors.As(err, &e) || e.Code != sqlite3.ErrConstraint {
		return notConstraint
	}
	switch e.ExtendedCode {
	case sqlite3.ErrConstraintPrimaryKey, sqlite3.ErrConstraintUnique:
		return uniqueConstraint
	case sqlite3.ErrConstraintForeignKey:
		return foreignKeyConstraint
	}
	return otherConstraint
}
