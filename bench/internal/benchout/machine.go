package benchout

import (
	"os"
	"runtime"
	"strings"
)

// Machine describes the machine a benchmark ran on, read from /proc.
type Machine struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemTotal  string `json:"mem_total,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	LoadAvg   string `json:"loadavg_at_start,omitempty"`
	GoVersion string `json:"go_version"`
	NoFile    string `json:"rlimit_nofile,omitempty"`
}

// ReadMachine fills a Machine from the running process and /proc.
func ReadMachine() Machine {
	h := Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			_, v, _ := strings.Cut(l, ":")
			h.MemTotal = strings.TrimSpace(v)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.LoadAvg = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Max open files") {
				h.NoFile = strings.Join(strings.Fields(strings.TrimPrefix(l, "Max open files")), " ")
			}
		}
	}
	return h
}
