package graphql_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/introspection"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/graphql"
)

// sameJSON reports whether two JSON documents are equal as values.
func sameJSON(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func TestQueriesReadTheServices(t *testing.T) {
	s := newServer(t, nil)
	cases := []struct {
		name, query, want string
		vars              map[string]any
	}{
		{name: "the viewer is the caller", query: `{ viewer { id kind name role tenantId } }`,
			want: `{"viewer":{"id":"kv","kind":"api_key","name":"API key kv","role":"VIEWER","tenantId":"default"}}`},
		{name: "devices come a page at a time in ID order with the next page's cursor",
			query: `{ devices(first: 2) { nextCursor devices { id name } } }`,
			want:  `{"devices":{"nextCursor":"d2","devices":[{"id":"d1","name":"Device d1"},{"id":"d2","name":"Device d2"}]}}`},
		{name: "the next page starts after the cursor and is the last",
			query: `{ devices(first: 2, after: "d2") { nextCursor devices { id } } }`,
			want:  `{"devices":{"nextCursor":null,"devices":[{"id":"d3"}]}}`},
		{name: "a label selector selects devices", query: `query($l: [LabelInput!]) { devices(labels: $l) { devices { id } } }`,
			vars: map[string]any{"l": []map[string]string{{"key": "site", "value": "hall"}}},
			want: `{"devices":{"devices":[{"id":"d3"}]}}`},
		{name: "a device that does not exist is null", query: `{ device(id: "nope") { id } }`, want: `{"device":null}`},
		{name: "labels come sorted by key", query: `{ device(id: "d1") { labels { key value } } }`,
			want: `{"device":{"labels":[{"key":"floor","value":"1"},{"key":"site","value":"lab"}]}}`},
		{name: "latest values are those of the keys asked for",
			query: `{ device(id: "d1") { latest(keys: ["temp"]) { key ts value } all: latest { key } } }`,
			want:  `{"device":{"latest":[{"key":"temp","ts":"2024-05-01T12:00:00Z","value":21.5}],"all":[{"key":"hum"},{"key":"temp"}]}}`},
		{name: "presence is an enum status with its reason and transport",
			query: `{ a: device(id: "d1") { presence { status reason transport } } b: device(id: "d2") { presence { status reason transport } } }`,
			want:  `{"a":{"presence":{"status":"ONLINE","reason":"connected","transport":"mqtt"}},"b":{"presence":{"status":"OFFLINE","reason":"never_connected","transport":""}}}`},
		{name: "a device's profile shows its schema and commands in name order",
			query: `{ device(id: "d1") { profileId profile { id reportInterval telemetry { key type unit min max maxRate } commands { name roles confirm params } } } }`,
			want: `{"device":{"profileId":"thermo","profile":{"id":"thermo","reportInterval":"30s",
				"telemetry":[{"key":"hum","type":"number","unit":"","min":null,"max":null,"maxRate":null},{"key":"temp","type":"number","unit":"°C","min":-40,"max":85,"maxRate":null}],
				"commands":[{"name":"reboot","roles":["operator"],"confirm":false,"params":null},{"name":"set_mode","roles":[],"confirm":true,"params":{"type":"object"}}]}}}`},
		{name: "a device without a profile has none", query: `{ device(id: "d2") { profileId profile { id } } }`,
			want: `{"device":{"profileId":null,"profile":null}}`},
		{name: "a device's alerts are its open ones unless a status is asked for",
			query: `{ device(id: "d1") { alerts { id status } cleared: alerts(status: CLEARED) { id } every: alerts(open: false) { id } } }`,
			want:  `{"device":{"alerts":[{"id":"a2","status":"ACTIVE"}],"cleared":[{"id":"a1"}],"every":[{"id":"a2"},{"id":"a1"}]}}`},
		{name: "open alerts of the tenant come with their device, null once it is deleted",
			query: `{ alerts(open: true) { nextCursor alerts { id device { id } } } }`,
			want:  `{"alerts":{"nextCursor":null,"alerts":[{"id":"a2","device":{"id":"d1"}},{"id":"a0","device":null}]}}`},
		{name: "a full page of alerts has a cursor", query: `{ alerts(first: 1) { nextCursor alerts { id } } }`,
			want: `{"alerts":{"nextCursor":"a2","alerts":[{"id":"a2"}]}}`},
		{name: "rules show their actions, never a webhook's secret",
			query: `{ rules { id enabled status error actions { type url alertType severity minDuration maxAttempts } } rule(id: "hot") { name } none: rule(id: "x") { name } }`,
			want: `{"rules":[{"id":"hot","enabled":true,"status":"ok","error":"","actions":[
				{"type":"webhook","url":"https://hooks.example/x","alertType":"","severity":"","minDuration":"0s","maxAttempts":0},
				{"type":"alert","url":"","alertType":"hot","severity":"warning","minDuration":"1m0s","maxAttempts":0}]}],
				"rule":{"name":"Hot"},"none":null}`},
		{name: "a device's commands come with their results and history",
			query: `{ device(id: "d1") { commands { id seq status result timeout source history { status } } command(id: "c1") { name } missing: command(id: "zz") { name } } }`,
			want: `{"device":{"commands":[{"id":"c1","seq":1,"status":"succeeded","result":{"ok":true},"timeout":"30s","source":"api:k",
				"history":[{"status":"queued"},{"status":"succeeded"}]}],"command":{"name":"reboot"},"missing":null}}`},
		{name: "a shadow never written is empty at version 0",
			query: `{ device(id: "d2") { shadow { deviceId name version state { desired reported delta } } shadowNames } }`,
			want:  `{"device":{"shadow":{"deviceId":"d2","name":"","version":0,"state":{"desired":{},"reported":{},"delta":null}},"shadowNames":[]}}`},
		{name: "profiles list", query: `{ profiles { id } profile(id: "thermo") { name } }`,
			want: `{"profiles":[{"id":"thermo"}],"profile":{"name":"Thermostat"}}`},
		{name: "the schema can be introspected", query: `{ __schema { queryType { name } subscriptionType { name } } }`,
			want: `{"__schema":{"queryType":{"name":"Query"},"subscriptionType":{"name":"Subscription"}}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, res, raw := s.post(t, "viewer-key", c.query, c.vars)
			if status != http.StatusOK || len(res.Errors) > 0 {
				t.Fatalf("%d %s", status, raw)
			}
			if !sameJSON(t, res.Data, c.want) {
				t.Errorf("data = %s\nwant   %s", res.Data, c.want)
			}
			if bytes.Contains(raw, []byte("s3cret")) {
				t.Errorf("a webhook secret is in %s", raw)
			}
		})
	}
}

func TestTelemetryArgumentsBecomeTheStoresQuery(t *testing.T) {
	from, to := "2024-05-01T10:00:00Z", "2024-05-01T12:00:00Z"
	cases := []struct {
		name, args string
		want       tether.TelemetryQuery // From, To zero: the last hour before now
		wantErr    string
	}{
		{name: "no arguments are the raw points of every key in the last hour", args: ``,
			want: tether.TelemetryQuery{Limit: 1000}},
		{name: "agg alone buckets by a minute", args: `(agg: MAX, from: "` + from + `", to: "` + to + `")`,
			want: tether.TelemetryQuery{From: t0.Add(-2 * time.Hour), To: t0, Agg: "max", Bucket: time.Minute, Limit: 1000}},
		{name: "bucket alone averages", args: `(bucket: "15m", keys: ["temp"], limit: 5, from: "` + from + `", to: "` + to + `")`,
			want: tether.TelemetryQuery{From: t0.Add(-2 * time.Hour), To: t0, Keys: []string{"temp"}, Agg: "avg", Bucket: 15 * time.Minute, Limit: 5}},
		{name: "from after to is invalid", args: `(from: "` + to + `", to: "` + from + `")`, wantErr: "must be before"},
		{name: "a bucket under a second is invalid", args: `(bucket: "500ms")`, wantErr: "at least 1s"},
		// One key: 122 days of every key would cost too much to reach the resolver.
		{name: "over 10000 buckets is invalid", args: `(bucket: "1s", keys: ["temp"], from: "2024-01-01T00:00:00Z", to: "` + to + `")`, wantErr: "at most 10000"},
		{name: "a limit of 0 is invalid", args: `(limit: 0)`, wantErr: "from 1 to 10000"},
		{name: "over 100 keys is invalid", args: `(limit: 1, keys: [` + strings.Repeat(`"k",`, 101) + `])`, wantErr: "at most 100"},
		{name: "a bucket that is no duration is invalid", args: `(bucket: "soon")`, wantErr: `duration "soon"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, nil)
			status, res, raw := s.post(t, "viewer-key", `{ device(id: "d1") { telemetry`+c.args+` { key samples { ts value } } } }`, nil)
			if c.wantErr != "" {
				if len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, c.wantErr) || len(s.queries) != 0 {
					t.Errorf("%d %s", status, raw)
				}
				return
			}
			if status != http.StatusOK || len(res.Errors) > 0 || len(s.queries) != 1 {
				t.Fatalf("%d %s", status, raw)
			}
			if !sameJSON(t, res.Data, `{"device":{"telemetry":[{"key":"temp","samples":[{"ts":"2024-05-01T12:00:00Z","value":21},{"ts":"2024-05-01T12:01:00Z","value":22}]}]}}`) {
				t.Errorf("data = %s", res.Data)
			}
			q := s.queries[0]
			if q.TenantID != tether.DefaultTenantID || q.DeviceID != "d1" {
				t.Errorf("query of %s/%s", q.TenantID, q.DeviceID)
			}
			if c.want.From.IsZero() {
				if q.To.Sub(q.From) != time.Hour || time.Since(q.To) > time.Minute {
					t.Errorf("from %s to %s is not the last hour", q.From, q.To)
				}
			} else if !q.From.Equal(c.want.From) || !q.To.Equal(c.want.To) {
				t.Errorf("from %s to %s", q.From, q.To)
			}
			q.TenantID, q.DeviceID, q.From, q.To = "", "", c.want.From, c.want.To
			if !reflect.DeepEqual(q, c.want) {
				t.Errorf("query = %+v\nwant    %+v", q, c.want)
			}
		})
	}
}

