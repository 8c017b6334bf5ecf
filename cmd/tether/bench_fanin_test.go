package main_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

// BenchmarkFanIn runs the same fan-in against Tether and Mosquitto: N
// devices, each on its own connection (on Tether with its own token),
// publishing telemetry of K values to devices/<id>/telemetry.
//
//   - Tether: delivered = committed to SQLite by the storage writer (seen
//     through the node's Observe hook); latency from the device's "ts" (set
//     when it sends) to the commit of the transaction holding the message.
//   - Mosquitto (in memory): one subscriber to devices/+/telemetry at the
//     run's QoS receives everything; delivered = received by it.
//
// load=offered: each device publishes R messages a second (QoS 1: waiting
// for each PUBACK first, as a device with one message in flight does).
// load=capacity: a closed loop; at QoS 1 each device publishes as soon as
// its PUBACK returns, at QoS 0 as soon as its previous message has been
// delivered (stored; received), so no more than N messages are in flight
// and no queue grows without bound.
func BenchmarkFanIn(b *testing.B) {
	table := newSideBySide(fmt.Sprintf("FAN-IN: %d publishers, %d values/message, offered %g messages/s each, %s measured",
		*loadDevices, *loadKeys, *loadRate, *loadDuration))
	defer table.print()
	for _, qos := range []byte{0, 1} {
		for _, mode := range []loadMode{offered, capacity} {
			row := fmt.Sprintf("fan-in QoS %d %s", qos, mode)
			if mode == offered {
				row = fmt.Sprintf("fan-in QoS %d offered %g msg/s", qos, *loadRate*float64(*loadDevices))
			}
			name := fmt.Sprintf("qos=%d/load=%s", qos, mode)
			b.Run(name+fmt.Sprintf("/broker=tether/devices=%d", *loadDevices), func(b *testing.B) {
				table.add(row, fanInTether(b, qos, mode, nil))
			})
			b.Run(name+fmt.Sprintf("/broker=mosquitto/devices=%d", *loadDevices), func(b *testing.B) {
				table.add(row, fanInMosquitto(b, qos, mode))
			})
		}
	}
}

// fanInSink is where the fan-in's messages arrive, whichever the broker.
type fanInSink struct {
	run *loadRun
	// arrived tells a QoS 0 closed-loop publisher its message arrived;
	// nil in the other runs.
	arrived []chan struct{}
}

func newFanInSink(run *loadRun, qos byte, mode loadMode) *fanInSink {
	s := &fanInSink{run: run}
	if qos == 0 && mode == capacity {
		s.arrived = make([]chan struct{}, *loadDevices)
		for i := range s.arrived {
			s.arrived[i] = make(chan struct{}, 1)
		}
	}
	return s
}

// deliver records that publisher i's message arrived; i < 0 is unknown.
func (s *fanInSink) deliver(i int) {
	if s.arrived != nil && i >= 0 {
		select {
		case s.arrived[i] <- struct{}{}:
		default:
		}
	}
}

// fanInTether runs the fan-in against a Tether node; setup, if not nil,
// prepares the node (rules, say) once its devices exist.
func fanInTether(b *testing.B, qos byte, mode loadMode, setup func(*node)) loadResult {
	run := newLoadRun(b, nil)
	sink := newFanInSink(run, qos, mode)
	var index atomic.Pointer[map[string]int] // device ID → publisher, set once the devices exist
	n := startBenchNode(b, nil, func(msgs []tether.Message, at time.Time) {
		run.stored(msgs, at)
		idx := index.Load()
		if idx == nil {
			return
		}
		for _, m := range msgs {
			if i, ok := (*idx)[m.DeviceID]; ok {
				sink.deliver(i)
			}
		}
	})
	creds := make([][2]string, *loadDevices)
	topics := make([]string, *loadDevices)
	idx := make(map[string]int, *loadDevices)
	for i := range creds {
		id, token := n.createDevice(fmt.Sprintf("load-%05d", i))
		creds[i], topics[i], idx[id] = [2]string{id, token}, "devices/"+id+"/telemetry", i
	}
	index.Store(&idx)
	if setup != nil {
		setup(n)
	}
	clients, err := connectAll(b, n.MQTT.Addr(), creds)
	if err != nil {
		b.Fatal(err)
	}
	runFanIn(b, run, sink, clients, topics, qos, mode)
	r := run.result("tether")
	r.report(b)
	return r
}

func fanInMosquitto(b *testing.B, qos byte, mode loadMode) loadResult {
	addr, cpu := startMosquitto(b)
	run := newLoadRun(b, cpu)
	sink := newFanInSink(run, qos, mode)
	creds := make([][2]string, *loadDevices)
	topics := make([]string, *loadDevices)
	idx := make(map[string]int, *loadDevices)
	for i := range creds {
		id := fmt.Sprintf("load-%05d", i)
		creds[i], topics[i] = [2]string{id, ""}, "devices/"+id+"/telemetry"
		idx[topics[i]] = i
	}
	sub, err := dialMQTT(addr, "sink", "", "")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	if err := sub.subscribe("devices/+/telemetry", qos); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var lat []time.Duration
		err := sub.receive(func(topic, payload []byte) {
			sent, _, err := parsePayload(payload)
			if err != nil {
				b.Error(err)
				return
			}
			run.arrived.Add(1)
			if run.recording.Load() {
				lat = append(lat, time.Since(sent))
			}
			i, ok := idx[string(topic)]
			if !ok {
				i = -1
			}
			sink.deliver(i)
		})
		run.failed(b, "subscriber", err)
		run.addDelivered(lat...)
	}()
	clients, err := connectAll(b, addr, creds)
	if err != nil {
		b.Fatal(err)
	}
	runFanIn(b, run, sink, clients, topics, qos, mode)
	sub.Close()
	wg.Wait()
	r := run.result("mosquitto")
	r.report(b)
	return r
}

// runFanIn drives the publishers through the warm-up and the measured
// window and returns once they have all stopped.
func runFanIn(b *testing.B, run *loadRun, sink *fanInSink, clients []*mqttClient, topics []string, qos byte, mode loadMode) {
	b.Helper()
	keys := loadKeyNames()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tick *time.Ticker
			if mode == offered {
				period := time.Duration(float64(time.Second) / *loadRate)
				stagger(i, len(clients), period)
				tick = time.NewTicker(period)
				defer tick.Stop()
			}
			var lost *time.Timer
			if sink.arrived != nil {
				lost = time.NewTimer(lossTimeout)
				defer lost.Stop()
			}
			var acked []time.Duration
			defer func() { run.addAcked(acked...) }()
			buf := make([]byte, 0, 256)
			for v := 0; !run.stopping.Load(); v++ {
				if tick != nil {
					select {
					case <-tick.C:
					case <-run.stopped:
						return
					}
				}
				sent := time.Now()
				buf = appendPayload(buf[:0], keys, sent, -1, v)
				id, err := c.publish(topics[i], qos, buf)
				if err != nil {
					run.failed(b, "publish", err)
					return
				}
				run.published.Add(1)
				if qos > 0 {
					if err := c.waitAck(id); err != nil {
						run.failed(b, "PUBACK", err)
						return
					}
					if run.recording.Load() {
						acked = append(acked, time.Since(sent))
					}
				} else if lost != nil {
					lost.Reset(lossTimeout)
					select {
					case <-sink.arrived[i]:
					case <-lost.C:
						run.lost.Add(1)
					case <-run.stopped:
						return
					}
				}
			}
		}()
	}
	run.measure()
	unblock(clients)
	wg.Wait()
}
