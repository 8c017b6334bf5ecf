//go:build tools
package tools
import (
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/mattn/go-sqlite3"
	_ "modernc.org/sqlite"
	_ "gopkg.in/yaml.v3"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/eclipse/paho.golang/paho"
)
