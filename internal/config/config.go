// Package config holds Tether's one configuration struct: its defaults,
// how it is filled from a YAML file, the environment and flags (in that
// order of precedence), and its validation.
//
// Every setting follows one naming rule: the YAML key is snake_case
// (mqtt_addr), the flag is the same with dashes (--mqtt-addr) and the
// environment variable is the key in upper case behind TETHER_
// (TETHER_MQTT_ADDR). The rule is applied by reflection over the struct
// tags, so a new setting cannot break it.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is every setting of a Tether node.
type Config struct {
	DataDir string `yaml:"data_dir" help:"directory for the database and the embedded bus"`

	HTTPAddr string `yaml:"http_addr" help:"REST API and HTTP ingest listen address (host:port; :0 picks a free port)"`
	MQTTAddr string `yaml:"mqtt_addr" help:"MQTT listen address (host:port; :0 picks a free port)"`
	// The listeners below are off when their address is empty; the TLS
	// ones (and CoAPS with certificates) need tls_cert_file and tls_key_file.
	MQTTWSAddr  string `yaml:"mqtt_ws_addr" help:"MQTT over WebSocket listen address (path /mqtt); empty turns it off"`
	MQTTSAddr   string `yaml:"mqtts_addr" help:"MQTT over TLS listen address, used when tls_cert_file is set; empty turns it off"`
	MQTTWSSAddr string `yaml:"mqtt_wss_addr" help:"MQTT over secure WebSocket listen address (path /mqtt), used when tls_cert_file is set; empty turns it off"`
	HTTPSAddr   string `yaml:"https_addr" help:"HTTPS listen address of the REST API and HTTP ingest, used when tls_cert_file is set; empty turns it off"`
	CoAPAddr    string `yaml:"coap_addr" help:"CoAP (UDP) listen address; empty turns it off"`
	CoAPSAddr   string `yaml:"coaps_addr" help:"CoAP over DTLS (UDP) listen address, for pre-shared keys and, with tls_cert_file, certificates; empty turns it off"`

	TLSCertFile string `yaml:"tls_cert_file" help:"PEM server certificate (chain) for MQTTS, WSS, HTTPS and CoAPS; reloaded on SIGHUP or when the file changes"`
	TLSKeyFile  string `yaml:"tls_key_file" help:"PEM private key of tls_cert_file"`

	MQTTAllowAnonymous          bool          `yaml:"mqtt_allow_anonymous" help:"LAB USE ONLY: let MQTT clients without credentials connect and use any topic outside devices/"`
	MQTTMaxKeepAlive            int           `yaml:"mqtt_max_keepalive" help:"longest MQTT keep-alive a client may ask for, in seconds; a longer (or no) keep-alive is cut to it (5.0) or refused (3.1.1)"`
	MQTTMaxConnectionsPerDevice int           `yaml:"mqtt_max_connections_per_device" help:"most simultaneous MQTT connections of one device (a reused client ID takes over instead)"`
	ConnectRatePerIP            int           `yaml:"connect_rate_per_ip" help:"MQTT connects per second allowed from one source address (bursts of 5 seconds' worth)"`
	DevicePublishRate           int           `yaml:"device_publish_rate" help:"messages per second one device may publish over all protocols (bursts of 1 second's worth); the excess is dropped and counted"`
	ConnectTimeout              time.Duration `yaml:"connect_timeout" help:"how long a new connection may stay without authenticating before it is closed"`

	NATSURL  string `yaml:"nats_url" help:"external NATS JetStream server URL; empty runs an embedded server"`
	NATSAddr string `yaml:"nats_addr" help:"loopback listen address of the embedded NATS server (it has no authentication); empty listens on no port"`

	BusMaxBytes int `yaml:"bus_max_bytes" help:"most bytes of unconsumed telemetry the bus holds; beyond it devices are told to retry"`

	MaxPayload int `yaml:"max_payload" help:"largest telemetry payload accepted, in bytes"`

	WriterBatch    int           `yaml:"writer_batch" help:"most messages the storage writer puts in one transaction"`
	WriterMaxDelay time.Duration `yaml:"writer_max_delay" help:"longest a message waits for its batch to fill before it is written"`

	ShadowMaxSize  int `yaml:"shadow_max_size" help:"largest desired or reported document of a device shadow, in bytes of JSON"`
	ShadowMaxDepth int `yaml:"shadow_max_depth" help:"deepest nesting of objects in a device shadow document"`

	CommandRatePerDevice   int           `yaml:"command_rate_per_device" help:"most commands one device may be sent per minute, whoever sends them; a profile may set stricter limits per command"`
	CommandBreakerFailures int           `yaml:"command_breaker_failures" help:"after this many commands to a device fail or expire in a row, refuse commands to it (circuit breaker)"`
	CommandBreakerCooldown time.Duration `yaml:"command_breaker_cooldown" help:"how long an open circuit breaker refuses commands before it lets one through to try"`
	CommandTTL             time.Duration `yaml:"command_ttl" help:"how long a command waits for its device before it expires, unless the request sets ttl"`
	CommandTimeout         time.Duration `yaml:"command_timeout" help:"how long a device has to reply to a sent command before it fails, unless the request sets timeout"`

	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" help:"how long a graceful shutdown may take before in-flight work is abandoned"`

	LogLevel  string `yaml:"log_level" help:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" help:"text or json"`

	Demo bool `yaml:"demo" help:"start with a demo: example profiles and rules, and simulated devices (labelled demo=true) connected to this node over MQTT and CoAP"`
}