// mutations are the mutations with the least role the REST API's route
// for the same change needs.
var mutations = []struct {
	name, role, query string
}{
	{"createDevice", tether.RoleAdmin, `mutation { createDevice(input: {id: "d9"}) { token } }`},
	{"updateDevice", tether.RoleAdmin, `mutation { updateDevice(id: "d2", input: {name: "x"}) { name } }`},
	{"deleteDevice", tether.RoleAdmin, `mutation { deleteDevice(id: "d2") }`},
	{"rotateDeviceToken", tether.RoleAdmin, `mutation { rotateDeviceToken(id: "d2") { token } }`},
	{"setRuleEnabled", tether.RoleAdmin, `mutation { setRuleEnabled(id: "hot", enabled: false) { enabled } }`},
	{"updateShadowDesired", tether.RoleOperator, `mutation { updateShadowDesired(deviceId: "d2", desired: {on: true}) { version } }`},
	{"sendCommand", tether.RoleOperator, `mutation { sendCommand(deviceId: "d2", input: {name: "reboot"}) { id } }`},
	{"confirmCommand", tether.RoleOperator, `mutation { confirmCommand(deviceId: "d2", id: "c1") { id } }`},
	{"acknowledgeAlert", tether.RoleOperator, `mutation { acknowledgeAlert(id: "a2") { status } }`},
	{"clearAlert", tether.RoleOperator, `mutation { clearAlert(id: "a2") { status } }`},
}

