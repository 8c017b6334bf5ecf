package provision_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/provision"
	"github.com/tether-iot/tether/internal/registry"
	"github.com/tether-iot/tether/internal/store/sqlite"
	"github.com/tether-iot/tether/internal/testkit"
)

var _ provision.Store = (*sqlite.DB)(nil)

const tenant = "acme"

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// profiles gives the service the store's profiles, as the profile
// service does.
type profiles struct{ db *sqlite.DB }

func (p profiles) Get(ctx context.Context, tenant, id string) (*tether.Profile, error) {
	return p.db.Profile(ctx, tenant, id)
}

type fixture struct {
	svc   *provision.Service
	db    *sqlite.DB
	clock *testkit.Clock
}

// newService returns a provisioning service over a new store holding
// tenants acme and other, and profiles sensor and gateway of acme.
func newService(t testing.TB) fixture {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, tn := range []string{tenant, "other"} {
		if _, err := db.EnsureTenant(ctx, tether.Tenant{ID: tn, Name: tn}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"sensor", "gateway"} {
		if err := db.CreateProfile(ctx, &tether.Profile{TenantID: tenant, ID: p, Name: p}); err != nil {
			t.Fatal(err)
		}
	}
	c := testkit.NewClock(t0)
	return fixture{svc: provision.New(db, profiles{db}, provision.Options{Now: c.Now}), db: db, clock: c}
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (err %v), want %q", got, err, code)
	}
}

// wantToken checks that token authenticates device id, as the registry
// checks device tokens.
func wantToken(t *testing.T, db *sqlite.DB, id, token string) {
	t.Helper()
	reg := registry.New(db, nopNotifier{}, registry.Options{Logger: slog.New(slog.DiscardHandler)})
	d, err := reg.AuthenticateDevice(context.Background(), id, token)
	if err != nil {
		t.Fatalf("token of %s does not authenticate: %v", id, err)
	}
	if d.ID != id {
		t.Fatalf("token authenticates %s, want %s", d.ID, id)
	}
}

type nopNotifier struct{}

func (nopNotifier) PublishLifecycle(tenant, device, event string) error { return nil }

