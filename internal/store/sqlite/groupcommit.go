package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
//
// A caller's context decides only whether its work starts: once started
// it runs to the end with the cancellation removed, because SQLite
// answers an interrupted statement inside a transaction by rolling back
// the whole transaction, which would take the round's other work with it.

// txRequest is one caller's transaction waiting for its round.
type txRequest struct {
	ctx  context.Context
	fn   func(context.Context, *sql.Tx) error
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
// its own error undoes only its own writes. fn gets ctx without its
// cancellation, and must use it rather than the caller's.
func (db *DB) inWriteTx(ctx context.Context, fn func(context.Context, *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &txRequest{ctx: ctx, fn: fn, done: make(chan error, 1)}
	db.commits.add(db, false, r)
	return <-r.done
}

// add queues requests, behind those waiting or, first (requests handed
// back by a lost round), in front of them, and starts a committer if
// none runs.
func (c *committer) add(db *DB, first bool, rs ...*txRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first {
		c.queue = append(rs[:len(rs):len(rs)], c.queue...)
	} else {
		c.queue = append(c.queue, rs...)
	}
	if !c.running {
		c.running = true
		go db.commitRounds()
	}
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
		for len(round) > 0 {
			n := min(len(round), maxRound)
			db.commitRound(round[:n])
			round = round[n:]
		}
	}
}

// maxRound bounds the requests of one round, so that a flood of them
// still commits in steps.
const maxRound = 256

// errRoundLost answers the requests of a round whose transaction SQLite
// rolled back because of another request's failure (a full disk, an I/O
// error): their work is not stored.
var errRoundLost = errors.New("sqlite: the transaction was rolled back after another write failed; nothing was stored")

func (db *DB) commitRound(round []*txRequest) {
	if len(round) == 1 {
		r := round[0]
		r.done <- db.inWriteTxCommit(context.WithoutCancel(r.ctx), func(tx *sql.Tx) error { return call(r, tx) }, (*sql.Tx).Commit)
		return
	}
	errs := make([]error, len(round))
	ran := len(round)
	err := db.inWriteTxCommit(context.Background(), func(tx *sql.Tx) error {
		for i, r := range round {
			var lost bool
			if errs[i], lost = runSavepoint(tx, r); lost {
				ran = i + 1
				return errRoundLost
			}
		}
		return nil
	}, (*sql.Tx).Commit)
	if ran < len(round) {
		// Those not run yet lost nothing: they go first in the next round.
		db.commits.add(db, true, round[ran:]...)
	}
	for i, r := range round[:ran] {
		if errs[i] == nil {
			errs[i] = err // the commit's failure is everyone's
		}
		r.done <- errs[i]
	}
}

// runSavepoint runs one request inside a savepoint of the round's
// transaction, rolling back to it if the request fails. lost reports that
// the transaction itself is gone (SQLite rolled it back), with every
// earlier request's work.
func runSavepoint(tx *sql.Tx, r *txRequest) (err error, lost bool) {
	if err := r.ctx.Err(); err != nil {
		return err, false
	}
	if _, err := tx.Exec("SAVEPOINT request"); err != nil {
		return err, true
	}
	if err = call(r, tx); err != nil {
		if _, rbErr := tx.Exec("ROLLBACK TO request"); rbErr != nil {
			return errors.Join(err, rbErr), true
		}
	}
	if _, relErr := tx.Exec("RELEASE request"); relErr != nil {
		return errors.Join(err, relErr), true
	}
	return err, false
}

// call runs a request's fn, turning a panic into its error: it runs on
// the committer's goroutine, where a panic would end the process rather
// than the one request.
func call(r *txRequest, tx *sql.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sqlite: write panicked: %v", p)
		}
	}()
	return r.fn(context.WithoutCancel(r.ctx), tx)
}
