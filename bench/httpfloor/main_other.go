//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/httpfloor runs on Linux only: it reads /proc for the server's CPU time")
	os.Exit(2)
}