func fp(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", h)
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	rows := []tether.DeviceImport{
		{ID: "s-1", Name: "Sensor 1", Profile: "sensor", Labels: map[string]string{"site": "north", "floor": "2"}},
		{ID: "s-2", Profile: "sensor", Fingerprint: fp("s-2")},
		{ID: "gw-1", Name: "Gateway", Profile: "gateway", Labels: map[string]string{"site": "south"}},
		{ID: "plain"},
	}
	created, err := f.svc.Import(ctx, tenant, rows)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("returns each device with its token in row order", func(t *testing.T) {
		if len(created) != len(rows) {
			t.Fatalf("%d created, want %d", len(created), len(rows))
		}
		for i, c := range created {
			if c.Row != i+1 || c.ID != rows[i].ID || !strings.HasPrefix(c.Token, c.ID+".") {
				t.Errorf("created[%d] = %+v", i, c)
			}
			wantToken(t, f.db, c.ID, c.Token)
		}
	})
	t.Run("stores name, labels and profile", func(t *testing.T) {
		d, err := f.db.Device(ctx, tenant, "s-1")
		if err != nil {
			t.Fatal(err)
		}
		if d.Name != "Sensor 1" || d.ProfileID != "sensor" || !reflect.DeepEqual(d.Labels, rows[0].Labels) ||
			d.Metadata == nil || !d.CreatedAt.Equal(t0) {
			t.Errorf("device = %+v", d)
		}
		d, err = f.db.Device(ctx, tenant, "plain")
		if err != nil {
			t.Fatal(err)
		}
		if d.ProfileID != "" || len(d.Labels) != 0 {
			t.Errorf("device without profile or labels = %+v", d)
		}
	})
	t.Run("indexes the labels for selectors", func(t *testing.T) {
		ds, err := f.db.Devices(ctx, tether.DeviceFilter{TenantID: tenant, Labels: map[string]string{"site": "north"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].ID != "s-1" {
			t.Errorf("site=north selects %v", ds)
		}
	})
	t.Run("registers the certificate fingerprint for the device", func(t *testing.T) {
		c, err := f.db.Certificate(ctx, fp("s-2"))
		if err != nil {
			t.Fatal(err)
		}
		if c.DeviceID != "s-2" || c.TenantID != tenant {
			t.Errorf("certificate = %+v", c)
		}
	})
}

func TestImportWithOneBadRowImportsNothing(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	var rows []tether.DeviceImport
	for i := range 5 {
		rows = append(rows, tether.DeviceImport{ID: fmt.Sprintf("dev-%d", i+1), Labels: map[string]string{"k": "v"}})
	}
	rows[2].ID = "dev 3" // a space: not a valid ID
	created, err := f.svc.Import(ctx, tenant, rows)
	if created != nil {
		t.Errorf("created %v", created)
	}
	wantCode(t, err, tether.EINVALID)
	var ie *provision.ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T %v is not an *ImportError", err, err)
	}
	if len(ie.Rows) != 1 || ie.Rows[0].Row != 3 || ie.Rows[0].ID != "dev 3" || !strings.Contains(ie.Rows[0].Error, "must be 1 to 64") {
		t.Errorf("rows = %+v", ie.Rows)
	}
	if msg := tether.ErrorMessage(err); !strings.HasPrefix(msg, `row 3 (id "dev 3"): `) || !strings.HasSuffix(msg, "nothing was imported") {
		t.Errorf("message %q does not name row 3", msg)
	}
	ds, err := f.db.Devices(ctx, tether.DeviceFilter{TenantID: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 0 {
		t.Errorf("%d devices created", len(ds))
	}
}

func TestImportNamesEveryBadRow(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	for _, id := range []string{"taken", "taken-2"} {
		if err := f.db.CreateDevice(ctx, &tether.Device{TenantID: "other", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.svc.Import(ctx, tenant, []tether.DeviceImport{{ID: "has-cert", Fingerprint: fp("registered")}}); err != nil {
		t.Fatal(err)
	}
	manyLabels := map[string]string{}
	for i := range 65 {
		manyLabels[fmt.Sprintf("l%d", i)] = "v"
	}
	cases := []struct {
		name string
		row  tether.DeviceImport
		want string
	}{
		{"an empty id", tether.DeviceImport{}, `id "" must be 1 to 64`},
		{"an id with a dot", tether.DeviceImport{ID: "a.b"}, "must be 1 to 64"},
		{"an id in an earlier row", tether.DeviceImport{ID: "ok-1"}, `id "ok-1" is also in row 1`},
		{"an id that exists, in another tenant too", tether.DeviceImport{ID: "taken"}, `device "taken" already exists`},
		{"a name over 256 bytes", tether.DeviceImport{ID: "n", Name: strings.Repeat("x", 257)}, "name is 257 bytes; at most 256"},
		{"more than 64 labels", tether.DeviceImport{ID: "l1", Labels: manyLabels}, "65 labels; at most 64"},
		{"a bad label key", tether.DeviceImport{ID: "l2", Labels: map[string]string{"a b": "v"}}, `label key "a b"`},
		{"a label value over 256 bytes", tether.DeviceImport{ID: "l3", Labels: map[string]string{"k": strings.Repeat("v", 257)}}, `label "k" is 257 bytes`},
		{"a profile that does not exist", tether.DeviceImport{ID: "p1", Profile: "nope"}, `profile "nope" does not exist`},
		{"a profile id that cannot be one", tether.DeviceImport{ID: "p2", Profile: "a/b"}, `profile "a/b" does not exist`},
		{"a fingerprint not in lowercase hex", tether.DeviceImport{ID: "f1", Fingerprint: strings.ToUpper(fp("x"))}, "64 lowercase hex digits"},
		{"a short fingerprint", tether.DeviceImport{ID: "f2", Fingerprint: "abcd"}, "64 lowercase hex digits"},
		{"a fingerprint in an earlier row", tether.DeviceImport{ID: "f3", Fingerprint: fp("ok-1")}, "certificate_fingerprint is also in row 1"},
		{"a fingerprint registered already", tether.DeviceImport{ID: "f4", Fingerprint: fp("registered")}, "is registered already"},
		{"two problems in one row", tether.DeviceImport{ID: "taken-2", Profile: "nope"}, `device "taken-2" already exists; profile "nope" does not exist`},
	}
	rows := []tether.DeviceImport{{ID: "ok-1", Fingerprint: fp("ok-1"), Profile: "sensor"}}
	for _, c := range cases {
		rows = append(rows, c.row)
	}
	_, err := f.svc.Import(ctx, tenant, rows)
	var ie *provision.ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T %v is not an *ImportError", err, err)
	}
	got := map[int]tether.RowError{}
	for _, r := range ie.Rows {
		got[r.Row] = r
	}
	for i, c := range cases {
		t.Run(c.name+" is a bad row", func(t *testing.T) {
			r, ok := got[i+2]
			if !ok {
				t.Fatalf("row %d is not reported", i+2)
			}
			if r.ID != c.row.ID || !strings.Contains(r.Error, c.want) {
				t.Errorf("row %d = %+v; want id %q and an error containing %q", i+2, r, c.row.ID, c.want)
			}
		})
	}
	t.Run("the good row is not reported, and the rows are in order", func(t *testing.T) {
		if _, ok := got[1]; ok {
			t.Errorf("row 1 reported: %+v", got[1])
		}
		if len(ie.Rows) != len(cases) || !slices.IsSortedFunc(ie.Rows, func(a, b tether.RowError) int { return a.Row - b.Row }) {
			t.Errorf("rows = %+v", ie.Rows)
		}
		if msg := ie.Error(); !strings.Contains(msg, fmt.Sprintf("and %d more bad rows", len(cases)-1)) {
			t.Errorf("Error() = %q", msg)
		}
	})
	t.Run("nothing was created", func(t *testing.T) {
		_, err := f.db.Device(ctx, tenant, "ok-1")
		wantCode(t, err, tether.ENOTFOUND)
		_, err = f.db.Certificate(ctx, fp("ok-1"))
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("the store's checks alone also name the rows", func(t *testing.T) {
		_, err := f.svc.Import(ctx, tenant, []tether.DeviceImport{{ID: "fine"}, {ID: "taken"}, {ID: "fine-2", Profile: "nope"}})
		if !errors.As(err, &ie) {
			t.Fatalf("error %T %v is not an *ImportError", err, err)
		}
		if len(ie.Rows) != 2 || ie.Rows[0].Row != 2 || ie.Rows[1].Row != 3 {
			t.Errorf("rows = %+v", ie.Rows)
		}
		_, err = f.db.Device(ctx, tenant, "fine")
		wantCode(t, err, tether.ENOTFOUND)
	})
	t.Run("an empty import is invalid", func(t *testing.T) {
		_, err := f.svc.Import(ctx, tenant, nil)
		wantCode(t, err, tether.EINVALID)
	})
}

// importRows returns n import rows, each with two labels and a profile,
// every tenth with a certificate fingerprint.
func importRows(n int) []tether.DeviceImport {
	rows := make([]tether.DeviceImport, n)
	for i := range rows {
		rows[i] = tether.DeviceImport{
			ID: fmt.Sprintf("bulk-%05d", i), Name: fmt.Sprintf("Bulk %d", i), Profile: "sensor",
			Labels: map[string]string{"site": fmt.Sprintf("site-%d", i%10), "batch": "b1"},
		}
		if i%10 == 0 {
			rows[i].Fingerprint = fp(rows[i].ID)
		}
	}
	return rows
}

func TestImportTenThousandDevices(t *testing.T) {
	ctx := context.Background()
	f := newService(t)
	rows := importRows(10_000)
	start := time.Now()
	created, err := f.svc.Import(ctx, tenant, rows)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %d devices in %v", len(created), took)
	if took > 30*time.Second {
		t.Errorf("10,000 devices took %v", took)
	}
	if len(created) != len(rows) {
		t.Fatalf("%d created", len(created))
	}
	ds, err := f.db.Devices(ctx, tether.DeviceFilter{TenantID: tenant, Labels: map[string]string{"site": "site-3"}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1000 {
		t.Errorf("site-3 selects %d devices, want 1000", len(ds))
	}
	wantToken(t, f.db, created[9999].ID, created[9999].Token)
	if c, err := f.db.Certificate(ctx, fp("bulk-09990")); err != nil || c.DeviceID != "bulk-09990" {
		t.Errorf("certificate of bulk-09990: %+v, %v", c, err)
	}

	t.Run("a second import of the same file names every row and adds nothing", func(t *testing.T) {
		_, err := f.svc.Import(ctx, tenant, rows)
		var ie *provision.ImportError
		if !errors.As(err, &ie) || len(ie.Rows) != len(rows) {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(ie.Rows[10].Error, "already exists") || !strings.Contains(ie.Rows[0].Error, "registered already") {
			t.Errorf("rows 1 and 11: %+v %+v", ie.Rows[0], ie.Rows[10])
		}
	})
}

func BenchmarkImport(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				f := newService(b)
				rows := importRows(n)
				b.StartTimer()
				if _, err := f.svc.Import(context.Background(), tenant, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "devices/s")
		})
	}
}
