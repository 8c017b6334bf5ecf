package main

import (
	"fmt"
	"io"
)

// runCerts is the certs command. (Stub; being written.)
func runCerts(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tether certs: not yet")
	return 2
}