// Default returns the configuration a node runs with when nothing is set.
func Default() Config {
	return Config{
		DataDir:                     "./data",
		HTTPAddr:                    ":8080",
		MQTTAddr:                    ":1883",
		MQTTWSAddr:                  ":8083",
		MQTTSAddr:                   ":8883",
		MQTTWSSAddr:                 ":8084",
		HTTPSAddr:                   ":8443",
		CoAPAddr:                    ":5683",
		CoAPSAddr:                   ":5684",
		MQTTMaxKeepAlive:            3600,
		MQTTMaxConnectionsPerDevice: 4,
		ConnectRatePerIP:            20,
		DevicePublishRate:           100,
		ConnectTimeout:              10 * time.Second,
		BusMaxBytes:                 4 << 30,
		MaxPayload:                  256 << 10,
		WriterBatch:                 5000,
		WriterMaxDelay:              20 * time.Millisecond,
		ShadowMaxSize:               16 << 10,
		ShadowMaxDepth:              8,
		CommandRatePerDevice:        60,
		CommandBreakerFailures:      5,
		CommandBreakerCooldown:      time.Minute,
		CommandTTL:                  24 * time.Hour,
		CommandTimeout:              30 * time.Second,
		ShutdownTimeout:             15 * time.Second,
		LogLevel:                    "info",
		LogFormat:                   "text",
	}
}

// Error is a wrong setting. Its message names the setting under all three
// of its names so the user can fix it wherever they set it.
type Error struct {
	Key string // the YAML key
	Msg string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid setting %s (--%s, %s): %s", e.Key, FlagName(e.Key), EnvName(e.Key), e.Msg)
}

// FlagName returns the flag of a YAML key: mqtt_addr → mqtt-addr.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// EnvName returns the environment variable of a YAML key: mqtt_addr →
// TETHER_MQTT_ADDR.
func EnvName(key string) string { return "TETHER_" + strings.ToUpper(key) }

