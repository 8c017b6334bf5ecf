package profile

// SetMaxDevices changes how many devices c remembers, so that a test can
// reach the bound with a few devices.
func SetMaxDevices(c *Checker, n int) { c.max = n }
