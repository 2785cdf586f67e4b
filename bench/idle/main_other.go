//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/idle runs on Linux only: it reads /proc for CPU time and ss for Raft traffic")
	os.Exit(2)
}