// Load builds the configuration from defaults, then the YAML file named by
// --config (or TETHER_CONFIG), then the environment, then the flags in
// args. The result is validated. Errors are *Error for a wrong setting;
// flag.ErrHelp when -h was asked for.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("tether serve", flag.ContinueOnError)
	fs.SetOutput(usage)
	configPath := fs.String("config", getenv("TETHER_CONFIG"), "YAML configuration file (env TETHER_CONFIG)")

	// Flags only record what was given; they are applied last, so that a
	// flag's default never hides the file or the environment.
	given := map[string]string{}
	var order []string
	for _, f := range fields(&c) {
		name := FlagName(f.key)
		help := fmt.Sprintf("%s (env %s, default %v)", f.help, EnvName(f.key), f.v.Interface())
		record := func(s string) error {
			if _, ok := given[name]; !ok {
				order = append(order, f.key)
			}
			given[name] = s
			return nil
		}
		if f.v.Kind() == reflect.Bool {
			fs.BoolFunc(name, help, record)
		} else {
			fs.Func(name, help, record)
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	if *configPath != "" {
		if err := loadFile(&c, *configPath); err != nil {
			return c, err
		}
	}
	for _, f := range fields(&c) {
		if v, ok := lookupEnv(getenv, EnvName(f.key)); ok {
			if err := f.set(v); err != nil {
				return c, &Error{Key: f.key, Msg: err.Error()}
			}
		}
	}
	byKey := map[string]field{}
	for _, f := range fields(&c) {
		byKey[f.key] = f
	}
	for _, key := range order {
		if err := byKey[key].set(given[FlagName(key)]); err != nil {
			return c, &Error{Key: key, Msg: err.Error()}
		}
	}
	return c, c.Validate()
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func loadFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			if serr := badFileValue(path, data); serr != nil {
				return serr
			}
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// badFileValue returns, as *Error, the first setting in a YAML file whose
// value does not fit its type (writer_batch: lots, writer_max_delay: 10),
// so that it is reported under the setting's three names like a wrong
// flag or environment variable. yaml's own error gives only a line. It
// returns nil when every known key's value fits, for instance when the
// file's only fault is an unknown key, which yaml's error names.
func badFileValue(path string, data []byte) error {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	var scratch Config
	byKey := map[string]field{}
	for _, f := range fields(&scratch) {
		byKey[f.key] = f
	}
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		f, ok := byKey[m[i].Value]
		if !ok {
			continue
		}
		v := m[i+1]
		err := v.Decode(f.v.Addr().Interface())
		if err == nil {
			continue
		}
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msg = strings.Join(te.Errors, "; ")
		}
		// A scalar gets the same words as in a flag or the environment.
		if v.Kind == yaml.ScalarNode {
			if serr := f.set(v.Value); serr != nil {
				msg = serr.Error()
			}
		}
		return &Error{Key: f.key, Msg: fmt.Sprintf("%s (%s line %d)", msg, path, v.Line)}
	}
	return nil
}

// TLSError returns, as *Error, what is wrong with the TLS settings taken
// together: a certificate needs its key and a key its certificate. It is
// apart from Validate because each of the two is a valid setting alone
// while a file is being written.
func (c Config) TLSError() error {
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		return &Error{"tls_cert_file", "is needed with tls_key_file"}
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return &Error{"tls_key_file", "is needed with tls_cert_file"}
	}
	return nil
}

