package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// A bulk statement does one thing to many rows at once: its SQL is a
// prefix, the row's parameters repeated once per row, and a suffix. The
// storage writer binds a whole chunk of rows per execution instead of one
// row per execution, which saves database/sql's and the driver's work per
// statement (argument conversion, locking, a cgo step and reset with
// mattn) and lets SQLite update each B-tree page once per chunk rather
// than once per row.
type bulk struct {
	prefix, row, suffix string
	params              int // per row
	// single, if set, is a statement for one row with the same
	// parameters, used for chunks of fewer than 16 rows: an
	// UPDATE … FROM (VALUES …) costs SQLite about 15 µs per execution
	// (it materializes the values and the join), more than a few
	// single-row updates.
	single string
}

// chunkSizes are the row counts bulk statements are prepared for: rows
// go in chunks of the largest size that fits, so that n rows take at most
// n/256 + 12 executions and at most five statements per bulk.
var chunkSizes = [...]int{256, 64, 16, 4, 1}

func (b *bulk) sql(rows int) string {
	if rows == 1 && b.single != "" {
		return b.single
	}
	var s strings.Builder
	s.WriteString(b.prefix)
	for i := range rows {
		if i > 0 {
			s.WriteString(", ")
		}
		s.WriteString(b.row)
	}
	s.WriteString(b.suffix)
	return s.String()
}

// stmtCache holds the bulk statements of the write connection, each
// prepared once, when the store opens: preparing a statement of 256 rows
// parses over a thousand parameters, too much to redo in every
// transaction. (They cannot be prepared on first use: the write pool has
// one connection, which the transaction that would use them holds.)
type stmtCache struct {
	stmts map[stmtKey]*sql.Stmt
}

type stmtKey struct {
	b    *bulk
	rows int
}

// prepareBulk prepares every chunk size of each of bulks on db.
func prepareBulk(ctx context.Context, db *sql.DB, bulks ...*bulk) (*stmtCache, error) {
	c := &stmtCache{stmts: make(map[stmtKey]*sql.Stmt)}
	for _, b := range bulks {
		for _, rows := range chunkSizes {
			s, err := db.PrepareContext(ctx, b.sql(rows))
			if err != nil {
				return nil, errors.Join(fmt.Errorf("prepare %.40s… for %d rows: %w", b.prefix, rows, err), c.close())
			}
			c.stmts[stmtKey{b, rows}] = s
		}
	}
	return c, nil
}

// get returns the statement of b for rows rows, valid in tx.
func (c *stmtCache) get(ctx context.Context, tx *sql.Tx, b *bulk, rows int) (*sql.Stmt, error) {
	s := c.stmts[stmtKey{b, rows}]
	if s == nil {
		return nil, fmt.Errorf("bulk statement %.40s… for %d rows was not prepared", b.prefix, rows)
	}
	return tx.StmtContext(ctx, s), nil
}

// close closes every statement.
func (c *stmtCache) close() error {
	var errs []error
	for k, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, k)
	}
	return errors.Join(errs...)
}

// bulkExec runs b over n rows in chunks. args appends the parameters of
// row i to dst; done, if not nil, is called with each chunk's result and
// its rows [from, to).
type bulkExec struct {
	ctx   context.Context
	tx    *sql.Tx
	cache *stmtCache
	args  []any // reused between chunks
}

func (e *bulkExec) exec(b *bulk, n int, args func(dst []any, i int) []any, done func(res sql.Result, from, to int) error) error {
	for from := 0; from < n; {
		rows := b.chunkFor(n - from)
		stmt, err := e.cache.get(e.ctx, e.tx, b, rows)
		if err != nil {
			return err
		}
		e.args = e.args[:0]
		for i := from; i < from+rows; i++ {
			e.args = args(e.args, i)
		}
		res, err := stmt.ExecContext(e.ctx, e.args...)
		if err != nil {
			return err
		}
		if done != nil {
			if err := done(res, from, from+rows); err != nil {
				return err
			}
		}
		from += rows
	}
	clear(e.args) // let the values go
	return nil
}

// query runs b over n rows in chunks, calling row for every result row.
func (e *bulkExec) query(b *bulk, n int, args func(dst []any, i int) []any, row func(*sql.Rows) error) error {
	for from := 0; from < n; {
		rows := b.chunkFor(n - from)
		stmt, err := e.cache.get(e.ctx, e.tx, b, rows)
		if err != nil {
			return err
		}
		e.args = e.args[:0]
		for i := from; i < from+rows; i++ {
			e.args = args(e.args, i)
		}
		if err := queryRows(e.ctx, stmt, e.args, row); err != nil {
			return err
		}
		from += rows
	}
	clear(e.args)
	return nil
}

func queryRows(ctx context.Context, stmt *sql.Stmt, args []any, row func(*sql.Rows) error) error {
	rs, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := row(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

// chunkFor returns the number of rows of the next chunk when n are left:
// the largest chunk size not over n, or 1 below 16 rows for a bulk with a
// single-row statement.
func (b *bulk) chunkFor(n int) int {
	if b.single != "" && n < 16 {
		return 1
	}
	for _, s := range chunkSizes {
		if s <= n {
			return s
		}
	}
	return 1
}
