// Command tracesummary is the Go oracle for the window summary defined in
// agent/gotrace/docs/summary.md: for each file it prints one JSON line with
// the summary's fields computed from the events golang.org/x/exp/trace
// yields, plus "file", "ok", "error" and "events_fnv" (FNV-1a 64 of every
// event's String() followed by a newline, in hex: the Rust decoder's
// Display must give the same bytes).
//
//	tracesummary FILE...            one JSON line per file
//	tracesummary -bench N FILE...   parse every file N times, print MB/s
//
// Only v2 traces (Go >= 1.22) are summarised: a v1 trace gets ok=false and
// error "not summarised: v1 trace (Go 1.21 or older)". A trace the parser
// rejects gets ok=false, its error, and the fields of the events before it.
// The exit status is 0 when every file is ok, 1 otherwise, 2 on usage.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/exp/trace"
)

// summary has the fields of docs/summary.md, in its order.
type summary struct {
	File                string `json:"file"`
	OK                  bool   `json:"ok"`
	Error               string `json:"error"`
	Events              int64  `json:"events"`
	FirstNs             int64  `json:"first_ns"`
	LastNs              int64  `json:"last_ns"`
	GCCycles            int64  `json:"gc_cycles"`
	STWCount            int64  `json:"stw_count"`
	STWTotalNs          int64  `json:"stw_total_ns"`
	STWMaxNs            int64  `json:"stw_max_ns"`
	STWMaxReason        string `json:"stw_max_reason"`
	GCAssistNs          int64  `json:"gc_assist_ns"`
	GoroutinesMax       int64  `json:"goroutines_max"`
	RunnableMax         int64  `json:"runnable_max"`
	SchedLatencySamples int64  `json:"sched_latency_samples"`
	SchedLatencyP50Ns   int64  `json:"sched_latency_p50_ns"`
	SchedLatencyP99Ns   int64  `json:"sched_latency_p99_ns"`
	SchedLatencyMaxNs   int64  `json:"sched_latency_max_ns"`
	SyscallNs           int64  `json:"syscall_ns"`
	HeapMaxBytes        uint64 `json:"heap_max_bytes"`
	HeapGoalMaxBytes    uint64 `json:"heap_goal_max_bytes"`
	Gomaxprocs          uint64 `json:"gomaxprocs"`
	EventsFNV           string `json:"events_fnv"`
}

var headerRE = regexp.MustCompile(`^go 1\.(\d+) trace\x00\x00\x00`)

const stwPrefix = "stop-the-world ("

func main() {
	bench := flag.Int("bench", 0, "parse every file this many times and print the parser's throughput instead")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tracesummary [-bench N] FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *bench < 0 {
		flag.Usage()
		os.Exit(2)
	}
	// Sync events print wall clock times; the Rust side prints them in UTC.
	time.Local = time.UTC
	if *bench > 0 {
		if err := runBench(flag.Args(), *bench); err != nil {
			fmt.Fprintln(os.Stderr, "tracesummary:", err)
			os.Exit(1)
		}
		return
	}
	allOK := true
	enc := json.NewEncoder(os.Stdout)
	for _, f := range flag.Args() {
		s := summarize(f)
		allOK = allOK && s.OK
		enc.Encode(s)
	}
	if !allOK {
		os.Exit(1)
	}
}

func summarize(file string) summary {
	s := summary{File: file}
	data, err := os.ReadFile(file)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	if m := headerRE.FindSubmatch(data); m != nil {
		if minor, _ := strconv.Atoi(string(m[1])); minor < 22 {
			s.Error = "not summarised: v1 trace (Go 1.21 or older)"
			return s
		}
	}
	var st state
	st.init()
	h := fnv.New64a()
	err = each(data, func(ev trace.Event) {
		st.add(ev)
		io.WriteString(h, ev.String())
		h.Write([]byte{'\n'})
	})
	st.fill(&s)
	s.EventsFNV = fmt.Sprintf("%016x", h.Sum64())
	s.OK = err == nil
	if err != nil {
		s.Error = err.Error()
	}
	return s
}

