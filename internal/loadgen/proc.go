package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. Linux fixes USER_HZ at 100 on
// every architecture Pulsebase runs on (getconf CLK_TCK), whatever the kernel's HZ.
const userHZ = 100

// ProcSample is one reading of a process's memory and CPU time from /proc.
type ProcSample struct {
	RSS int64         // resident set size now, in bytes (VmRSS)
	HWM int64         // peak resident set size since the process started, in bytes (VmHWM)
	CPU time.Duration // user + system CPU time since the process started
}

// ReadProc reads the memory and CPU time of process pid from /proc (Linux only).
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read process status: %w", err)
	}
	if s.RSS, err = statusKB(status, "VmRSS:"); err != nil {
		return s, err
	}
	if s.HWM, err = statusKB(status, "VmHWM:"); err != nil {
		return s, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read process stat: %w", err)
	}
	s.CPU, err = statCPU(stat)
	return s, err
}

// statusKB returns the value of a "Name:   123 kB" line of /proc/<pid>/status in bytes.
func statusKB(status []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("process status: no valid %s line", strings.TrimSuffix(name, ":"))
}

// statCPU returns utime + stime of a /proc/<pid>/stat line. The command name (field 2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
func statCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("process stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so utime (field 14) is f[11] and stime (15) is f[12].
	if len(f) < 13 {
		return 0, errors.New("process stat: too few fields")
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process stat: bad cpu time %q", s)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ProcUsage is what a process used during a run.
type ProcUsage struct {
	PID int `json:"pid"`
	// RSSBytes is the resident set size at the end of the run; PeakRSSBytes the largest
	// seen while sampling during the run; HWMBytes the process's lifetime peak.
	RSSBytes     int64 `json:"rss_bytes"`
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	HWMBytes     int64 `json:"hwm_bytes"`
	// CPUSeconds is the user + system CPU time used during the run; CPUCores is that
	// divided by the run's elapsed time (2.0 is two cores busy all along).
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUCores   float64 `json:"cpu_cores"`
}

// procWatch samples a process's memory while a run goes on.
type procWatch struct {
	pid   int
	first ProcSample
	began time.Time
	stopc chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	peak int64
}

// procSampleEvery is how often a watch reads the resident set size.
const procSampleEvery = 250 * time.Millisecond

// watchProc starts sampling process pid. It fails if the process cannot be read.
func watchProc(pid int) (*procWatch, error) {
	first, err := ReadProc(pid)
	if err != nil {
		return nil, err
	}
	w := &procWatch{pid: pid, first: first, began: time.Now(), peak: first.RSS,
		stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(procSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-w.stopc:
				return
			case <-t.C:
				if s, err := ReadProc(pid); err == nil {
					w.mu.Lock()
					w.peak = max(w.peak, s.RSS)
					w.mu.Unlock()
				}
			}
		}
	}()
	return w, nil
}

// stop ends sampling and returns what the process used since watchProc.
func (w *procWatch) stop() (*ProcUsage, error) {
	close(w.stopc)
	<-w.done
	last, err := ReadProc(w.pid)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(w.began)
	cpu := (last.CPU - w.first.CPU).Seconds()
	w.mu.Lock()
	defer w.mu.Unlock()
	return &ProcUsage{
		PID:          w.pid,
		RSSBytes:     last.RSS,
		PeakRSSBytes: max(w.peak, last.RSS),
		HWMBytes:     last.HWM,
		CPUSeconds:   cpu,
		CPUCores:     cpu / elapsed.Seconds(),
	}, nil
}
