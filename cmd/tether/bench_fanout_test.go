package main_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether/internal/config"
)

// fanOutTopic is outside devices/, where Tether's lab mode lets anonymous
// clients publish and subscribe.
const fanOutTopic = "bench/fanout"

// BenchmarkFanOut runs the same fan-out against Tether and Mosquitto: one
// publisher, S subscribers of one topic, all anonymous (Tether in lab
// mode, mqtt_allow_anonymous; Mosquitto with allow_anonymous), publishing
// and subscribing at the run's QoS. Delivered = a subscriber received a
// message; the rate counts deliveries (S per message), the latency is from
// publish to each subscriber's receipt.
//
// load=offered: the publisher sends R messages a second. load=capacity: a
// closed loop with W messages in flight: the publisher sends the next
// message as soon as one of the W has reached every subscriber. At QoS 1
// the publisher does not wait for each PUBACK before the next message
// (the window bounds what is in flight); their latency is measured
// apart.
func BenchmarkFanOut(b *testing.B) {
	table := newSideBySide(fmt.Sprintf("FAN-OUT: 1 publisher, %d subscribers, %d values/message, offered %g messages/s, capacity window %d messages, %s measured",
		*loadSubs, *loadKeys, *loadFanRate, *loadWindow, *loadDuration))
	defer table.print()
	for _, qos := range []byte{0, 1} {
		for _, mode := range []loadMode{offered, capacity} {
			row := fmt.Sprintf("fan-out QoS %d capacity (window %d)", qos, *loadWindow)
			if mode == offered {
				row = fmt.Sprintf("fan-out QoS %d offered %g msg/s × %d", qos, *loadFanRate, *loadSubs)
			}
			name := fmt.Sprintf("qos=%d/load=%s", qos, mode)
			b.Run(name+fmt.Sprintf("/broker=tether/subscribers=%d", *loadSubs), func(b *testing.B) {
				n := startBenchNode(b, func(c *config.Config) { c.MQTTAllowAnonymous = true }, nil)
				table.add(row, runFanOut(b, n.MQTT.Addr(), nil, qos, mode))
			})
			b.Run(name+fmt.Sprintf("/broker=mosquitto/subscribers=%d", *loadSubs), func(b *testing.B) {
				addr, cpu := startMosquitto(b)
				table.add(row, runFanOut(b, addr, cpu, qos, mode))
			})
		}
	}
}

// runFanOut runs the fan-out against the broker at addr: Mosquitto when
// brokerCPU reads its CPU time, Tether (in this process) when it is nil.
func runFanOut(b *testing.B, addr string, brokerCPU func() time.Duration, qos byte, mode loadMode) loadResult {
	b.Helper()
	broker := "tether"
	if brokerCPU != nil {
		broker = "mosquitto"
	}
	creds := make([][2]string, *loadSubs)
	for i := range creds {
		creds[i] = [2]string{fmt.Sprintf("fanout-sub-%05d", i), ""}
	}
	subs, err := connectAll(b, addr, creds)
	if err != nil {
		b.Fatalf("anonymous subscribers (on Tether, lab mode: mqtt_allow_anonymous): %v", err)
	}
	pub, err := dialMQTT(addr, "fanout-pub", "", "")
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	for _, s := range subs {
		if err := s.subscribe(fanOutTopic, qos); err != nil {
			b.Fatal(err)
		}
	}

	// arrivals[seq % ring] counts the subscribers that have message seq;
	// the one that completes it tells the publisher on complete. The
	// publisher clears a slot before it reuses it, and keeps far fewer
	// than ring messages in flight.
	const ring = 1 << 12
	var arrivals [ring]atomic.Int32
	complete := make(chan struct{}, ring)
	run := newLoadRun(b, brokerCPU)
	run.copies = int64(len(subs))
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			err := s.receive(func(_, payload []byte) {
				sent, seq, err := parsePayload(payload)
				if err != nil || seq < 0 {
					b.Errorf("fan-out payload: %v", err)
					return
				}
				run.arrived.Add(1)
				if run.recording.Load() {
					lat = append(lat, time.Since(sent))
				}
				if arrivals[seq%ring].Add(1) == int32(len(subs)) {
					select {
					case complete <- struct{}{}:
					default:
					}
				}
			})
			run.failed(b, "subscriber", err)
			run.addDelivered(lat...)
		}()
	}

	// At QoS 1 the PUBACKs are read by their own goroutine, so that the
	// publisher keeps up to the window in flight instead of waiting for
	// each; sentAt[id] is when packet id was sent, in unix nanoseconds.
	var sentAt [1 << 16]atomic.Int64
	acksDone := make(chan struct{})
	if qos > 0 {
		go func() {
			defer close(acksDone)
			var acked []time.Duration
			defer func() { run.addAcked(acked...) }()
			for {
				h, body, err := pub.read()
				if err != nil {
					run.failed(b, "PUBACK", err)
					return
				}
				if h>>4 == 4 && len(body) >= 2 && run.recording.Load() {
					id := uint16(body[0])<<8 | uint16(body[1])
					acked = append(acked, time.Duration(time.Now().UnixNano()-sentAt[id].Load()))
				}
			}
		}()
	} else {
		close(acksDone)
	}

	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		var tick *time.Ticker
		if mode == offered {
			tick = time.NewTicker(time.Duration(float64(time.Second) / *loadFanRate))
			defer tick.Stop()
		}
		lost := time.NewTimer(lossTimeout)
		defer lost.Stop()
		keys := loadKeyNames()
		buf := make([]byte, 0, 256)
		inFlight := 0
		for seq := int64(0); !run.stopping.Load(); seq++ {
			if tick != nil {
				select {
				case <-tick.C:
				case <-run.stopped:
					return
				}
			}
			for tick == nil && inFlight >= *loadWindow {
				lost.Reset(lossTimeout)
				select {
				case <-complete:
				case <-lost.C:
					// A message some subscriber never got (QoS 0).
					run.lost.Add(1)
				case <-run.stopped:
					return
				}
				inFlight--
			}
			arrivals[seq%ring].Store(0)
			sent := time.Now()
			buf = appendPayload(buf[:0], keys, sent, seq, int(seq))
			if qos > 0 {
				// The identifier publish will use, stamped before the
				// PUBACK can come back.
				next := pub.id + 1
				if next == 0 {
					next = 1
				}
				sentAt[next].Store(sent.UnixNano())
			}
			if _, err := pub.publish(fanOutTopic, qos, buf); err != nil {
				run.failed(b, "publish", err)
				return
			}
			run.published.Add(1)
			inFlight++
		}
	}()
	run.measure()
	unblock(append(subs, pub))
	<-pubDone
	pub.Close()
	<-acksDone
	for _, s := range subs {
		s.Close()
	}
	wg.Wait()
	r := run.result(broker)
	r.report(b)
	return r
}
