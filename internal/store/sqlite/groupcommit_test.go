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
	insert := func(id string) func(*sql.Tx) error {
		return func(tx *sql.Tx) error {
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
			_ = db.inWriteTx(ctx, func(tx *sql.Tx) error {
				close(started)
				time.Sleep(50 * time.Millisecond)
				return insert("first")(tx)
			})
		}()
		<-started
		var wg sync.WaitGroup
		errs := make([]error, 100)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.inWriteTx(ctx, func(tx *sql.Tx) error {
					if err := insert(fmt.Sprintf("g%d", i))(tx); err != nil {
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
}