func TestMutationsNeedTheRESTRoles(t *testing.T) {
	callers := map[string]string{tether.RoleViewer: "viewer-key", tether.RoleOperator: "operator-key", tether.RoleAdmin: "admin-key"}
	for _, m := range mutations {
		for _, role := range []string{tether.RoleViewer, tether.RoleOperator, tether.RoleAdmin} {
			allowed := tether.RoleAtLeast(role, m.role)
			t.Run(fmt.Sprintf("%s by %s is allowed: %v", m.name, role, allowed), func(t *testing.T) {
				s := newServer(t, nil)
				status, res, raw := s.post(t, callers[role], m.query, nil)
				if status != http.StatusOK {
					t.Fatalf("%d %s", status, raw)
				}
				if forbidden := res.Code() == tether.EFORBIDDEN; forbidden == allowed {
					t.Errorf("%s", raw)
				}
				if !allowed && (string(res.Data) != "null" || len(s.sent) > 0 || s.devices["d2"].Name != "Device d2" || len(s.shadows) > 0) {
					t.Errorf("a forbidden mutation changed something: %s", raw)
				}
			})
		}
	}
}

func TestEveryRootFieldNamesItsRole(t *testing.T) {
	schema := graphql.NewExecutableSchema(graphql.Config{}).Schema()
	roles := map[string]string{}
	for _, m := range mutations {
		roles[m.name] = strings.ToUpper(m.role)
	}
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		for _, f := range root.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			t.Run(root.Name+"."+f.Name+" has @auth with its role", func(t *testing.T) {
				d := f.Directives.ForName("auth")
				if d == nil {
					t.Fatal("no @auth")
				}
				want := "VIEWER"
				if root == schema.Mutation {
					if want = roles[f.Name]; want == "" {
						t.Fatal("a mutation this test does not know: add it to mutations")
					}
				}
				if got := d.Arguments.ForName("role").Value.Raw; got != want {
					t.Errorf("role %s, want %s", got, want)
				}
			})
		}
	}
}