// each hands every event of the trace to f; a trace is only whole once
// the reader returns io.EOF itself: an error that wraps io.EOF (a table
// cut short, "reading frame 4's PC for stack 6: EOF") is a broken trace,
// as `go tool trace` says, so errors.Is would be wrong here.
func each(data []byte, f func(trace.Event)) error {
	r, err := trace.NewReader(bytes.NewReader(data))
	if err != nil {
		return err
	}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		f(ev)
	}
}

// state is the summary as the events stream by.
type state struct {
	events, first, last   int64
	gcCycles, stwCount    int64
	stwTotal, stwMax      int64
	stwMaxReason          string
	stwOpen               bool
	stwBegin              int64
	stwReason             string
	assistNs              int64
	assist                map[trace.GoID]int64 // start of a pending mark assist
	alive                 map[trace.GoID]trace.GoState
	nAlive, nRunnable     int64
	maxAlive, maxRunnable int64
	runnableSince         map[trace.GoID]int64
	syscallSince          map[trace.GoID]int64
	latencies             []int64
	syscallNs             int64
	heap, heapGoal, procs uint64
}

func (st *state) init() {
	st.assist = map[trace.GoID]int64{}
	st.alive = map[trace.GoID]trace.GoState{}
	st.runnableSince = map[trace.GoID]int64{}
	st.syscallSince = map[trace.GoID]int64{}
}

func isAlive(s trace.GoState) bool {
	return s == trace.GoRunnable || s == trace.GoRunning || s == trace.GoSyscall || s == trace.GoWaiting
}

func (st *state) add(ev trace.Event) {
	t := int64(ev.Time())
	if st.events == 0 {
		st.first = t
	}
	st.last = t
	st.events++
	switch ev.Kind() {
	case trace.EventRangeBegin:
		r := ev.Range()
		switch {
		case r.Name == "GC concurrent mark phase":
			st.gcCycles++
		case strings.HasPrefix(r.Name, stwPrefix):
			st.stwCount++
			st.stwOpen, st.stwBegin = true, t
			st.stwReason = strings.TrimSuffix(strings.TrimPrefix(r.Name, stwPrefix), ")")
		case r.Name == "GC mark assist":
			st.assist[r.Scope.Goroutine()] = t
		}
	case trace.EventRangeActive:
		r := ev.Range()
		if r.Name == "GC mark assist" {
			if _, pending := st.assist[r.Scope.Goroutine()]; !pending {
				st.assist[r.Scope.Goroutine()] = t
			}
		}
	case trace.EventRangeEnd:
		r := ev.Range()
		switch {
		case strings.HasPrefix(r.Name, stwPrefix):
			if st.stwOpen {
				d := t - st.stwBegin
				st.stwTotal += d
				if d > st.stwMax {
					st.stwMax, st.stwMaxReason = d, st.stwReason
				}
				st.stwOpen = false
			}
		case r.Name == "GC mark assist":
			g := r.Scope.Goroutine()
			if start, ok := st.assist[g]; ok {
				st.assistNs += t - start
				delete(st.assist, g)
			}
		}
	case trace.EventStateTransition:
		tr := ev.StateTransition()
		if tr.Resource.Kind != trace.ResourceGoroutine {
			return
		}
		st.transition(tr.Resource.Goroutine(), t, tr)
	case trace.EventMetric:
		m := ev.Metric()
		v := m.Value.Uint64()
		switch m.Name {
		case "/memory/classes/heap/objects:bytes":
			st.heap = max(st.heap, v)
		case "/gc/heap/goal:bytes":
			st.heapGoal = max(st.heapGoal, v)
		case "/sched/gomaxprocs:threads":
			st.procs = max(st.procs, v)
		}
	}
}

