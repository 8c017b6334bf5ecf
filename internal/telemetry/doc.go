// Package telemetry decodes device telemetry payloads into points, and
// encodes and decodes the telemetry message that crosses the bus.
//
// [Decode] is used by every gateway (MQTT, HTTP, CoAP) on the payload a
// device sent; its format and its limits are described there. A refused
// payload yields an *[Error] whose Reason is a metric label and whose
// Message tells the device's developer what to fix.
//
// A payload sent as CBOR (RFC 8949; CoAP Content-Format 60, HTTP
// Content-Type application/cbor) is first converted by [CBORToJSON] into the
// JSON Decode reads, so that the payload rules live in one decoder whatever
// the format; [DecodeCBOR] does both.
//
// [MarshalMessage] and [UnmarshalMessage] are the codec of the bus. The bus
// format is JSON, so that the rules engine and programs outside Tether that
// subscribe to the bus can read it with any JSON library.
//
// # Bus message format, version 1
//
// One telemetry message is one JSON object:
//
//	{
//	  "v": 1,
//	  "id": "01HX3Q4ZK8M6W2B9T5N7R0C1DE",
//	  "tenant": "default",
//	  "device": "boiler-7",
//	  "rx": 1714557600123456789,
//	  "points": [
//	    {"k": "temp", "t": 1714557600000000000, "n": 21.5},
//	    {"k": "on", "t": 1714557600000000000, "b": true},
//	    {"k": "mode", "t": 1714557600000000000, "s": "eco"},
//	    {"k": "pressure", "t": 1714557600000000000, "n": -40, "q": "below_min"}
//	  ]
//	}
//
// The fields are:
//
//   - v: the format version, the number 1. A reader refuses any other
//     version. Optional fields may be added to version 1; a reader ignores
//     fields it does not know.
//   - id: the message ID assigned by the gateway. A message delivered twice
//     has the same ID, and is stored once.
//   - tenant, device: the IDs of the device's tenant and of the device.
//   - rx: when the gateway received the message, in nanoseconds since the
//     Unix epoch (an integer).
//   - points: the values, in the order the device sent them. Each has a key
//     k (dotted for nested objects: "gps.lat"), a time t in nanoseconds
//     since the Unix epoch (an integer), and exactly one of n (a number),
//     b (a boolean) or s (a string). A point that broke its device's
//     profile also has q, the reason it is quarantined ("wrong_type",
//     "below_min", "above_max", "impossible_jump"): it is stored apart and
//     kept out of aggregates, latest values and rules. q is optional and
//     written only when set.
//
// All other fields are required. Integers of nanoseconds exceed 2^53, so a reader
// in a language whose JSON numbers are doubles (JavaScript) must read them
// as big integers or lose precision below the microsecond.
package telemetry