func TestMutationsChangeWhatTheyName(t *testing.T) {
	t.Run("createDevice returns the device with its token", func(t *testing.T) {
		s := newServer(t, nil)
		_, res, raw := s.post(t, "admin-key", `mutation { createDevice(input: {id: "d9", name: "New", labels: [{key: "a", value: "b"}], metadata: {floor: 2}}) {
			token device { id name labels { key value } metadata } } }`, nil)
		if !sameJSON(t, res.Data, `{"createDevice":{"token":"d9.token","device":{"id":"d9","name":"New","labels":[{"key":"a","value":"b"}],"metadata":{"floor":2}}}}`) {
			t.Errorf("%s", raw)
		}
	})
	t.Run("metadata that is not an object and labels given twice are invalid", func(t *testing.T) {
		s := newServer(t, nil)
		for _, q := range []string{
			`mutation { createDevice(input: {id: "d9", metadata: [1, 2]}) { token } }`,
			`mutation { updateDevice(id: "d1", input: {labels: [{key: "a", value: "b"}, {key: "a", value: "c"}]}) { id } }`,
		} {
			if _, res, raw := s.post(t, "admin-key", q, nil); res.Code() != tether.EINVALID {
				t.Errorf("%s: %s", q, raw)
			}
		}
	})
	t.Run("empty labels remove them all; absent ones are kept", func(t *testing.T) {
		s := newServer(t, nil)
		s.post(t, "admin-key", `mutation { updateDevice(id: "d1", input: {name: "Renamed"}) { id } }`, nil)
		if d := s.devices["d1"]; d.Name != "Renamed" || len(d.Labels) != 2 {
			t.Errorf("device = %+v", d)
		}
		s.post(t, "admin-key", `mutation { updateDevice(id: "d1", input: {labels: []}) { id } }`, nil)
		if d := s.devices["d1"]; d.Labels == nil || len(d.Labels) != 0 {
			t.Errorf("labels = %#v", d.Labels)
		}
	})
	t.Run("a shadow's desired state is merged, and a stale version is a conflict naming the current one", func(t *testing.T) {
		s := newServer(t, nil)
		const m = `mutation($d: JSON!, $v: Int64) { updateShadowDesired(deviceId: "d1", desired: $d, version: $v) { version state { desired } } }`
		_, res, raw := s.post(t, "operator-key", m, map[string]any{"d": map[string]any{"target": 21, "mode": "eco"}})
		if !sameJSON(t, res.Data, `{"updateShadowDesired":{"version":1,"state":{"desired":{"target":21,"mode":"eco"}}}}`) {
			t.Errorf("%s", raw)
		}
		// Numbers reach the service as float64, as from encoding/json.
		if v := s.shadows["d1/"].State.Desired["target"]; v != 21.0 {
			t.Errorf("target = %#v", v)
		}
		_, res, raw = s.post(t, "operator-key", m, map[string]any{"d": map[string]any{"mode": nil}, "v": 5})
		if res.Code() != tether.ECONFLICT || res.Errors[0].Extensions["currentVersion"] != 1.0 {
			t.Errorf("%s", raw)
		}
		_, res, raw = s.post(t, "operator-key", m, map[string]any{"d": "warm"})
		if res.Code() != tether.EINVALID {
			t.Errorf("desired not an object: %s", raw)
		}
	})
	t.Run("a command is sent as the caller, and with wait answered once done", func(t *testing.T) {
		s := newServer(t, nil)
		_, res, raw := s.post(t, "operator-key", `mutation { sendCommand(deviceId: "d2", input: {name: "set_mode", params: {mode: "eco"}, timeout: "5s"}, wait: "1s") { name status params } }`, nil)
		if !sameJSON(t, res.Data, `{"sendCommand":{"name":"set_mode","status":"succeeded","params":{"mode":"eco"}}}`) {
			t.Errorf("%s", raw)
		}
		if r := s.sent[0]; r.Source != "api:ko" || r.Role != tether.RoleOperator || string(r.Params) != `{"mode":"eco"}` || r.Timeout != 5*time.Second {
			t.Errorf("request = %+v", r)
		}
	})
	t.Run("a refused command names the command stored as rejected", func(t *testing.T) {
		s := newServer(t, nil)
		_, res, raw := s.post(t, "operator-key", `mutation { sendCommand(deviceId: "d2", input: {name: "self_destruct"}) { id } }`, nil)
		cmd, _ := res.Errors[0].Extensions["command"].(map[string]any)
		if res.Code() != tether.EINVALID || cmd["status"] != tether.CommandRejected || cmd["reason"] != "not in the profile" {
			t.Errorf("%s", raw)
		}
	})
	t.Run("a wait over a minute is invalid", func(t *testing.T) {
		s := newServer(t, nil)
		if _, res, raw := s.post(t, "operator-key", `mutation { sendCommand(deviceId: "d2", input: {name: "x"}, wait: "2m") { id } }`, nil); res.Code() != tether.EINVALID || len(s.sent) > 0 {
			t.Errorf("%s", raw)
		}
	})
	t.Run("acknowledging and clearing an alert record the caller", func(t *testing.T) {
		s := newServer(t, nil)
		_, res, raw := s.post(t, "operator-key", `mutation { acknowledgeAlert(id: "a2") { status acknowledgedBy } }`, nil)
		if !sameJSON(t, res.Data, `{"acknowledgeAlert":{"status":"ACKNOWLEDGED","acknowledgedBy":"api:ko"}}`) {
			t.Errorf("%s", raw)
		}
		_, res, raw = s.post(t, "admin-key", `mutation { clearAlert(id: "a2") { status clearedBy } }`, nil)
		if !sameJSON(t, res.Data, `{"clearAlert":{"status":"CLEARED","clearedBy":"api:ka"}}`) {
			t.Errorf("%s", raw)
		}
	})
	t.Run("a rule is disabled", func(t *testing.T) {
		s := newServer(t, nil)
		if _, res, raw := s.post(t, "admin-key", `mutation { setRuleEnabled(id: "hot", enabled: false) { enabled } }`, nil); !sameJSON(t, res.Data, `{"setRuleEnabled":{"enabled":false}}`) {
			t.Errorf("%s", raw)
		}
	})
	t.Run("deleting a device that does not exist is not found", func(t *testing.T) {
		s := newServer(t, nil)
		if _, res, raw := s.post(t, "admin-key", `mutation { deleteDevice(id: "nope") }`, nil); res.Code() != tether.ENOTFOUND {
			t.Errorf("%s", raw)
		}
	})
}

