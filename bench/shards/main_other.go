//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/shards runs on Linux only: it reads /proc for memory, CPU time and open files")
	os.Exit(2)
}
