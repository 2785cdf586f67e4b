//go:build race

package main

// raceEnabled builds the keeld binary under test with -race too.
const raceEnabled = true