// Validate checks every setting and returns the first wrong one as *Error.
func (c Config) Validate() error {
	if strings.TrimSpace(c.DataDir) == "" {
		return &Error{"data_dir", "must not be empty"}
	}
	// A slice, not a map, so that "first" is the same on every run.
	for _, a := range []struct{ key, addr string }{{"http_addr", c.HTTPAddr}, {"mqtt_addr", c.MQTTAddr}} {
		if err := checkAddr(a.addr); err != nil {
			return &Error{a.key, err.Error()}
		}
	}
	for _, a := range []struct{ key, addr string }{
		{"mqtt_ws_addr", c.MQTTWSAddr}, {"mqtts_addr", c.MQTTSAddr}, {"mqtt_wss_addr", c.MQTTWSSAddr},
		{"https_addr", c.HTTPSAddr}, {"coap_addr", c.CoAPAddr}, {"coaps_addr", c.CoAPSAddr},
	} {
		if a.addr == "" {
			continue
		}
		if err := checkAddr(a.addr); err != nil {
			return &Error{a.key, err.Error()}
		}
	}
	if c.MQTTMaxKeepAlive < 10 || c.MQTTMaxKeepAlive > 65535 {
		return &Error{"mqtt_max_keepalive", fmt.Sprintf("%d is outside 10 to 65535 seconds", c.MQTTMaxKeepAlive)}
	}
	if c.MQTTMaxConnectionsPerDevice < 1 {
		return &Error{"mqtt_max_connections_per_device", fmt.Sprintf("%d is under 1", c.MQTTMaxConnectionsPerDevice)}
	}
	if c.ConnectRatePerIP < 1 {
		return &Error{"connect_rate_per_ip", fmt.Sprintf("%d is under 1", c.ConnectRatePerIP)}
	}
	if c.DevicePublishRate < 1 {
		return &Error{"device_publish_rate", fmt.Sprintf("%d is under 1", c.DevicePublishRate)}
	}
	if c.ConnectTimeout < time.Second || c.ConnectTimeout > time.Minute {
		return &Error{"connect_timeout", fmt.Sprintf("%s is outside 1s to 1m", c.ConnectTimeout)}
	}
	if c.NATSAddr != "" {
		if err := checkAddr(c.NATSAddr); err != nil {
			return &Error{"nats_addr", err.Error()}
		}
		if c.NATSURL != "" {
			return &Error{"nats_addr", "is for the embedded NATS server; it cannot be used together with nats_url"}
		}
		// The embedded server has no authentication: whoever reaches it
		// can publish telemetry for any device and read every tenant's.
		if host, _, _ := net.SplitHostPort(c.NATSAddr); !isLoopback(host) {
			return &Error{"nats_addr", fmt.Sprintf("%q would expose the bus, which has no authentication, beyond this machine; use a loopback address such as 127.0.0.1:4222, or an external NATS with credentials (nats_url)", c.NATSAddr)}
		}
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			p, err := url.Parse(strings.TrimSpace(u))
			if err != nil || p.Host == "" {
				return &Error{"nats_url", fmt.Sprintf("%q is not a URL like nats://host:4222", u)}
			}
			switch p.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				return &Error{"nats_url", fmt.Sprintf("scheme %q is not one of nats, tls, ws, wss", p.Scheme)}
			}
		}
	}
	if c.BusMaxBytes < 1<<20 {
		return &Error{"bus_max_bytes", fmt.Sprintf("%d is under 1 MiB", c.BusMaxBytes)}
	}
	if c.MaxPayload < 64 || c.MaxPayload > 64<<20 {
		return &Error{"max_payload", fmt.Sprintf("%d is outside 64 bytes to 64 MiB", c.MaxPayload)}
	}
	if c.WriterBatch < 1 || c.WriterBatch > 100000 {
		return &Error{"writer_batch", fmt.Sprintf("%d is outside 1 to 100000", c.WriterBatch)}
	}
	if c.WriterMaxDelay <= 0 || c.WriterMaxDelay > 10*time.Second {
		return &Error{"writer_max_delay", fmt.Sprintf("%s is outside (0, 10s]", c.WriterMaxDelay)}
	}
	if c.ShadowMaxSize < 256 || c.ShadowMaxSize > 1<<20 {
		return &Error{"shadow_max_size", fmt.Sprintf("%d is outside 256 bytes to 1 MiB", c.ShadowMaxSize)}
	}
	if c.ShadowMaxDepth < 1 || c.ShadowMaxDepth > 32 {
		return &Error{"shadow_max_depth", fmt.Sprintf("%d is outside 1 to 32", c.ShadowMaxDepth)}
	}
	if c.CommandRatePerDevice < 1 {
		return &Error{"command_rate_per_device", fmt.Sprintf("%d is under 1", c.CommandRatePerDevice)}
	}
	if c.CommandBreakerFailures < 1 {
		return &Error{"command_breaker_failures", fmt.Sprintf("%d is under 1", c.CommandBreakerFailures)}
	}
	if c.CommandBreakerCooldown < time.Second {
		return &Error{"command_breaker_cooldown", fmt.Sprintf("%s is under 1s", c.CommandBreakerCooldown)}
	}
	if c.CommandTTL < time.Second {
		return &Error{"command_ttl", fmt.Sprintf("%s is under 1s", c.CommandTTL)}
	}
	if c.CommandTimeout < time.Second || c.CommandTimeout > c.CommandTTL {
		return &Error{"command_timeout", fmt.Sprintf("%s is outside 1s to command_ttl", c.CommandTimeout)}
	}
	if c.ShutdownTimeout <= 0 {
		return &Error{"shutdown_timeout", "must be positive"}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return &Error{"log_level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel)}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return &Error{"log_format", fmt.Sprintf("%q is not one of text, json", c.LogFormat)}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (use :1883 for all interfaces)", addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has a bad host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has a bad port; use 0 to 65535", addr)
	}
	return nil
}

// field is one setting, reached by reflection.
type field struct {
	key, help string
	v         reflect.Value
}

func fields(c *Config) []field {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	out := make([]field, 0, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		out = append(out, field{key: sf.Tag.Get("yaml"), help: sf.Tag.Get("help"), v: v.Field(i)})
	}
	return out
}

// set parses s into the field.
func (f field) set(s string) error {
	switch p := f.v.Addr().Interface().(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration like 250ms or 10s", s)
		}
		*p = d
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	}
	return nil
}
