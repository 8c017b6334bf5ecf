package provision_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/provision"
)

func TestParseCSV(t *testing.T) {
	t.Run("reads the columns in any order, with labels and quoted cells", func(t *testing.T) {
		in := "\ufeffName , ID,labels,profile,certificate_fingerprint\n" +
			`"Pump, north",pump-1,site=north; floor = 2 ;,sensor,` + strings.Repeat("ab", 32) + "\n" +
			"\n" + // blank lines are skipped
			",pump-2,,,\n" +
			"\"Two\nlines\", pump-3 ,a=b=c,,\n"
		got, err := provision.ParseCSV(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		want := []tether.DeviceImport{
			{ID: "pump-1", Name: "Pump, north", Profile: "sensor", Labels: map[string]string{"site": "north", "floor": "2"}, Fingerprint: strings.Repeat("ab", 32)},
			{ID: "pump-2"},
			{ID: "pump-3", Name: "Two\nlines", Labels: map[string]string{"a": "b=c"}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got\n%+v\nwant\n%+v", got, want)
		}
	})
	t.Run("a header with the id column alone is enough", func(t *testing.T) {
		got, err := provision.ParseCSV(strings.NewReader("id\nx\ny\n"))
		if err != nil || len(got) != 2 || got[1].ID != "y" {
			t.Errorf("got %+v, %v", got, err)
		}
	})

	headerErrors := []struct{ name, in, want string }{
		{"an empty file", "", "the CSV file is empty"},
		{"an unknown column, named", "id,name,colour,size\n", `unknown column "colour", "size"; the columns are id, name, profile, labels, certificate_fingerprint`},
		{"no id column", "name,labels\nx,\n", "the id column is missing"},
		{"a column twice", "id,name,ID\n", `column "id" appears twice`},
	}
	for _, c := range headerErrors {
		t.Run("refuses "+c.name, func(t *testing.T) {
			_, err := provision.ParseCSV(strings.NewReader(c.in))
			wantCode(t, err, tether.EINVALID)
			if !strings.Contains(tether.ErrorMessage(err), c.want) {
				t.Errorf("message %q does not contain %q", tether.ErrorMessage(err), c.want)
			}
		})
	}

	t.Run("names every bad row, counting from the first after the header", func(t *testing.T) {
		in := "id,name,labels\n" +
			"ok-1,One,a=b\n" +
			"short,Two\n" +
			"ok-3,Three,\n" +
			"bad-4,Four,novalue\n" +
			"bad-5,Five,k=1;k=2\n" +
			"long,Six,a=b,extra\n" +
			"bad-7,Seven,=v\n"
		_, err := provision.ParseCSV(strings.NewReader(in))
		wantCode(t, err, tether.EINVALID)
		var ie *provision.ImportError
		if !errors.As(err, &ie) {
			t.Fatalf("error %T is not an *ImportError", err)
		}
		want := []tether.RowError{
			{Row: 2, ID: "short", Error: "line 3: wrong number of cells for the header's columns"},
			{Row: 4, ID: "bad-4", Error: `labels: "novalue" is not key=value (labels are written k=v;k=v)`},
			{Row: 5, ID: "bad-5", Error: `labels: key "k" appears twice`},
			{Row: 6, ID: "long", Error: "line 7: wrong number of cells for the header's columns"},
			{Row: 7, ID: "bad-7", Error: `labels: "=v" is not key=value (labels are written k=v;k=v)`},
		}
		if !reflect.DeepEqual(ie.Rows, want) {
			t.Errorf("rows =\n%+v\nwant\n%+v", ie.Rows, want)
		}
		if msg := tether.ErrorMessage(err); !strings.HasPrefix(msg, `row 2 (id "short"): line 3`) || !strings.Contains(msg, "and 4 more bad rows") {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("stops at a quoting error, naming its row and line", func(t *testing.T) {
		_, err := provision.ParseCSV(strings.NewReader("id,name\na,ok\nb,bad \"quote\nc,never read\n"))
		var ie *provision.ImportError
		if !errors.As(err, &ie) || len(ie.Rows) != 1 || ie.Rows[0].Row != 2 || !strings.Contains(ie.Rows[0].Error, "line 3") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("refuses more rows than one import takes", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("id\n")
		for range provision.MaxImportRows + 1 {
			b.WriteString("x\n")
		}
		_, err := provision.ParseCSV(strings.NewReader(b.String()))
		wantCode(t, err, tether.ETOOLARGE)
	})
}

func TestParseJSON(t *testing.T) {
	t.Run("reads an array of devices", func(t *testing.T) {
		got, err := provision.ParseJSON(strings.NewReader(`[
			{"id":"a","name":"A","labels":{"k":"v"},"profile":"p","certificate_fingerprint":"f"},
			{"id":"b"}
		]`))
		if err != nil {
			t.Fatal(err)
		}
		want := []tether.DeviceImport{{ID: "a", Name: "A", Labels: map[string]string{"k": "v"}, Profile: "p", Fingerprint: "f"}, {ID: "b"}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("names each row with an unknown field or a wrong type", func(t *testing.T) {
		_, err := provision.ParseJSON(strings.NewReader(`[{"id":"a"},{"id":"b","colour":"red"},{"id":"c","labels":{"n":1}},{"id":"d"},"e"]`))
		var ie *provision.ImportError
		if !errors.As(err, &ie) {
			t.Fatalf("err %v is not an *ImportError", err)
		}
		if len(ie.Rows) != 3 || ie.Rows[0].Row != 2 || !strings.Contains(ie.Rows[0].Error, `unknown field "colour"`) ||
			ie.Rows[1].Row != 3 || !strings.Contains(ie.Rows[1].Error, "labels") || ie.Rows[2].Row != 5 {
			t.Errorf("rows = %+v", ie.Rows)
		}
		wantCode(t, err, tether.EINVALID)
	})
	for _, c := range []struct{ name, in string }{
		{"an object", `{"id":"a"}`},
		{"nothing", ``},
		{"an unfinished array", `[{"id":"a"}`},
		{"text after the array", `[{"id":"a"}] x`},
	} {
		t.Run("refuses "+c.name, func(t *testing.T) {
			_, err := provision.ParseJSON(strings.NewReader(c.in))
			wantCode(t, err, tether.EINVALID)
		})
	}
	t.Run("names the row where the JSON breaks", func(t *testing.T) {
		_, err := provision.ParseJSON(strings.NewReader(`[{"id":"a"}, {"id": }]`))
		var ie *provision.ImportError
		if !errors.As(err, &ie) || len(ie.Rows) != 1 || ie.Rows[0].Row != 2 || !strings.Contains(ie.Rows[0].Error, "broken JSON") {
			t.Errorf("err = %v", err)
		}
	})
}

// FuzzParseCSV checks that any input parses without panicking into either
// rows or an error of the documented kinds: an *ImportError whose rows
// are in order and count from 1, or an EINVALID or ETOOLARGE error.
func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{
		"id,name,profile,labels,certificate_fingerprint\na,A,p,k=v;x=y,ff\n",
		"\ufeffID\nx\n",
		"id,labels\na,=\nb,k=v;k=w\n",
		"id,name\n\"a\nb\",\"c\"\"d\"\nx\n",
		"id,name\na,b,c\n\"unterminated\n",
		"id,id\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rows, err := provision.ParseCSV(strings.NewReader(string(in)))
		if err == nil {
			for _, r := range rows {
				if r.ID != strings.TrimSpace(r.ID) {
					t.Fatalf("id %q is not trimmed", r.ID)
				}
				for k := range r.Labels {
					if k == "" {
						t.Fatalf("empty label key from %q", in)
					}
				}
			}
			return
		}
		var ie *provision.ImportError
		if errors.As(err, &ie) {
			if len(ie.Rows) == 0 {
				t.Fatalf("an *ImportError without rows")
			}
			for i, r := range ie.Rows {
				if r.Row < 1 || (i > 0 && r.Row < ie.Rows[i-1].Row) || r.Error == "" {
					t.Fatalf("bad rows %+v", ie.Rows)
				}
			}
		}
		if code := tether.ErrorCode(err); code != tether.EINVALID && code != tether.ETOOLARGE {
			t.Fatalf("error %v has code %q", err, code)
		}
	})
}
