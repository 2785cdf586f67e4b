//go:build linux

package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "serve" {
		serve(os.Args[2], os.Args[3])
		return
	}
	k := flag.Int("k", 64, "connections, each with one request in flight")
	n := flag.Int("n", 4000, "requests per connection and run")
	rounds := flag.Int("rounds", 2, "alternating rounds of the two servers")
	flag.Parse()
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	for r := 1; r <= *rounds; r++ {
		for _, kind := range []string{"net/http", "minimal"} {
			rate, perReq, err := run(self, kind, *k, *n)
			if err != nil {
				log.Fatalf("%s: %v", kind, err)
			}
			fmt.Printf("round %d %-8s %8.0f req/s  server CPU %5.1f µs/request\n", r, kind, rate, perReq)
		}
	}
}

// run starts a server child, loads it and returns requests/s and the
// child's CPU µs per request.
func run(self, kind string, k, n int) (float64, float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(self, "serve", kind, addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	conns := make([]net.Conn, k)
	for i := range conns {
		deadline := time.Now().Add(10 * time.Second)
		for {
			conns[i], err = net.Dial("tcp", addr)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond) // the child is still starting to listen
		}
		if err != nil {
			return 0, 0, err
		}
		defer conns[i].Close()
	}
	val := bytes.Repeat([]byte("v"), 256)
	cpu0, err := childCPU(cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	errs := make(chan error, k)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			req := []byte{}
			for j := 0; j < n; j++ {
				req = fmt.Appendf(req[:0], "PUT /kv/key-%04d-%06d HTTP/1.1\r\nHost: keel\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s", i, j, len(val), val)
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				status, err := br.ReadSlice('\n')
				if err != nil || !bytes.HasPrefix(status, []byte("HTTP/1.1 204")) {
					errs <- fmt.Errorf("answer %q: %v", status, err)
					return
				}
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						errs <- err
						return
					}
					if len(line) <= 2 {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	cpu1, err := childCPU(cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	total := float64(k * n)
	return total / elapsed.Seconds(), float64((cpu1 - cpu0).Microseconds()) / total, nil
}

// childCPU reads a process's utime+stime (clock ticks of 10 ms).
func childCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

func serve(kind, addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	if kind == "net/http" {
		log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusNoContent)
		})))
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serveMinimal(c)
	}
}

// serveMinimal answers PUTs with a Content-Length body until the client
// closes: what any HTTP/1.1 server must at least do per request.
func serveMinimal(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	body := make([]byte, 0, 4096)
	for {
		length := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if length > cap(body) {
			return
		}
		if _, err := io.ReadFull(br, body[:length]); err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 204 No Content\r\nDate: ")
		bw.WriteString(time.Now().UTC().Format(http.TimeFormat))
		bw.WriteString("\r\n\r\n")
		if bw.Flush() != nil {
			return
		}
	}
}