func (st *state) transition(g trace.GoID, t int64, tr trace.StateTransition) {
	from, to := tr.Goroutine()
	prev, known := st.alive[g]
	if known && isAlive(prev) {
		st.nAlive--
		if prev == trace.GoRunnable {
			st.nRunnable--
		}
	}
	if isAlive(to) {
		st.alive[g] = to
		st.nAlive++
		if to == trace.GoRunnable {
			st.nRunnable++
		}
	} else {
		delete(st.alive, g)
	}
	st.maxAlive = max(st.maxAlive, st.nAlive)
	st.maxRunnable = max(st.maxRunnable, st.nRunnable)

	if to == trace.GoRunnable && from != trace.GoRunnable && from != trace.GoUndetermined {
		st.runnableSince[g] = t
	} else if from == trace.GoRunnable && to != trace.GoRunnable {
		if start, ok := st.runnableSince[g]; ok {
			if to == trace.GoRunning {
				st.latencies = append(st.latencies, t-start)
			}
			delete(st.runnableSince, g)
		}
	}
	if to == trace.GoSyscall && from != trace.GoSyscall && from != trace.GoUndetermined {
		st.syscallSince[g] = t
	} else if from == trace.GoSyscall && to != trace.GoSyscall {
		if start, ok := st.syscallSince[g]; ok {
			st.syscallNs += t - start
			delete(st.syscallSince, g)
		}
	}
}

func (st *state) fill(s *summary) {
	s.Events, s.FirstNs, s.LastNs = st.events, st.first, st.last
	s.GCCycles, s.STWCount = st.gcCycles, st.stwCount
	s.STWTotalNs, s.STWMaxNs, s.STWMaxReason = st.stwTotal, st.stwMax, st.stwMaxReason
	s.GCAssistNs = st.assistNs
	s.GoroutinesMax, s.RunnableMax = st.maxAlive, st.maxRunnable
	n := int64(len(st.latencies))
	s.SchedLatencySamples = n
	if n > 0 {
		floored := make([]int64, n)
		for i, l := range st.latencies {
			c := min(l, int64(time.Second))
			floored[i] = c - c%1000
		}
		s.SchedLatencyMaxNs = slices.Max(st.latencies)
		slices.Sort(floored)
		s.SchedLatencyP50Ns = floored[(n*50+99)/100-1]
		s.SchedLatencyP99Ns = floored[(n*99+99)/100-1]
	}
	s.SyscallNs = st.syscallNs
	s.HeapMaxBytes, s.HeapGoalMaxBytes, s.Gomaxprocs = st.heap, st.heapGoal, st.procs
}

// cpuTime is the CPU time the process (all its threads: the parser and
// the garbage collector) has used: on a machine shared with other work a
// steadier measure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runBench times Go's parser alone (reading every event) and with the
// summary, over every file, n times each, in wall and CPU time.
func runBench(files []string, n int) error {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for _, mode := range []string{"parse", "parse+summary"} {
			start, startCPU := time.Now(), cpuTime()
			events := 0
			for range n {
				var st state
				st.init()
				err := each(data, func(ev trace.Event) {
					events++
					if mode != "parse" {
						st.add(ev)
					}
				})
				if err != nil {
					return fmt.Errorf("%s: %v", f, err)
				}
			}
			secs, cpu := time.Since(start).Seconds(), (cpuTime() - startCPU).Seconds()
			bytes := float64(n * len(data))
			fmt.Printf("%-24s %-14s %4d x %9d bytes: %8.1f MB/s wall, %8.1f MB/s per CPU second, %6.1f ns/event, %7.2f ms/MB (CPU)\n",
				shortName(f), mode, n, len(data), bytes/secs/1e6, bytes/cpu/1e6, cpu*1e9/float64(events), cpu*1e3/(bytes/1e6))
		}
	}
	return nil
}

func shortName(f string) string {
	if i := strings.LastIndexByte(f, '/'); i >= 0 {
		return f[i+1:]
	}
	return f
}
