package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
	"github.com/tether-iot/tether/internal/testkit"
)

// gqlKey makes an API key with role and returns it.
func gqlKey(t *testing.T, n *node, role string) (id, key string) {
	t.Helper()
	id = "ak_gql_" + role
	key = secret.Token(id)
	if err := n.DB.CreateAPIKey(context.Background(), &tether.APIKey{TenantID: tether.DefaultTenantID, ID: id, Name: role + " key",
		Role: role, Hash: secret.Hash(key)}); err != nil {
		t.Fatal(err)
	}
	return id, key
}

// gqlPost sends a GraphQL request with key (none if "-") and decodes the
// answer into out, if it is a GraphQL response. It returns the status,
// the headers and the raw body.
func gqlPost(t *testing.T, n *node, key, query string, vars map[string]any, out *testkit.GraphQLResult) (int, http.Header, []byte) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "-" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return gqlDo(t, req, out)
}

func gqlDo(t *testing.T, req *http.Request, out *testkit.GraphQLResult) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/") && !strings.Contains(resp.Header.Get("Content-Type"), "problem") {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
	return resp.StatusCode, resp.Header, raw
}

// gqlData runs a query that must succeed and decodes its data into out.
func gqlData(t *testing.T, n *node, key, query string, vars map[string]any, out any) {
	t.Helper()
	var res testkit.GraphQLResult
	status, _, raw := gqlPost(t, n, key, query, vars, &res)
	if status != http.StatusOK || len(res.Errors) > 0 {
		t.Fatalf("%d %s", status, raw)
	}
	if err := json.Unmarshal(res.Data, out); err != nil {
		t.Fatalf("decode %s: %v", res.Data, err)
	}
}

