package config_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tether-iot/tether/internal/config"
)

// env returns a getenv that reads only vars, so no test depends on or
// changes the process environment.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

// writeFile writes a YAML configuration file in a fresh directory and
// returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// with returns the defaults changed by set.
func with(set func(*config.Config)) config.Config {
	c := config.Default()
	set(&c)
	return c
}

func TestLoadWithNothingSetGivesDefaults(t *testing.T) {
	c, err := config.Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c != config.Default() {
		t.Errorf("Load() = %+v, want Default() = %+v", c, config.Default())
	}
	if err := config.Default().Validate(); err != nil {
		t.Errorf("Default() is not valid: %v", err)
	}
}

func TestLoadPrecedence(t *testing.T) {
	tests := []struct {
		name string
		file string // content of the file named by --config, if any
		// fileFromEnv names the file by TETHER_CONFIG instead of --config.
		fileFromEnv bool
		env         map[string]string
		args        []string
		want        config.Config
	}{
		{
			name: "the file sets a value over its default",
			file: `mqtt_addr: ":1884"`,
			want: with(func(c *config.Config) { c.MQTTAddr = ":1884" }),
		},
		{
			name: "the environment overrides the file",
			file: `mqtt_addr: ":1884"`,
			env:  map[string]string{"TETHER_MQTT_ADDR": ":1885"},
			want: with(func(c *config.Config) { c.MQTTAddr = ":1885" }),
		},
		{
			name: "a flag overrides the environment and the file",
			file: `mqtt_addr: ":1884"`,
			env:  map[string]string{"TETHER_MQTT_ADDR": ":1885"},
			args: []string{"--mqtt-addr", ":1886"},
			want: with(func(c *config.Config) { c.MQTTAddr = ":1886" }),
		},
		{
			name: "a value set only in the file survives when the environment and flags set other keys",
			file: "mqtt_addr: \":1884\"\nhttp_addr: \":8081\"\n",
			env:  map[string]string{"TETHER_HTTP_ADDR": ":8082"},
			args: []string{"--log-level", "debug"},
			want: with(func(c *config.Config) { c.MQTTAddr, c.HTTPAddr, c.LogLevel = ":1884", ":8082", "debug" }),
		},
		{
			name:        "TETHER_CONFIG names the file when --config is not given",
			file:        `mqtt_addr: ":1884"`,
			fileFromEnv: true,
			want:        with(func(c *config.Config) { c.MQTTAddr = ":1884" }),
		},
		{
			name: "an empty environment variable counts as unset",
			file: `mqtt_addr: ":1884"`,
			env:  map[string]string{"TETHER_MQTT_ADDR": ""},
			want: with(func(c *config.Config) { c.MQTTAddr = ":1884" }),
		},
		{
			name: "the last of a repeated flag wins",
			args: []string{"--mqtt-addr", ":1", "--mqtt-addr=:2"},
			want: with(func(c *config.Config) { c.MQTTAddr = ":2" }),
		},
		{
			name: "a flag may be given with one dash",
			args: []string{"-writer-max-delay", "5ms"},
			want: with(func(c *config.Config) { c.WriterMaxDelay = 5 * time.Millisecond }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range tt.env {
				vars[k] = v
			}
			args := tt.args
			if tt.file != "" {
				path := writeFile(t, tt.file)
				if tt.fileFromEnv {
					vars["TETHER_CONFIG"] = path
				} else {
					args = append([]string{"--config", path}, args...)
				}
			}
			got, err := config.Load(args, env(vars), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got != tt.want {
				t.Errorf("Load =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// validStrings holds a valid, non-default value for every string setting;
// strings are not all alike (an address, a URL, a level), so unlike numbers
// and durations they cannot be derived from the type.
var validStrings = map[string]string{
	"data_dir":   "/var/lib/tether",
	"http_addr":  "127.0.0.1:8081",
	"mqtt_addr":  "127.0.0.1:8883",
	"nats_url":   "nats://nats.example:4222",
	"nats_addr":  "127.0.0.1:4222",
	"log_level":  "debug",
	"log_format": "json",

	"mqtt_ws_addr":  "127.0.0.1:9083",
	"mqtts_addr":    "127.0.0.1:9883",
	"mqtt_wss_addr": "127.0.0.1:9084",
	"https_addr":    "127.0.0.1:9443",
	"coap_addr":     "127.0.0.1:6683",
	"coaps_addr":    "127.0.0.1:6684",
	"tls_cert_file": "/etc/tether/server.pem",
	"tls_key_file":  "/etc/tether/server-key.pem",
}

// setting is one field of Config with a valid value other than its
// default, as text (for flags and the environment), as YAML, and as the
// value Load must produce.
type setting struct {
	key   string
	index int
	text  string
	yaml  string
	want  any
}

func settings(t *testing.T) []setting {
	t.Helper()
	def := reflect.ValueOf(config.Default())
	typ := def.Type()
	var out []setting
	for i := range typ.NumField() {
		key := typ.Field(i).Tag.Get("yaml")
		if key == "" {
			t.Fatalf("field %s has no yaml tag", typ.Field(i).Name)
		}
		s := setting{key: key, index: i}
		switch d := def.Field(i).Interface().(type) {
		case string:
			v, ok := validStrings[key]
			if !ok {
				t.Fatalf("add a valid example value for the new setting %s to validStrings", key)
			}
			s.text, s.yaml, s.want = v, strconv.Quote(v), v
		case int:
			v := 2 * d
			s.text, s.yaml, s.want = strconv.Itoa(v), strconv.Itoa(v), v
		case time.Duration:
			v := 2 * d
			s.text, s.yaml, s.want = v.String(), strconv.Quote(v.String()), v
		case bool:
			s.text, s.yaml, s.want = strconv.FormatBool(!d), strconv.FormatBool(!d), !d
		default:
			t.Fatalf("setting %s has type %T, which this test cannot pick a value for", key, d)
		}
		if reflect.DeepEqual(s.want, def.Field(i).Interface()) {
			t.Fatalf("example for %s equals its default %v, so it would prove nothing", key, s.want)
		}
		out = append(out, s)
	}
	return out
}

func TestEverySettingFollowsTheNamingRule(t *testing.T) {
	var usage bytes.Buffer
	if _, err := config.Load([]string{"-h"}, env(nil), &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load(-h): err = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings(t) {
		flagName, envName := config.FlagName(s.key), config.EnvName(s.key)
		sources := []struct {
			how  string
			args []string
			env  map[string]string
			file string
		}{
			// --name=value works for every kind; a bool flag takes no
			// separate value.
			{how: "--" + flagName, args: []string{"--" + flagName + "=" + s.text}},
			{how: envName, env: map[string]string{envName: s.text}},
			{how: "the YAML key " + s.key, file: s.key + ": " + s.yaml + "\n"},
		}
		for _, src := range sources {
			t.Run(s.key+" is set by "+src.how, func(t *testing.T) {
				args := src.args
				if src.file != "" {
					args = []string{"--config", writeFile(t, src.file)}
				}
				c, err := config.Load(args, env(src.env), io.Discard)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got := reflect.ValueOf(c).Field(s.index).Interface(); got != s.want {
					t.Errorf("%s = %v, want %v", s.key, got, s.want)
				}
			})
		}
		t.Run(s.key+" is listed in the usage with its flag and environment variable", func(t *testing.T) {
			for _, name := range []string{"-" + flagName + " ", envName} {
				if !strings.Contains(usage.String(), name) && !strings.Contains(usage.String(), strings.TrimSpace(name)+"\n") {
					t.Errorf("usage does not mention %q:\n%s", name, usage.String())
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		key, flag, env string
	}{
		{"mqtt_addr", "mqtt-addr", "TETHER_MQTT_ADDR"},
		{"writer_max_delay", "writer-max-delay", "TETHER_WRITER_MAX_DELAY"},
		{"data_dir", "data-dir", "TETHER_DATA_DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.key+" is --"+tt.flag+" and "+tt.env, func(t *testing.T) {
			if got := config.FlagName(tt.key); got != tt.flag {
				t.Errorf("FlagName(%q) = %q, want %q", tt.key, got, tt.flag)
			}
			if got := config.EnvName(tt.key); got != tt.env {
				t.Errorf("EnvName(%q) = %q, want %q", tt.key, got, tt.env)
			}
		})
	}
}

// wantSettingError checks err is a *config.Error for key whose message
// names the key under all three names and mentions, if given, the bad
// value.
func wantSettingError(t *testing.T, err error, key, mention string) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want a *config.Error", err, err)
	}
	if ce.Key != key {
		t.Errorf("error is about %q, want %q: %v", ce.Key, key, err)
	}
	for _, name := range []string{key, "--" + config.FlagName(key), config.EnvName(key), mention} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not mention %q", err, name)
		}
	}
}

func TestBadValuesAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		key     string
		mention string // part of the message that points at the bad value
	}{
		{
			name: "an address without a port is refused", key: "mqtt_addr", mention: `"localhost"`,
			args: []string{"--mqtt-addr", "localhost"},
		},
		{
			name: "port 70000 is refused", key: "http_addr", mention: "70000",
			env: map[string]string{"TETHER_HTTP_ADDR": ":70000"},
		},
		{
			name: "a negative port is refused", key: "nats_addr", mention: "-1",
			args: []string{"--nats-addr", "127.0.0.1:-1"},
		},
		{
			name: "a negative batch size is refused", key: "writer_batch", mention: "-5",
			args: []string{"--writer-batch=-5"},
		},
		{
			name: "a negative payload limit is refused", key: "max_payload", mention: "-1",
			env: map[string]string{"TETHER_MAX_PAYLOAD": "-1"},
		},
		{
			name: "a command timeout longer than the ttl is refused", key: "command_timeout", mention: "2h",
			args: []string{"--command-timeout", "2h", "--command-ttl", "1h"},
		},
		{
			name: "a tiny shadow size is refused", key: "shadow_max_size", mention: "10",
			env: map[string]string{"TETHER_SHADOW_MAX_SIZE": "10"},
		},
		{
			name: "abc for a number in the environment is refused", key: "writer_batch", mention: `"abc"`,
			env: map[string]string{"TETHER_WRITER_BATCH": "abc"},
		},
		{
			name: "abc for a number as a flag is refused", key: "bus_max_bytes", mention: `"abc"`,
			args: []string{"--bus-max-bytes", "abc"},
		},
		{
			name: "abc for a number in the file is refused", key: "writer_batch", mention: `"abc"`,
			file: "writer_batch: abc\n",
		},
		{
			name: "a list for a number in the file is refused", key: "writer_batch", mention: "line 1",
			file: "writer_batch: [1, 2]\n",
		},
		{
			name: "10 without a unit for a duration is refused", key: "writer_max_delay", mention: `"10"`,
			args: []string{"--writer-max-delay", "10"},
		},
		{
			name: "10 without a unit for a duration in the file is refused", key: "shutdown_timeout", mention: `"10"`,
			file: "shutdown_timeout: 10\n",
		},
		{
			name: "a zero shutdown timeout is refused", key: "shutdown_timeout",
			env: map[string]string{"TETHER_SHUTDOWN_TIMEOUT": "0s"},
		},
		{
			name: "a writer delay over 10s is refused", key: "writer_max_delay", mention: "11s",
			args: []string{"--writer-max-delay", "11s"},
		},
		{
			name: "log level loud is refused", key: "log_level", mention: `"loud"`,
			env: map[string]string{"TETHER_LOG_LEVEL": "loud"},
		},
		{
			name: "log format xml is refused", key: "log_format", mention: `"xml"`,
			args: []string{"--log-format", "xml"},
		},
		{
			name: "an http:// NATS URL is refused", key: "nats_url", mention: `"http"`,
			args: []string{"--nats-url", "http://x"},
		},
		{
			name: "a NATS URL without a host is refused", key: "nats_url",
			env: map[string]string{"TETHER_NATS_URL": "localhost:4222"},
		},
		{
			name: "one bad URL in a NATS server list is refused", key: "nats_url", mention: "http",
			args: []string{"--nats-url", "nats://a:4222,http://b:4222"},
		},
		{
			name: "nats_addr together with nats_url is refused", key: "nats_addr",
			env:  map[string]string{"TETHER_NATS_URL": "nats://nats.example:4222"},
			args: []string{"--nats-addr", "127.0.0.1:4222"},
		},
		{
			name: "an embedded bus listening beyond loopback is refused", key: "nats_addr", mention: "no authentication",
			args: []string{"--nats-addr", ":4222"},
		},
		{
			name: "an embedded bus on a public address is refused", key: "nats_addr", mention: "loopback",
			args: []string{"--nats-addr", "0.0.0.0:4222"},
		},
		{
			name: "a bus under 1 MiB is refused", key: "bus_max_bytes", mention: "1024",
			args: []string{"--bus-max-bytes", "1024"},
		},
		{
			name: "an empty data dir given as a flag is refused", key: "data_dir",
			args: []string{"--data-dir="},
		},
		{
			name: "a bad flag is refused even when the file and environment set the key well", key: "mqtt_addr",
			file: `mqtt_addr: ":1884"`, env: map[string]string{"TETHER_MQTT_ADDR": ":1885"},
			args: []string{"--mqtt-addr", "localhost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := config.Load(args, env(tt.env), io.Discard)
			wantSettingError(t, err, tt.key, tt.mention)
		})
	}
}

func TestTheFirstWrongSettingIsReportedEveryTime(t *testing.T) {
	c := config.Default()
	c.HTTPAddr, c.MQTTAddr = "nowhere", "nowhere"
	for range 50 {
		var ce *config.Error
		if err := c.Validate(); !errors.As(err, &ce) || ce.Key != "http_addr" {
			t.Fatalf("Validate() = %v, want the first wrong setting in order, http_addr", err)
		}
	}
}

func TestBadFiles(t *testing.T) {
	tests := []struct {
		file    string
		key     string // the wrong setting; "" when the error is not a *config.Error
		mention string
	}{
		{file: "unknown-key.bad.yml", mention: "mqtt_address"},
		{file: "not-yaml.bad.yml", mention: "not-yaml.bad.yml"},
		{file: "address-without-port.bad.yml", key: "http_addr", mention: `"localhost"`},
		{file: "port-out-of-range.bad.yml", key: "mqtt_addr", mention: "70000"},
		{file: "duration-without-unit.bad.yml", key: "writer_max_delay", mention: `"10"`},
		{file: "keepalive-forever.bad.yml", key: "mqtt_max_keepalive", mention: "10 to 65535"},
		{file: "zero-publish-rate.bad.yml", key: "device_publish_rate", mention: "under 1"},
		{file: "int-as-text.bad.yml", key: "writer_batch", mention: `"lots"`},
		{file: "negative-payload.bad.yml", key: "max_payload", mention: "-1"},
		{file: "loud-log.bad.yml", key: "log_level", mention: `"loud"`},
		{file: "http-nats-url.bad.yml", key: "nats_url", mention: `"http"`},
		{file: "nats-url-and-addr.bad.yml", key: "nats_addr"},
		{file: "small-bus.bad.yml", key: "bus_max_bytes", mention: "1024"},
		{file: "empty-data-dir.bad.yml", key: "data_dir"},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.bad.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, tt := range tests {
		listed = append(listed, tt.file)
	}
	for _, f := range files {
		if !slices.Contains(listed, filepath.Base(f)) {
			t.Errorf("%s has no expected error in this test", f)
		}
	}
	for _, tt := range tests {
		t.Run(tt.file+" is refused", func(t *testing.T) {
			_, err := config.Load([]string{"--config", filepath.Join("testdata", tt.file)}, env(nil), io.Discard)
			if tt.key != "" {
				wantSettingError(t, err, tt.key, tt.mention)
				return
			}
			if err == nil {
				t.Fatal("loaded without an error")
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestGoodFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.good.yml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f)+" loads and validates", func(t *testing.T) {
			c, err := config.Load([]string{"--config", f}, env(nil), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	t.Run("full.good.yml shows every setting", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join("testdata", "full.good.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var keys map[string]any
		if err := yaml.Unmarshal(data, &keys); err != nil {
			t.Fatal(err)
		}
		for _, s := range settings(t) {
			if _, ok := keys[s.key]; !ok {
				t.Errorf("full.good.yml does not set %s", s.key)
			}
		}
	})
}

func TestPortZeroIsValid(t *testing.T) {
	tests := []struct {
		flag, addr string
	}{
		{"http-addr", ":0"},
		{"mqtt-addr", ":0"},
		{"nats-addr", "127.0.0.1:0"},
		{"http-addr", "127.0.0.1:0"},
		{"mqtt-addr", "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("--%s %s is valid", tt.flag, tt.addr), func(t *testing.T) {
			if _, err := config.Load([]string{"--" + tt.flag, tt.addr}, env(nil), io.Discard); err != nil {
				t.Errorf("Load: %v", err)
			}
		})
	}
}

func TestLoadRefusesStrayArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"an unknown flag is refused", []string{"--mqtt-adr", ":1883"}, "mqtt-adr"},
		{"a positional argument is refused", []string{"extra"}, `"extra"`},
		{"a missing config file is refused", []string{"--config", "testdata/missing.yml"}, "missing.yml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(tt.args, env(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%q): err = %v, want one mentioning %s", tt.args, err, tt.want)
			}
		})
	}
}
