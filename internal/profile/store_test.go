package profile_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/store/sqlite"
)

// testStore is the real store with a count of Latest reads and a switch
// that makes them fail.
type testStore struct {
	*sqlite.DB
	mu    sync.Mutex
	calls int
	err   error
}

func (s *testStore) Latest(ctx context.Context, tenant, device string) ([]tether.Latest, error) {
	s.mu.Lock()
	s.calls++
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.DB.Latest(ctx, tenant, device)
}

func (s *testStore) latestCalls() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }
func (s *testStore) fail(err error)   { s.mu.Lock(); s.err = err; s.mu.Unlock() }

var writeSeq atomic.Int64

// write stores points of a device as accepted.
func write(t *testing.T, s *testStore, deviceID string, pts ...tether.Point) {
	t.Helper()
	m := tether.Message{ID: fmt.Sprintf("w%d", writeSeq.Add(1)), TenantID: tenant, DeviceID: deviceID, ReceivedAt: t0, Points: pts}
	if _, err := s.WriteMessages(context.Background(), []tether.Message{m}); err != nil {
		t.Fatal(err)
	}
}