func TestHTTPAnswers(t *testing.T) {
	s := newServer(t, func(o *graphql.Options) { o.MaxBody = 4 << 10 })
	request := func(method, key, accept, body string, chunked bool) *http.Request {
		t.Helper()
		var rd *strings.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, s.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rd != nil {
			req, _ = http.NewRequest(method, s.url, rd)
			req.Header.Set("Content-Type", "application/json")
			if chunked {
				req.ContentLength = -1 // sent chunked, so only reading finds its size
			}
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		return req
	}
	query := `{"query": "{ viewer { role } }"}`
	big := `{"query": "{ viewer { role } }", "variables": {"pad": "` + strings.Repeat("x", 5<<10) + `"}}`
	cases := []struct {
		name       string
		req        *http.Request
		wantStatus int
		wantType   string
		wantBody   string
	}{
		{"a request without a key is 401 as a problem", request("POST", "", "", query, false), 401, "application/problem+json", `"code":"unauthorized"`},
		{"a wrong key is 401", request("POST", "wrong", "", query, false), 401, "application/problem+json", "the API key is wrong"},
		{"a caller whose role is none of the three is 403", request("POST", "no-role-key", "", query, false), 403, "application/problem+json", `"code":"forbidden"`},
		{"a body over the limit is 413", request("POST", "viewer-key", "", big, false), 413, "application/problem+json", `"code":"too_large"`},
		{"a chunked body over the limit is 413", request("POST", "viewer-key", "", big, true), 413, "application/problem+json", `"code":"too_large"`},
		{"PUT is 405", request("PUT", "viewer-key", "", query, false), 405, "application/problem+json", "GET or POST"},
		{"a POST that is not JSON is refused", func() *http.Request {
			r := request("POST", "viewer-key", "", query, false)
			r.Header.Set("Content-Type", "text/plain")
			return r
		}(), 400, "", ""},
		{"an upgrade to anything but a WebSocket is refused", func() *http.Request {
			r := request("POST", "viewer-key", "", query, false)
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "h2c")
			return r
		}(), 400, "application/problem+json", "only an upgrade to a WebSocket"},
		{"GET runs a query", func() *http.Request {
			r := request("GET", "viewer-key", "", "", false)
			r.URL.RawQuery = "query=%7Bviewer%7Brole%7D%7D"
			return r
		}(), 200, "application/json", `{"data":{"viewer":{"role":"VIEWER"}}}`},
		{"a browser gets GraphiQL without a key, reading a signed-in user's CSRF token", request("GET", "", "text/html,*/*", "", false), 200, "text/html", "X-CSRF-Token"},
		{"GET without a query or a key is 401", request("GET", "", "application/json", "", false), 401, "application/problem+json", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(c.req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			if resp.StatusCode != c.wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.wantType) || !strings.Contains(b.String(), c.wantBody) {
				t.Errorf("%d %s %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), b.String())
			}
			if c.wantStatus == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		})
	}
}