func TestGraphQLOverHTTP(t *testing.T) {
	n := startNode(t, nil)
	rule := map[string]any{
		"id": "too-hot", "name": "Too hot", "statement": "SELECT temp FROM telemetry WHERE temp > 25",
		"actions": []map[string]any{{"type": "alert", "alert_type": "hot", "severity": "warning"}},
	}
	if status, _, raw := n.api("POST", "/api/v1/rules", "", rule, nil); status != http.StatusCreated {
		t.Fatalf("create rule: %d %s", status, raw)
	}
	var created createdDevice
	if status, _, raw := n.api("POST", "/api/v1/devices", "", map[string]any{"id": "gql-therm", "name": "Thermostat",
		"labels": map[string]string{"site": "lab"}}, &created); status != http.StatusCreated {
		t.Fatalf("create device: %d %s", status, raw)
	}
	id, token := created.Device.ID, created.Token
	n.createDevice("gql-other")

	c, err := connect3(t, n.MQTT.Addr(), id, token)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	for _, p := range []string{
		fmt.Sprintf(`{"temp": 20, "ts": %d}`, base.UnixMilli()),
		fmt.Sprintf(`{"temp": 22, "ts": %d}`, base.Add(10*time.Second).UnixMilli()),
		fmt.Sprintf(`{"temp": 30, "ts": %d}`, base.Add(70*time.Second).UnixMilli()),
	} {
		if tok := c.Publish("devices/"+id+"/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	n.waitStored(3)
	var alerts struct {
		Alerts []tether.Alert `json:"alerts"`
	}
	waitFor(t, "the hot alert", func() bool {
		n.api("GET", "/api/v1/alerts?status=active", "", nil, &alerts)
		return len(alerts.Alerts) > 0
	})
	alertID := alerts.Alerts[0].ID
	_, viewer := gqlKey(t, n, tether.RoleViewer)
	operatorID, operator := gqlKey(t, n, tether.RoleOperator)

	t.Run("an operator sets a shadow's desired state, and a stale version is a conflict", func(t *testing.T) {
		var out struct {
			UpdateShadowDesired struct {
				Version int64 `json:"version"`
				State   struct {
					Desired map[string]any `json:"desired"`
				} `json:"state"`
			} `json:"updateShadowDesired"`
		}
		const m = `mutation($d: JSON!, $v: Int64) { updateShadowDesired(deviceId: "gql-therm", desired: $d, version: $v) { version state { desired } } }`
		gqlData(t, n, operator, m, map[string]any{"d": map[string]any{"target": 21.5}}, &out)
		if sh := out.UpdateShadowDesired; sh.Version != 1 || sh.State.Desired["target"] != 21.5 {
			t.Errorf("shadow = %+v", sh)
		}
		var res testkit.GraphQLResult
		gqlPost(t, n, operator, m, map[string]any{"d": map[string]any{"target": 19}, "v": 7}, &res)
		if res.Code() != tether.ECONFLICT || res.Errors[0].Extensions["currentVersion"] != 1.0 {
			t.Errorf("stale version: %+v", res.Errors)
		}
	})

	t.Run("one query returns devices with their latest values, shadow, presence and alerts", func(t *testing.T) {
		var out struct {
			Devices struct {
				NextCursor *string `json:"nextCursor"`
				Devices    []struct {
					ID     string `json:"id"`
					Labels []struct{ Key, Value string }
					Latest []struct {
						Key   string    `json:"key"`
						TS    time.Time `json:"ts"`
						Value any       `json:"value"`
					} `json:"latest"`
					Presence struct {
						Status string `json:"status"`
					} `json:"presence"`
					Shadow struct {
						State struct {
							Desired map[string]any `json:"desired"`
						} `json:"state"`
					} `json:"shadow"`
					Alerts []struct {
						ID, Type, Status string
					} `json:"alerts"`
				} `json:"devices"`
			} `json:"devices"`
		}
		// A hundred devices with all of this is within the cost limit.
		gqlData(t, n, viewer, `query($sel: [LabelInput!]) {
			devices(first: 100, labels: $sel) {
				nextCursor
				devices {
					id name labels { key value }
					presence { status since transport }
					latest(keys: ["temp"]) { key ts value }
					shadow { version state { desired reported delta } }
					alerts(first: 5) { id type severity status }
				}
			}
		}`, map[string]any{"sel": []map[string]string{{"key": "site", "value": "lab"}}}, &out)
		ds := out.Devices.Devices
		if len(ds) != 1 || ds[0].ID != id || out.Devices.NextCursor != nil {
			t.Fatalf("devices = %+v", out.Devices)
		}
		d := ds[0]
		if len(d.Labels) != 1 || d.Labels[0].Key != "site" || d.Labels[0].Value != "lab" {
			t.Errorf("labels = %+v", d.Labels)
		}
		if len(d.Latest) != 1 || d.Latest[0].Value != 30.0 || !d.Latest[0].TS.Equal(base.Add(70*time.Second)) {
			t.Errorf("latest = %+v", d.Latest)
		}
		if d.Presence.Status != "ONLINE" {
			t.Errorf("presence = %+v", d.Presence)
		}
		if d.Shadow.State.Desired["target"] != 21.5 {
			t.Errorf("shadow = %+v", d.Shadow)
		}
		if len(d.Alerts) != 1 || d.Alerts[0].ID != alertID || d.Alerts[0].Type != "hot" || d.Alerts[0].Status != "ACTIVE" {
			t.Errorf("alerts = %+v", d.Alerts)
		}
	})

	t.Run("telemetry comes back in buckets", func(t *testing.T) {
		var out struct {
			Device struct {
				Telemetry []struct {
					Key     string `json:"key"`
					Samples []struct {
						TS    time.Time `json:"ts"`
						Value any       `json:"value"`
					} `json:"samples"`
				} `json:"telemetry"`
			} `json:"device"`
		}
		gqlData(t, n, viewer, `query($from: Time, $to: Time) {
			device(id: "gql-therm") { telemetry(keys: ["temp"], from: $from, to: $to, agg: AVG, bucket: "1m") { key samples { ts value } } }
		}`, map[string]any{"from": base.Add(-time.Minute), "to": base.Add(5 * time.Minute)}, &out)
		ts := out.Device.Telemetry
		if len(ts) != 1 || len(ts[0].Samples) != 2 {
			t.Fatalf("telemetry = %+v", ts)
		}
		if s := ts[0].Samples; s[0].Value != 21.0 || !s[0].TS.Equal(base) || s[1].Value != 30.0 || !s[1].TS.Equal(base.Add(time.Minute)) {
			t.Errorf("buckets = %+v", s)
		}
	})

	t.Run("an admin's mutation changes the device the REST API reads", func(t *testing.T) {
		var out struct {
			UpdateDevice struct {
				Name   string `json:"name"`
				Labels []struct{ Key, Value string }
			} `json:"updateDevice"`
		}
		gqlData(t, n, adminKey, `mutation { updateDevice(id: "gql-therm", input: {name: "Hall thermostat", labels: [{key: "site", value: "hall"}]}) { name labels { key value } } }`, nil, &out)
		if out.UpdateDevice.Name != "Hall thermostat" || len(out.UpdateDevice.Labels) != 1 || out.UpdateDevice.Labels[0].Value != "hall" {
			t.Errorf("updated = %+v", out.UpdateDevice)
		}
		var d struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		}
		n.api("GET", "/api/v1/devices/"+id, "", nil, &d)
		if d.Name != "Hall thermostat" || d.Labels["site"] != "hall" {
			t.Errorf("REST reads %+v", d)
		}
	})

	t.Run("an operator acknowledges an alert, named as its source", func(t *testing.T) {
		var out struct {
			AcknowledgeAlert struct {
				Status, AcknowledgedBy string
			} `json:"acknowledgeAlert"`
		}
		gqlData(t, n, operator, `mutation($id: ID!) { acknowledgeAlert(id: $id) { status acknowledgedBy } }`, map[string]any{"id": alertID}, &out)
		if a := out.AcknowledgeAlert; a.Status != "ACKNOWLEDGED" || a.AcknowledgedBy != "api:"+operatorID {
			t.Errorf("alert = %+v", a)
		}
	})

	t.Run("a viewer's mutations are forbidden and change nothing", func(t *testing.T) {
		for _, m := range []string{
			`mutation { updateDevice(id: "gql-therm", input: {name: "hacked"}) { name } }`,
			`mutation { deleteDevice(id: "gql-other") }`,
			`mutation { updateShadowDesired(deviceId: "gql-therm", desired: {target: 99}) { version } }`,
			`mutation { clearAlert(id: "` + alertID + `") { status } }`,
		} {
			var res testkit.GraphQLResult
			status, _, raw := gqlPost(t, n, viewer, m, nil, &res)
			if status != http.StatusOK || res.Code() != tether.EFORBIDDEN || string(res.Data) != "null" {
				t.Errorf("%s: %d %s", m, status, raw)
			}
		}
		var d struct {
			Name string `json:"name"`
		}
		n.api("GET", "/api/v1/devices/"+id, "", nil, &d)
		if d.Name != "Hall thermostat" {
			t.Errorf("name = %q", d.Name)
		}
		if status, _, _ := n.api("GET", "/api/v1/devices/gql-other", "", nil, nil); status != http.StatusOK {
			t.Errorf("gql-other is gone: %d", status)
		}
	})

	t.Run("an operator may not do an admin's mutation", func(t *testing.T) {
		var res testkit.GraphQLResult
		gqlPost(t, n, operator, `mutation { rotateDeviceToken(id: "gql-therm") { token } }`, nil, &res)
		if res.Code() != tether.EFORBIDDEN {
			t.Errorf("errors = %+v", res.Errors)
		}
	})

	t.Run("a request without a valid key is refused with 401 as a problem", func(t *testing.T) {
		for _, key := range []string{"-", "ak_nobody.wrong"} {
			status, h, raw := gqlPost(t, n, key, `{ viewer { role } }`, nil, nil)
			if status != http.StatusUnauthorized || h.Get("Content-Type") != "application/problem+json" ||
				!strings.Contains(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(string(raw), `"code":"unauthorized"`) {
				t.Errorf("key %q: %d %v %s", key, status, h, raw)
			}
		}
	})

	t.Run("a query deeper than 8 levels is refused before it runs", func(t *testing.T) {
		deep := `{ alerts { alerts { device { alerts { device { alerts { device { alerts { id } } } } } } } } }`
		var res testkit.GraphQLResult
		status, _, raw := gqlPost(t, n, viewer, deep, nil, &res)
		if status != http.StatusUnprocessableEntity || res.Code() != "QUERY_TOO_DEEP" || len(res.Data) > 0 && string(res.Data) != "null" {
			t.Errorf("%d %s", status, raw)
		}
		// One level less is allowed (and, with one alert a level, cheap).
		var ok testkit.GraphQLResult
		status, _, raw = gqlPost(t, n, viewer, `{ alerts(first: 1) { alerts { device { alerts(first: 1) { device { alerts(first: 1) { device { id } } } } } } } }`, nil, &ok)
		if status != http.StatusOK || len(ok.Errors) > 0 {
			t.Errorf("8 levels: %d %s", status, raw)
		}
	})

	t.Run("a query costlier than the limit is refused before it runs", func(t *testing.T) {
		var res testkit.GraphQLResult
		status, _, raw := gqlPost(t, n, viewer, `{ devices(first: 1000) { devices { telemetry(limit: 10000) { key samples { value } } } } }`, nil, &res)
		if status != http.StatusUnprocessableEntity || res.Code() != "COMPLEXITY_LIMIT_EXCEEDED" {
			t.Errorf("%d %s", status, raw)
		}
	})

	t.Run("GET runs a query but not a mutation", func(t *testing.T) {
		get := func(q string) (int, testkit.GraphQLResult, []byte) {
			req, _ := http.NewRequest("GET", "http://"+n.HTTP.Addr()+"/api/graphql?query="+url.QueryEscape(q), nil)
			req.Header.Set("Authorization", "Bearer "+viewer)
			var res testkit.GraphQLResult
			status, _, raw := gqlDo(t, req, &res)
			return status, res, raw
		}
		if status, res, raw := get(`{ viewer { role kind } }`); status != http.StatusOK || string(res.Data) != `{"viewer":{"role":"VIEWER","kind":"api_key"}}` {
			t.Errorf("query: %d %s", status, raw)
		}
		if status, _, raw := get(`mutation { deleteDevice(id: "gql-other") }`); status == http.StatusOK {
			t.Errorf("mutation over GET: %d %s", status, raw)
		}
	})

	t.Run("a browser gets the GraphiQL page", func(t *testing.T) {
		for _, path := range []string{"/api/graphql", "/api/graphiql"} {
			req, _ := http.NewRequest("GET", "http://"+n.HTTP.Addr()+path, nil)
			req.Header.Set("Accept", "text/html,application/xhtml+xml")
			status, h, raw := gqlDo(t, req, nil)
			if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(string(raw), "graphiql") {
				t.Errorf("%s: %d %v", path, status, h)
			}
		}
	})

	t.Run("a body over 1 MiB is refused", func(t *testing.T) {
		big := `{"query": "{ viewer { id } }", "variables": {"pad": "` + strings.Repeat("x", 1<<20) + `"}}`
		req, _ := http.NewRequest("POST", "http://"+n.HTTP.Addr()+"/api/graphql", strings.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+viewer)
		if status, _, raw := gqlDo(t, req, nil); status != http.StatusRequestEntityTooLarge {
			t.Errorf("%d %.200s", status, raw)
		}
	})

	t.Run("a subscription over HTTP is refused", func(t *testing.T) {
		var res testkit.GraphQLResult
		gqlPost(t, n, viewer, `subscription { telemetry { deviceId } }`, nil, &res)
		if res.Code() != "SUBSCRIPTION_NEEDS_WEBSOCKET" {
			t.Errorf("errors = %+v", res.Errors)
		}
	})
}

// wsClient is a GraphQL client over a WebSocket.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dialGraphQL opens a WebSocket to the node's GraphQL API with the
// subprotocol and header.
func dialGraphQL(t *testing.T, n *node, subprotocol string, h http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws://"+n.HTTP.Addr()+"/api/graphql", h)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}, resp, nil
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	if err := c.conn.WriteJSON(m); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next message other than a ping (which it answers) or
// a keep-alive.
func (c *wsClient) read() (wsMessage, error) {
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMessage
		if err := c.conn.ReadJSON(&m); err != nil {
			return m, err
		}
		switch m.Type {
		case "ping":
			if err := c.conn.WriteJSON(wsMessage{Type: "pong"}); err != nil {
				return m, err
			}
		case "ka":
		default:
			return m, nil
		}
	}
}

func (c *wsClient) expect(typ string) wsMessage {
	c.t.Helper()
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m.Type != typ {
		c.t.Fatalf("got %s %s, want %s", m.Type, m.Payload, typ)
	}
	return m
}

// init sends connection_init with payload and waits for the ack.
func (c *wsClient) init(payload any) {
	c.t.Helper()
	b, _ := json.Marshal(payload)
	c.send(wsMessage{Type: "connection_init", Payload: b})
	c.expect("connection_ack")
}

func (c *wsClient) subscribe(id, typ, query string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query})
	c.send(wsMessage{ID: id, Type: typ, Payload: b})
}

