package user

import "testing"

// FuzzParseHash feeds ParseHash arbitrary strings: it must not panic,
// and whatever it accepts must be the one canonical string of what it
// read, so that a stored hash has a single form.
func FuzzParseHash(f *testing.F) {
	for _, s := range []string{
		HashPassword("correct horse battery", Params{Memory: 64, Time: 1, Threads: 1}),
		"$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2id$v=19$m=065536,t=1,p=2$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U",
		"$argon2i$v=19$m=65536,t=1,p=2$c2FsdA$a2V5",
		"$argon2id$v=19$m=4294967296,t=1,p=2$$",
		"",
		"$$$$$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := ParseHash(s)
		if err != nil {
			return
		}
		if again := formatHash(p, salt, key); again != s {
			t.Errorf("ParseHash accepted %q, which formats as %q", s, again)
		}
	})
}