func TestATenantSeesOnlyItsOwn(t *testing.T) {
	s := newServer(t, nil)
	_, res, raw := s.post(t, "other-tenant", `{ devices { devices { id } } device(id: "d1") { id } }`, nil)
	if !sameJSON(t, res.Data, `{"devices":{"devices":[]},"device":null}`) {
		t.Errorf("%s", raw)
	}
}

func TestInternalErrorsAreLoggedNotShown(t *testing.T) {
	s := newServer(t, nil)
	s.failLatest = fmt.Errorf("read latest: disk on fire at /var/lib/secret")
	_, res, raw := s.post(t, "viewer-key", `{ device(id: "d1") { id latest { key } } }`, nil)
	if len(res.Errors) != 1 || res.Errors[0].Message != "internal error" || res.Code() != tether.EINTERNAL ||
		!reflect.DeepEqual(res.Errors[0].Path, []any{"device", "latest"}) || string(res.Data) != `{"device":null}` {
		t.Errorf("%s", raw)
	}
	if bytes.Contains(raw, []byte("disk on fire")) {
		t.Errorf("the internal error is shown: %s", raw)
	}
	if !strings.Contains(s.logs.String(), "disk on fire") || !strings.Contains(s.logs.String(), "device.latest") {
		t.Errorf("not logged: %s", s.logs)
	}
}

