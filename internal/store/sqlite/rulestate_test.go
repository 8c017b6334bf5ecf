package sqlite_test

import (
	"context"
	"reflect"
	"testing"
)

func TestRuleStates(t *testing.T) {
	ctx := context.Background()
	db := newDB(t)
	if got, err := db.LoadStates(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	steps := []struct {
		name string
		save map[string][]byte
		want map[string][]byte
	}{
		{"states are stored by key", map[string][]byte{"t/a/1": []byte("one"), "t/b/2": []byte("two")},
			map[string][]byte{"t/a/1": []byte("one"), "t/b/2": []byte("two")}},
		{"a new state replaces the old one and a nil state deletes its key", map[string][]byte{"t/a/1": []byte("uno"), "t/b/2": nil},
			map[string][]byte{"t/a/1": []byte("uno")}},
		{"deleting a key that is not there is no error", map[string][]byte{"t/c/1": nil},
			map[string][]byte{"t/a/1": []byte("uno")}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := db.SaveStates(ctx, s.save); err != nil {
				t.Fatal(err)
			}
			got, err := db.LoadStates(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, s.want) {
				t.Errorf("got %q, want %q", got, s.want)
			}
		})
	}
}