func TestGraphQLSubscriptionsOverWebSocket(t *testing.T) {
	n := startNode(t, nil)
	id, token := n.createDevice("gql-live")
	_, viewer := gqlKey(t, n, tether.RoleViewer)

	t.Run("a subscriber receives a device's telemetry as the device publishes it", func(t *testing.T) {
		c, _, err := dialGraphQL(t, n, "graphql-transport-ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.init(map[string]string{"Authorization": "Bearer " + viewer})
		c.subscribe("1", "subscribe", `subscription { telemetry(deviceIds: ["gql-live"], keys: ["temp"]) { deviceId time points { key ts value } lagging dropped } }`)

		dev, err := connect3(t, n.MQTT.Addr(), id, token)
		if err != nil {
			t.Fatal(err)
		}
		// The subscription starts once the server has read the message;
		// the device publishes until a message reaches the subscriber.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for i := 0; ; i++ {
				dev.Publish("devices/"+id+"/telemetry", 1, false, fmt.Sprintf(`{"temp": 21.5, "hum": %d}`, i)).WaitTimeout(time.Second)
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		m := c.expect("next")
		var got struct {
			Data struct {
				Telemetry struct {
					DeviceID string `json:"deviceId"`
					Points   []struct {
						Key   string `json:"key"`
						Value any    `json:"value"`
					} `json:"points"`
					Lagging bool `json:"lagging"`
				} `json:"telemetry"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Payload, &got); err != nil {
			t.Fatal(err)
		}
		tu := got.Data.Telemetry
		if m.ID != "1" || tu.DeviceID != id || tu.Lagging || len(tu.Points) != 1 || tu.Points[0].Key != "temp" || tu.Points[0].Value != 21.5 {
			t.Errorf("next = %s", m.Payload)
		}
		c.send(wsMessage{ID: "1", Type: "complete"})
	})

	t.Run("the upgrade's Authorization header is enough, and queries run over the socket too", func(t *testing.T) {
		c, _, err := dialGraphQL(t, n, "graphql-transport-ws", http.Header{"Authorization": {"Bearer " + viewer}})
		if err != nil {
			t.Fatal(err)
		}
		c.init(nil)
		c.subscribe("q", "subscribe", `{ viewer { role } }`)
		if m := c.expect("next"); !strings.Contains(string(m.Payload), `"role":"VIEWER"`) {
			t.Errorf("next = %s", m.Payload)
		}
		c.expect("complete")
	})

	t.Run("the legacy graphql-ws protocol works too", func(t *testing.T) {
		c, _, err := dialGraphQL(t, n, "graphql-ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.init(map[string]string{"Authorization": "Bearer " + viewer})
		c.subscribe("q", "start", `{ device(id: "gql-live") { id } }`)
		if m := c.expect("data"); !strings.Contains(string(m.Payload), `"id":"gql-live"`) {
			t.Errorf("data = %s", m.Payload)
		}
	})

	t.Run("a socket without a caller, or with a wrong key, is closed with 4403", func(t *testing.T) {
		for _, payload := range []any{nil, map[string]string{"Authorization": "Bearer ak_nobody.wrong"}} {
			c, _, err := dialGraphQL(t, n, "graphql-transport-ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(payload)
			c.send(wsMessage{Type: "connection_init", Payload: b})
			var ce *websocket.CloseError
			for err == nil {
				var m wsMessage
				if m, err = c.read(); err == nil && m.Type == "connection_ack" {
					t.Fatalf("payload %v: acknowledged", payload)
				}
			}
			if !errors.As(err, &ce) || ce.Code != 4403 {
				t.Errorf("payload %v: %v", payload, err)
			}
		}
	})

	t.Run("the connection_init payload's key is the caller even when the header's is wrong", func(t *testing.T) {
		c, _, err := dialGraphQL(t, n, "graphql-transport-ws", http.Header{"Authorization": {"Bearer ak_nobody.wrong"}})
		if err != nil {
			t.Fatal(err)
		}
		// The payload's key is the caller, whatever the header said.
		c.init(map[string]string{"Authorization": "Bearer " + viewer})
		c.subscribe("q", "subscribe", `{ viewer { role } }`)
		c.expect("next")
	})

	t.Run("another site's page cannot open a socket", func(t *testing.T) {
		_, resp, err := dialGraphQL(t, n, "graphql-transport-ws", http.Header{"Origin": {"http://evil.example"}, "Authorization": {"Bearer " + viewer}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("err = %v, resp = %+v", err, resp)
		}
	})
}

func TestGraphQLWithASignedInUsersSession(t *testing.T) {
	n := startNode(t, nil)
	const email, password = "gql-operator@example.com", "a long enough password for graphql"
	if status, _, raw := n.api("POST", "/api/v1/users", "", map[string]string{"email": email, "password": password, "role": tether.RoleOperator}, nil); status != http.StatusCreated {
		t.Fatalf("create user: %d %s", status, raw)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar}
	base := "http://" + n.HTTP.Addr()
	var session struct {
		CSRFToken string `json:"csrf_token"`
	}
	resp, err := browser.Post(base+"/api/v1/auth/login", "application/json", strings.NewReader(fmt.Sprintf(`{"email": %q, "password": %q}`, email, password)))
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&session)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || session.CSRFToken == "" {
		t.Fatalf("login: %d %v", resp.StatusCode, err)
	}
	post := func(csrf, query string) (int, testkit.GraphQLResult, []byte) {
		req, _ := http.NewRequest("POST", base+"/api/graphql", strings.NewReader(fmt.Sprintf(`{"query": %q}`, query)))
		req.Header.Set("Content-Type", "application/json")
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var res testkit.GraphQLResult
		_ = json.Unmarshal(raw, &res)
		return resp.StatusCode, res, raw
	}

	t.Run("a POST with the session's cookie needs its CSRF token", func(t *testing.T) {
		for _, csrf := range []string{"", "wrong"} {
			if status, _, raw := post(csrf, `mutation { updateShadowDesired(deviceId: "x", desired: {a: 1}) { version } }`); status != http.StatusForbidden || !strings.Contains(string(raw), "CSRF") {
				t.Errorf("csrf %q: %d %s", csrf, status, raw)
			}
		}
		status, res, raw := post(session.CSRFToken, `{ viewer { kind role } }`)
		if status != http.StatusOK || string(res.Data) != `{"viewer":{"kind":"user","role":"OPERATOR"}}` {
			t.Errorf("%d %s", status, raw)
		}
	})

	t.Run("a GET query with the cookie needs no CSRF token", func(t *testing.T) {
		resp, err := browser.Get(base + "/api/graphql?query=" + url.QueryEscape(`{ viewer { kind } }`))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"kind":"user"`) {
			t.Errorf("%d %s", resp.StatusCode, raw)
		}
	})

	t.Run("a WebSocket from the same origin is authenticated by the cookie", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, Jar: jar, HandshakeTimeout: 5 * time.Second}
		conn, _, err := d.Dial("ws://"+n.HTTP.Addr()+"/api/graphql", http.Header{"Origin": {base}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := &wsClient{t: t, conn: conn}
		c.init(nil)
		c.subscribe("q", "subscribe", `{ viewer { kind role } }`)
		if m := c.expect("next"); !strings.Contains(string(m.Payload), `{"kind":"user","role":"OPERATOR"}`) {
			t.Errorf("next = %s", m.Payload)
		}
	})
}