func TestAQueryReadsEachThingOnce(t *testing.T) {
	s := newServer(t, nil)
	q := `{
		alerts { alerts { device { id latest { key } presence { status } } } }
		device(id: "d1") { latest { key } presence { status } again: latest { value } }
	}`
	for i := int64(1); i <= 2; i++ {
		status, res, raw := s.post(t, "viewer-key", q, nil)
		if status != http.StatusOK || len(res.Errors) > 0 {
			t.Fatalf("%d %s", status, raw)
		}
		// Per query: the device once, its latest values once, its
		// presence once.
		if n := s.reads["d1"].Load(); n != 3*i {
			t.Errorf("query %d: %d reads of d1 in all, want %d", i, n, 3*i)
		}
	}
}

func TestOperationsAreBounded(t *testing.T) {
	s := newServer(t, nil)
	// fragments spread 2^13 leaves from a document of 14 fragments.
	var bomb strings.Builder
	bomb.WriteString("query { ...F0 }\n")
	for i := range 13 {
		fmt.Fprintf(&bomb, "fragment F%d on Query { ...F%d ...F%d }\n", i, i+1, i+1)
	}
	bomb.WriteString("fragment F13 on Query { viewer { id } }\n")
	cases := []struct {
		name, query string
		wantCode    string // "" accepted
	}{
		{"8 levels of fields are allowed",
			`{ alerts(first: 1) { alerts { device { alerts(first: 1) { device { alerts(first: 1) { device { id } } } } } } } }`, ""},
		{"9 levels are too deep",
			`{ alerts(first: 1) { alerts { device { alerts(first: 1) { device { alerts(first: 1) { device { alerts(first: 1) { id } } } } } } } } }`, graphql.CodeTooDeep},
		{"depth counts through fragments",
			`query { ...A } fragment A on Query { alerts(first: 1) { ...B } } fragment B on AlertPage { alerts { device { alerts(first: 1) { device { ... on Device { alerts(first: 1) { device { alerts(first: 1) { id } } } } } } } } }`, graphql.CodeTooDeep},
		{"GraphiQL's introspection query is allowed: a type's ofType chain is not depth", graphqlIntrospection, ""},
		// gqlparser's validation refuses this first; the depth limit would.
		{"nesting a type's fields in its fields' types is too deep",
			`{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }`, "GRAPHQL_VALIDATION_FAILED"},
		{"fragments spread into thousands of fields are too large", bomb.String(), graphql.CodeTooLarge},
		{"a hundred devices with their latest values, presence, shadow and alerts are within the cost limit",
			`{ devices(first: 100) { devices { id labels { key } latest { key value } presence { status } shadow { state { desired } } alerts(first: 5) { id } } } }`, ""},
		{"a thousand devices with their latest values cost too much",
			`{ devices(first: 1000) { devices { latest { key } presence { status } } } }`, graphql.CodeTooComplex},
		{"long series of every key of a device cost too much", `{ device(id: "d1") { telemetry(limit: 10000) { samples { value } } } }`, graphql.CodeTooComplex},
		{"long series of one key are within the limit", `{ device(id: "d1") { telemetry(keys: ["temp"], limit: 10000) { samples { value } } } }`, ""},
		{"a list's cost cannot overflow into a small number", `{ devices(first: 2147483647) { devices { alerts(first: 2147483647) { device { alerts(first: 2147483647) { id } } } } } }`, graphql.CodeTooComplex},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, res, raw := s.post(t, "viewer-key", c.query, nil)
			if c.wantCode == "" {
				if status != http.StatusOK || len(res.Errors) > 0 {
					t.Errorf("%d %.500s", status, raw)
				}
				return
			}
			if status != http.StatusUnprocessableEntity || res.Code() != c.wantCode || len(res.Data) > 0 && string(res.Data) != "null" {
				t.Errorf("%d %.500s", status, raw)
			}
		})
	}
}

// graphqlIntrospection is a full introspection query, as GraphiQL sends.
var graphqlIntrospection = introspection.Query

func TestErrorsOfGraphQLItselfKeepTheirMessage(t *testing.T) {
	s := newServer(t, nil)
	_, res, raw := s.post(t, "viewer-key", `{ device(id: "d1") { nope } }`, nil)
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, `Cannot query field "nope"`) {
		t.Errorf("%s", raw)
	}
}
