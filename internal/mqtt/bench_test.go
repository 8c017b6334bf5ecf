package mqtt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkFanOut measures what the store costs on QoS 1 fan-out: one
// publisher, subscribers with persistent sessions (the only ones the store
// writes for: each delivery is stored in flight, then deleted on PUBACK).
func BenchmarkFanOut(b *testing.B) {
	for _, store := range []string{"memory", "pebble"} {
		for _, subs := range []int{10, 50} {
			b.Run(fmt.Sprintf("store=%s/subscribers=%d/qos=1", store, subs), func(b *testing.B) {
				benchFanOut(b, store == "pebble", subs)
			})
		}
	}
}

func benchFanOut(b *testing.B, persist bool, subscribers int) {
	dir := ""
	if persist {
		dir = b.TempDir()
	}
	g, err := New(newFakeAuth(pki()), newFakeIngest(), Options{Addr: "127.0.0.1:0", AllowAnonymous: true, StoreDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			b.Error(err)
		}
	})

	var got atomic.Int64
	var want atomic.Int64
	done := make(chan struct{}, 1)
	for i := range subscribers {
		o := paho3.NewClientOptions().AddBroker("tcp://" + g.Addr()).SetClientID(fmt.Sprintf("s%d", i)).
			SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(false)
		c := paho3.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		b.Cleanup(func() { c.Disconnect(0) })
		tok := c.Subscribe("bench/fanout", 1, func(paho3.Client, paho3.Message) {
			if got.Add(1) == want.Load() {
				done <- struct{}{}
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("subscribe: %v", tok.Error())
		}
	}
	pub := paho3.NewClient(paho3.NewClientOptions().AddBroker("tcp://" + g.Addr()).SetClientID("pub").SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	b.Cleanup(func() { pub.Disconnect(0) })
	payload := make([]byte, 100)

	b.ReportAllocs()
	b.ResetTimer()
	want.Store(int64(b.N * subscribers))
	start := time.Now()
	for range b.N {
		pub.Publish("bench/fanout", 1, false, payload)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d deliveries", got.Load(), want.Load())
	}
	b.ReportMetric(float64(b.N*subscribers)/time.Since(start).Seconds(), "deliveries/s")
}
