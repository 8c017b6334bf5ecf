//go:build !cgo || modernc

package sqlite

import (
	"errors"
	"net/url"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// driverName is the database/sql name of modernc.org/sqlite, used with the
// build tag "modernc" and in builds without cgo (CGO_ENABLED=0), where
// github.com/mattn/go-sqlite3 would compile but fail at run time.
const driverName = "sqlite"

// dsn returns the data source name for a connection to the file at path.
// modernc.org/sqlite runs each _pragma on every connection it opens (busy
// timeout first), so they hold for connections the pool opens later too.
// Recent versions also accept mattn's _busy_timeout style of keys, but
// _pragma is the form every version accepts. The write pool's transactions
// begin IMMEDIATE and its one connection has a larger page cache; the
// read pool's connections are query-only.
func dsn(path string, write bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+busyTimeoutMillis()+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if write {
		q.Set("_txlock", "immediate")
		q.Add("_pragma", "cache_size("+writeCacheSize()+")")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return path + "?" + q.Encode()
}

// constraintOf classifies err as a constraint violation or not.
func constraintOf(err error) constraint {
	var e *sqlite.Error
	if !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_CONSTRAINT {
		return notConstraint
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return uniqueConstraint
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return foreignKeyConstraint
	}
	return otherConstraint
}
