// Package conformance is the MQTT 3.1.1 and 5.0 conformance suite of
// Tether's MQTT gateway. It holds tests only.
//
// Every case runs twice: against Tether's gateway (package
// [github.com/tether-iot/tether/internal/mqtt], in lab mode, where
// anonymous clients use any topic outside devices/) and against Mosquitto,
// the reference broker, started as a process with a generated
// configuration. Where the MQTT specifications leave a server a choice, a
// case asserts what Mosquitto does and says so in its comment; a case that
// passes against Mosquitto and fails against Tether is a divergence to fix
// in the gateway. Without /usr/sbin/mosquitto (Debian package mosquitto)
// the Mosquitto side is skipped.
//
// MQTT 3.1.1 cases use github.com/eclipse/paho.mqtt.golang, the client most
// devices in Go use. MQTT 5.0 cases drive the protocol packet by packet
// with the codec of github.com/eclipse/paho.golang over a plain socket, so
// that a case sees exactly what the server sent (every subscription
// identifier, every topic alias, each retain flag) and decides when, and
// whether, to acknowledge.
package conformance
