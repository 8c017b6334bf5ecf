package telemetry

// EpochMillis exports epochMillis to the reference decoder of the tests, so
// that it converts numeric timestamps exactly as Decode does.
var EpochMillis = epochMillis
