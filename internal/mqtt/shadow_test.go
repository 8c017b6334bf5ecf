package mqtt

import (
	"encoding/json"
	"testing"

	"github.com/tether-iot/tether"
)

func TestShadowRequests(t *testing.T) {
	tg, _ := startServices(t, nil, "s1", "s2", "s3")

	t.Run("a 3.1.1 device updates its reported state and reads its shadow", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("s1"), opts3{})
		dev.subscribe(t, "devices/s1/shadow/#", 1)
		dev.publish(t, "devices/s1/shadow/update", 1, false, `{"state":{"reported":{"temp":20}},"client_token":"a"}`)
		got := decode(t, on3(t, dev, "devices/s1/shadow/update/accepted"))
		if got["client_token"] != "a" || got["version"] != 1.0 || got["state"].(map[string]any)["reported"].(map[string]any)["temp"] != 20.0 {
			t.Fatalf("accepted %v", got)
		}
		dev.publish(t, "devices/s1/shadow/get", 1, false, "")
		got = decode(t, on3(t, dev, "devices/s1/shadow/get/accepted"))
		if got["version"] != 1.0 || got["device_id"] != "s1" {
			t.Fatalf("get accepted %v", got)
		}
		// The requests themselves reach no subscriber.
		nothing(t, dev.msgs, "the device's shadow subscription")
	})

	t.Run("a device's update is rejected with a code and its client token", func(t *testing.T) {
		dev := tg.mustConnect3(t, "tcp", token("s1"), opts3{})
		dev.subscribe(t, "devices/s1/shadow/update/rejected", 1)
		for _, tc := range []struct{ payload, code, token string }{
			{`{"state":{"desired":{"on":true}},"client_token":"d"}`, tether.EFORBIDDEN, "d"},
			{`{"state":{"reported":{"temp":1}},"version":99,"client_token":"v"}`, tether.ECONFLICT, "v"},
			{`not json`, tether.EINVALID, ""},
		} {
			dev.publish(t, "devices/s1/shadow/update", 1, false, tc.payload)
			got := decode(t, on3(t, dev, "devices/s1/shadow/update/rejected"))
			if got["code"] != tc.code || got["message"] == "" || (tc.token != "" && got["client_token"] != tc.token) {
				t.Errorf("%s: rejected %v, want code %s", tc.payload, got, tc.code)
			}
		}
	})

	t.Run("a named shadow has its own topics", func(t *testing.T) {
		dev := tg.mustConnect5(t, "tcp", token("s2"), opts5{})
		dev.subscribe(t, "devices/s2/shadow/name/fan/#", 1)
		dev.subscribe(t, "devices/s2/shadow/name/+/get/rejected", 1)
		dev.publish(t, "devices/s2/shadow/name/fan/update", 1, false, `{"state":{"reported":{"rpm":900}}}`)
		got := decode(t, on5(t, dev, "devices/s2/shadow/name/fan/update/accepted").Payload)
		if got["name"] != "fan" {
			t.Fatalf("accepted %v", got)
		}
		dev.publish(t, "devices/s2/shadow/name/bad~name/get", 1, false, "")
		if got := decode(t, on5(t, dev, "devices/s2/shadow/name/bad~name/get/rejected").Payload); got["code"] != tether.EINVALID {
			t.Fatalf("rejected %v", got)
		}
	})

	t.Run("an MQTT 5 request gets the answer on its response topic with its correlation data", func(t *testing.T) {
		dev := tg.mustConnect5(t, "tcp", token("s3"), opts5{})
		dev.subscribe(t, "devices/s3/replies/#", 1)
		if code := dev.publishProps(t, "devices/s3/shadow/update", 1, `{"state":{"reported":{"x":1}}}`, "devices/s3/replies/1", "corr-1"); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		m := on5(t, dev, "devices/s3/replies/1")
		if string(m.Properties.CorrelationData) != "corr-1" {
			t.Errorf("correlation data %q", m.Properties.CorrelationData)
		}
		var sh tether.Shadow
		if err := json.Unmarshal(m.Payload, &sh); err != nil || sh.Version != 1 {
			t.Errorf("answer %q: %v", m.Payload, err)
		}
		dev.publishProps(t, "devices/s3/shadow/update", 1, `{"state":{"desired":{"x":2}}}`, "devices/s3/replies/2", "corr-2")
		if m := on5(t, dev, "devices/s3/replies/2"); string(m.Properties.CorrelationData) != "corr-2" || decode(t, m.Payload)["code"] != tether.EFORBIDDEN {
			t.Errorf("rejected answer %q, correlation %q", m.Payload, m.Properties.CorrelationData)
		}
	})

	t.Run("a response topic outside the device's tree is not used", func(t *testing.T) {
		lab := tg.mustConnect5(t, "tcp", creds{}, opts5{})
		lab.subscribe(t, "lab/replies", 1)
		other := tg.mustConnect5(t, "tcp", token("d2"), opts5{})
		other.subscribe(t, "devices/d2/#", 1)
		dev := tg.mustConnect5(t, "tcp", token("s3"), opts5{})
		dev.subscribe(t, "devices/s3/shadow/get/accepted", 1)
		for _, rt := range []string{"lab/replies", "devices/d2/inbox"} {
			dev.publishProps(t, "devices/s3/shadow/get", 1, "", rt, "c")
			on5(t, dev, "devices/s3/shadow/get/accepted")
		}
		nothing(t, lab.msgs, "a lab client")
		nothing(t, other.msgs, "another device")
	})
}

func TestShadowDelta(t *testing.T) {
	tg, _ := startServices(t, nil, "s1")
	dev := tg.mustConnect5(t, "tcp", token("s1"), opts5{})
	dev.subscribe(t, "devices/s1/shadow/name/+/delta", 1)
	dev.subscribe(t, "devices/s1/shadow/delta", 1)
	other := tg.mustConnect3(t, "tcp", token("d2"), opts3{})
	other.subscribe(t, "devices/d2/#", 1)
	shadow := func(name string, version int64, desired, delta map[string]any) *tether.Shadow {
		return &tether.Shadow{TenantID: "t1", DeviceID: "s1", Name: name, Version: version,
			State: tether.ShadowState{Desired: desired, Reported: map[string]any{}, Delta: delta}}
	}

	t.Run("a change of desired sends the delta and the version", func(t *testing.T) {
		tg.ShadowChanged(shadow("", 2, map[string]any{"on": true}, map[string]any{"on": true}))
		got := decode(t, on5(t, dev, "devices/s1/shadow/delta").Payload)
		if got["version"] != 2.0 || got["state"].(map[string]any)["on"] != true {
			t.Fatalf("delta %v", got)
		}
	})
	t.Run("a change of reported only sends nothing", func(t *testing.T) {
		tg.ShadowChanged(shadow("", 3, map[string]any{"on": true}, map[string]any{"on": true}))
		nothing(t, dev.msgs, "an unchanged desired state")
	})
	t.Run("a change of desired without a delta sends nothing", func(t *testing.T) {
		tg.ShadowChanged(shadow("", 4, map[string]any{"on": false}, nil))
		nothing(t, dev.msgs, "an empty delta")
	})
	t.Run("a named shadow's delta goes to its topic", func(t *testing.T) {
		tg.ShadowChanged(shadow("fan", 1, map[string]any{"rpm": 1000}, map[string]any{"rpm": 1000}))
		on5(t, dev, "devices/s1/shadow/name/fan/delta")
	})
	nothing(t, other.msgs, "another device")
}
