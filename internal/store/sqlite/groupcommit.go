package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// Group commit of short write transactions.
//
// The device state services (commands, shadows, presence, provisioning
// keys) write many small transactions, each waiting for its commit's
// fsync on the one write connection, so their throughput was one fsync
// per change. A transaction that arrives while another is committing now
// waits for the next round, and every transaction of a round runs in one
// SQLite transaction, each inside its own savepoint: a failing one is
// rolled back alone and returns its error, the others commit together
// with one fsync. Each caller still returns only after its own work is
// committed (or failed), so nothing is acknowledged before it is durable.

// txRequest is one caller's transaction waiting for its round.
type txRequest struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	done chan error
}

// committer collects the requests of the next round.
type committer struct {
	mu      sync.Mutex
	queue   []*txRequest
	running bool
}

// inWriteTx runs fn in a transaction on the write connection and commits it
// if fn returns nil. It may share the transaction, and its commit, with
// other callers' (see above); fn sees their writes made before it, and
// its own error undoes only its own writes.
func (db *DB) inWriteTx(ctx context.Context, fn func(*sql.Tx) error) error {
	r := &txRequest{ctx: ctx, fn: fn, done: make(chan error, 1)}
	c := &db.commits
	c.mu.Lock()
	c.queue = append(c.queue, r)
	if !c.running {
		c.running = true
		go db.commitRounds()
	}
	c.mu.Unlock()
	return <-r.done
}

// commitRounds runs rounds until no request is waiting.
func (db *DB) commitRounds() {
	c := &db.commits
	for {
		c.mu.Lock()
		round := c.queue
		c.queue = nil
		if len(round) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		db.commitRound(round)
	}
}

// maxRound bounds the requests of one round, so that a flood of them
// still commits in steps.
const maxRound = 256

func (db *DB) commitRound(round []*txRequest) {
	for len(round) > maxRound {
		db.commitRound(round[:maxRound])
		round = round[maxRound:]
	}
	if len(round) == 1 {
		r := round[0]
		r.done <- db.inWriteTxCommit(r.ctx, r.fn, (*sql.Tx).Commit)
		return
	}
	errs := make([]error, len(round))
	err := db.inWriteTxCommit(context.Background(), func(tx *sql.Tx) error {
		for i, r := range round {
			errs[i] = runSavepoint(tx, r)
		}
		return nil
	}, (*sql.Tx).Commit)
	for i, r := range round {
		if errs[i] == nil {
			errs[i] = err // the commit's failure is everyone's
		}
		r.done <- errs[i]
	}
}

// runSavepoint runs one request inside a savepoint of the round's
// transaction, rolling back to it if the request fails.
func runSavepoint(tx *sql.Tx, r *txRequest) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if _, err := tx.ExecContext(r.ctx, "SAVEPOINT request"); err != nil {
		return err
	}
	err := r.fn(tx)
	if err != nil {
		if _, rbErr := tx.Exec("ROLLBACK TO request"); rbErr != nil {
			err = errors.Join(err, rbErr)
		}
	}
	if _, relErr := tx.Exec("RELEASE request"); relErr != nil && err == nil {
		err = relErr
	}
	return err
}
