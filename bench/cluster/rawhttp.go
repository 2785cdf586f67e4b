//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"time"
)

// rawConn is one load worker's HTTP/1.1 keep-alive connection, written
// and parsed by hand. net/http's client cost 64-100 µs of client CPU per
// PUT on the development machine (two goroutines per connection, a
// Request and Response with their header maps per call), a quarter to a
// third of the two cores the client shares with the three keeld
// processes; this costs a fraction of that, so the servers get the CPU.
// It speaks only what keeld answers: a status line, headers, and a body
// of Content-Length bytes or chunked. Not safe for concurrent use; any
// error closes the connection and the next request dials again.
type rawConn struct {
	addr    string
	conn    net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	timeout time.Duration
	body    []byte // last response body (kept only up to bodyKeep bytes)
}

// bodyKeep bounds the response body rawConn keeps (POST /txn's answer).
const bodyKeep = 64 << 10

func newRawConn(addr string, timeout time.Duration) *rawConn {
	return &rawConn{addr: addr, timeout: timeout}
}

func (c *rawConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// do sends one request and reads its answer. The status is 0 when there
// was no answer (dial, write or read failed).
func (c *rawConn) do(method, path, contentType string, body []byte) (int, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 16<<10)
			c.bw = bufio.NewWriterSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
			c.bw.Reset(conn)
		}
	}
	_ = c.conn.SetDeadline(time.Now().Add(c.timeout))
	w := c.bw
	_, _ = w.WriteString(method)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(path)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = w.WriteString(c.addr)
	if contentType != "" {
		_, _ = w.WriteString("\r\nContent-Type: ")
		_, _ = w.WriteString(contentType)
	}
	_, _ = w.WriteString("\r\nContent-Length: ")
	var num [20]byte
	_, _ = w.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
	_, _ = w.WriteString("\r\n\r\n")
	_, _ = w.Write(body)
	if err := w.Flush(); err != nil {
		c.close()
		return 0, err
	}
	code, err := c.readResponse(method == "HEAD")
	if err != nil {
		c.close()
		return 0, err
	}
	return code, nil
}

// readResponse parses a status line, headers and body.
func (c *rawConn) readResponse(head bool) (int, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 204 No Content\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("%w: bad status line %q", errHTTP, line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("%w: bad status line %q", errHTTP, line)
	}
	length, chunked, closeAfter := int64(-1), false, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(value), 10, 64)
			if err != nil || length < 0 {
				return 0, fmt.Errorf("%w: bad Content-Length %q", errHTTP, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeAfter = bytes.EqualFold(value, []byte("close"))
		}
	}
	c.body = c.body[:0]
	switch {
	case head || code == 204 || code == 304 || (code >= 100 && code < 200):
	case chunked:
		if err := c.readChunked(); err != nil {
			return 0, err
		}
	case length >= 0:
		if err := c.readBody(length); err != nil {
			return 0, err
		}
	default: // a body up to close: keeld (net/http) never sends one
		return 0, fmt.Errorf("%w: response %d without a length", errHTTP, code)
	}
	if closeAfter {
		c.close()
	}
	return code, nil
}

// readBody reads n bytes, keeping the first bodyKeep.
func (c *rawConn) readBody(n int64) error {
	for n > 0 {
		b, err := c.br.Peek(int(min(n, int64(c.br.Size()))))
		if len(b) == 0 && err != nil {
			return err
		}
		if room := bodyKeep - len(c.body); room > 0 {
			c.body = append(c.body, b[:min(room, len(b))]...)
		}
		_, _ = c.br.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

// readChunked reads a chunked body and its trailer.
func (c *rawConn) readChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		sz, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(sz), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: bad chunk size %q", errHTTP, line)
		}
		if n == 0 {
			for { // trailer
				line, err = c.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(line) <= 2 {
					return nil
				}
			}
		}
		if err := c.readBody(n); err != nil {
			return err
		}
		if _, err := c.br.Discard(2); err != nil { // CRLF
			return err
		}
	}
}
