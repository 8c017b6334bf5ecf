package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestGroupCommit(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	insert := func(id string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, 0)", id, id)
			return err
		}
	}
	exists := func(id string) bool {
		var n int
		if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM tenants WHERE id = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	errFail := errors.New("this one fails")

	t.Run("concurrent transactions commit or fail each on its own", func(t *testing.T) {
		// The first holds the write connection a moment, so that the
		// others queue up and share rounds.
		started := make(chan struct{})
		go func() {
			_ = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				close(started)
				time.Sleep(50 * time.Millisecond)
				return insert("first")(ctx, tx)
			})
		}()
		<-started
		var wg sync.WaitGroup
		errs := make([]error, 100)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
					if err := insert(fmt.Sprintf("g%d", i))(ctx, tx); err != nil {
						return err
					}
					if i%3 == 0 {
						return errFail // after writing: its write must be undone
					}
					return nil
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			id := fmt.Sprintf("g%d", i)
			switch {
			case i%3 == 0 && (!errors.Is(err, errFail) || exists(id)):
				t.Errorf("%s: err %v, exists %v; want its error and no row", id, err, exists(id))
			case i%3 != 0 && (err != nil || !exists(id)):
				t.Errorf("%s: err %v, exists %v; want it committed", id, err, exists(id))
			}
		}
		if !exists("first") {
			t.Error("the first transaction is missing")
		}
	})
	t.Run("a constraint violation fails only its own transaction", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []string{"dup", "dup"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.inWriteTx(ctx, insert(id))
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Errorf("errors %v and %v; want exactly one", errs[0], errs[1])
		}
		if !exists("dup") {
			t.Error("the winner is missing")
		}
	})
	t.Run("a cancelled request is not run", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := db.inWriteTx(cctx, insert("cancelled"))
		if !errors.Is(err, context.Canceled) || exists("cancelled") {
			t.Errorf("err %v, exists %v", err, exists("cancelled"))
		}
	})
	// hold keeps the write connection busy until released, so that the
	// requests made meanwhile share one round.
	hold := func() (release func()) {
		started, done := make(chan struct{}), make(chan struct{})
		go func() {
			_ = db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
				close(started)
				<-done
				return nil
			})
		}()
		<-started
		return func() { close(done) }
	}
	// round runs fns concurrently while the connection is held, in order
	// of their queueing, and returns their errors.
	round := func(fns ...func(context.Context, *sql.Tx) error) []error {
		release := hold()
		errs := make([]error, len(fns))
		var wg sync.WaitGroup
		for i, fn := range fns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.inWriteTx(ctx, fn)
			}()
			for {
				db.commits.mu.Lock()
				n := len(db.commits.queue)
				db.commits.mu.Unlock()
				if n == i+1 {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		release()
		wg.Wait()
		return errs
	}
	t.Run("a caller cancelled while its write runs still has it stored", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		release := hold()
		done := make(chan error, 1)
		go func() {
			done <- db.inWriteTx(cctx, func(ctx context.Context, tx *sql.Tx) error {
				cancel() // the client went away; SQLite must not be interrupted
				_, err := tx.ExecContext(ctx, "INSERT INTO tenants (id, name, created_at) VALUES ('c-mid', 'x', 0)")
				return err
			})
		}()
		time.Sleep(10 * time.Millisecond)
		release()
		if err := <-done; err != nil || !exists("c-mid") {
			t.Errorf("err %v, exists %v", err, exists("c-mid"))
		}
	})
	t.Run("a write that loses the whole transaction fails those before it and not those after", func(t *testing.T) {
		errs := round(
			insert("l-before"),
			func(ctx context.Context, tx *sql.Tx) error {
				// As SQLite does on a full disk or an interrupt: the
				// transaction is gone, savepoints and all.
				_, _ = tx.ExecContext(ctx, "ROLLBACK")
				return errFail
			},
			insert("l-after"),
		)
		if !errors.Is(errs[1], errFail) {
			t.Errorf("the failing write: %v", errs[1])
		}
		for i, id := range map[int]string{0: "l-before", 2: "l-after"} {
			if (errs[i] == nil) != exists(id) {
				t.Errorf("%s: err %v but exists %v: the answer must say what was stored", id, errs[i], exists(id))
			}
		}
		if errs[2] != nil {
			t.Errorf("the write after it was not run again in a new round: %v", errs[2])
		}
	})
	t.Run("a panic fails only its own write", func(t *testing.T) {
		errs := round(insert("p-before"), func(context.Context, *sql.Tx) error { panic("boom") }, insert("p-after"))
		if errs[0] != nil || errs[2] != nil || errs[1] == nil || !exists("p-before") || !exists("p-after") {
			t.Errorf("errors %v", errs)
		}
	})
}
