//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/cluster runs on Linux only: it reads /proc for CPU time and memory")
	os.Exit(2)
}
