// Command httpfloor measures what an HTTP/1.1 request costs a Go server
// process apart from the work behind it: the same keep-alive PUT load (a
// 256-byte body, 16-byte-ish keys, no pipelining, -k connections) against
// net/http with a handler that only reads the body and answers 204, and
// against a minimal hand-written loop that parses the request line,
// headers and Content-Length body and writes the same 204. The two
// alternate -rounds times, each server a child process of its own, and
// the report is the child's CPU (utime+stime from /proc) per request.
//
// keeld serves every PUT through net/http; the difference between the two
// figures is the most a hand-written server could save per request, the
// read and write system calls being paid by both (bench/README.md, "Per-write
// cost, fifth session"). Linux only (it reads /proc).
//
//	go run ./bench/httpfloor [-k 64] [-n 4000] [-rounds 2]
package main
