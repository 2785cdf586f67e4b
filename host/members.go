package host

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// ParseMembers parses a member list "1=host:port,2=host:port" (keeld's
// --members, keelctl's import): IDs are numbers above 0 and unique, and
// addresses are host:port with a port from 1 to 65535 and unique.
func ParseMembers(s string) (map[uint64]string, error) {
	m := map[uint64]string{}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("empty entry in %q", s)
		}
		idText, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q: want ID=HOST:PORT", part)
		}
		id, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("entry %q: replica ID must be a number above 0", part)
		}
		addr = strings.TrimSpace(addr)
		if err := CheckHostPort(addr, false); err != nil {
			return nil, fmt.Errorf("entry %q: %v", part, err)
		}
		if _, dup := m[id]; dup {
			return nil, fmt.Errorf("replica %d listed twice", id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("replicas %d and %d share address %s", other, id, addr)
		}
		m[id] = addr
		addrs[addr] = id
	}
	return m, nil
}

// FormatMembers is the inverse of ParseMembers, in ID order.
func FormatMembers(m map[uint64]string) string {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, m[id])
	}
	return strings.Join(parts, ",")
}

// CheckHostPort accepts host:port with a numeric port; port 0 and an empty
// host only when allowZero (a listen address the OS may choose).
func CheckHostPort(addr string, allowZero bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" && !allowZero {
		return fmt.Errorf("%q has no host", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	if p == 0 && !allowZero {
		return fmt.Errorf("%q: port must be from 1 to 65535", addr)
	}
	return nil
}
