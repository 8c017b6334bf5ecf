package testkit

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// CPUTime returns the CPU time (user and system) the process has used so
// far, for benchmarks that report CPU per operation: on a shared machine
// it says more than wall time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Acker is a delivered message that can be acknowledged.
type Acker interface{ Ack() error }

// AckInBatches returns a consumer that acknowledges messages as the
// storage writer does: in batches of 100, or 5 ms after the first of a
// batch arrived. (Acknowledging each message at once would empty the
// stream after every publish, and JetStream then replaces its file block
// each time, a cost no busy node pays.)
func AckInBatches[M Acker](tb testing.TB) func(M) {
	var mu sync.Mutex
	var pending []M
	flush := func() {
		for _, m := range pending {
			_ = m.Ack()
		}
		pending = pending[:0]
	}
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				mu.Lock()
				flush()
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	tb.Cleanup(func() { close(stop) })
	return func(m M) {
		mu.Lock()
		pending = append(pending, m)
		if len(pending) >= 100 {
			flush()
		}
		mu.Unlock()
	}
}

// RunParallel runs op b.N times in all, shared by workers goroutines (op
// gets the worker's index), and reports the CPU time per op as
// "cpu-ns/op". The first error stops its worker and fails the benchmark.
func RunParallel(b *testing.B, workers int, op func(worker int) error) {
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := CPUTime()
	for w := range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := op(w); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
