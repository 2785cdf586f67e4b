package main

import (
	"fmt"
	"strconv"
	"strings"
)

// diskSize is a --disk-reserve or --disk-ballast value: a byte count
// ("256MiB", "1GiB", "1048576") or a share of the filesystem ("5%").
// It implements flag.Value.
type diskSize struct {
	bytes   uint64
	percent float64 // used when > 0
}

// units are binary; "MB" and "M" mean MiB too, as df -h and most operators
// read them.
var diskUnits = []struct {
	suffix string
	mult   uint64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10},
	{"B", 1},
}

func (d *diskSize) Set(s string) error {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 || v > 50 {
			return fmt.Errorf("%q: a percentage must be from 0%% to 50%%", s)
		}
		*d = diskSize{percent: v}
		return nil
	}
	mult := uint64(1)
	num := s
	for _, u := range diskUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || (mult > 1 && v > ^uint64(0)/mult) {
		return fmt.Errorf("%q is not a size such as 256MiB, 1GiB, 1048576 or 5%%", s)
	}
	*d = diskSize{bytes: v * mult}
	return nil
}

func (d *diskSize) String() string {
	if d == nil {
		return ""
	}
	if d.percent > 0 {
		return strconv.FormatFloat(d.percent, 'f', -1, 64) + "%"
	}
	for _, u := range diskUnits[:4] {
		if d.bytes >= u.mult && d.bytes%u.mult == 0 {
			return strconv.FormatUint(d.bytes/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(d.bytes, 10)
}

// of resolves the size against a filesystem of total bytes.
func (d diskSize) of(total uint64) uint64 {
	if d.percent > 0 {
		return uint64(float64(total) * d.percent / 100)
	}
	return d.bytes
}
