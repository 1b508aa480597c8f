package main

// Runtime workloads, as in cmd/fixture (workloads.go there), so that every
// Go version the suite builds can produce windows with garbage
// collections, stop-the-world pauses, mark assists and run queue spikes.
// Flags only (this service has no /control). Stdlib only, Go 1.21.

import (
	"context"
	"flag"
	"log"
	"runtime"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"time"
)

type loadConfig struct {
	gcEvery    time.Duration
	allocRate  int64
	stwEvery   time.Duration
	burst      int
	burstEvery time.Duration
	regions    time.Duration
}

// loadFlags registers -gc-every, -alloc-rate, -stw-every, -burst,
// -burst-every and -regions on the default flag set.
func loadFlags() *loadConfig {
	c := &loadConfig{}
	flag.DurationVar(&c.gcEvery, "gc-every", 0, "force a garbage collection (runtime.GC) this often (0 = never)")
	flag.Int64Var(&c.allocRate, "alloc-rate", 0, "bytes per second of garbage to allocate, keeping a few MB live (0 = none)")
	flag.DurationVar(&c.stwEvery, "stw-every", 0, "stop the world (runtime.ReadMemStats) this often (0 = never)")
	flag.IntVar(&c.burst, "burst", 0, "goroutines started at once every -burst-every, each doing ~20 µs of CPU")
	flag.DurationVar(&c.burstEvery, "burst-every", 100*time.Millisecond, "period of the -burst goroutine bursts")
	flag.DurationVar(&c.regions, "regions", 0, "run a traced task whose region lasts this long (with a nested region and log lines), over and over (0 = none)")
	return c
}

// start runs the configured workloads until the process exits.
func (c loadConfig) start() {
	if c.gcEvery < 0 || c.allocRate < 0 || c.stwEvery < 0 || c.burst < 0 || c.regions < 0 || (c.burst > 0 && c.burstEvery <= 0) {
		log.Fatal("-gc-every, -alloc-rate, -stw-every, -burst, -regions must be >= 0 and -burst-every > 0")
	}
	every := func(d time.Duration, f func()) {
		if d > 0 {
			go func() {
				for range time.Tick(d) {
					f()
				}
			}()
		}
	}
	every(c.gcEvery, runtime.GC)
	every(c.stwEvery, func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
	})
	if c.burst > 0 {
		n := c.burst
		every(c.burstEvery, func() { burst(n) })
	}
	if c.allocRate > 0 {
		go allocate(c.allocRate)
	}
	if c.regions > 0 {
		go annotate(c.regions)
	}
}

// annotate runs a runtime/trace task over and over, as in cmd/fixture: an
// outer region of span holding an inner one, log lines, so that regions
// are open across the edges of trace windows.
func annotate(span time.Duration) {
	for n := 0; ; n++ {
		ctx, task := trace.NewTask(context.Background(), "fixture-task")
		trace.WithRegion(ctx, "fixture-outer", func() {
			trace.Logf(ctx, "fixture", "task %d begins", n)
			time.Sleep(span / 2)
			trace.WithRegion(ctx, "fixture-inner", func() {
				trace.Log(ctx, "fixture", "inner")
				time.Sleep(span / 2)
			})
		})
		task.End()
	}
}

var burstSink atomic.Uint64

// burst starts n goroutines at once, each spinning ~20 µs.
func burst(n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			x := seed | 1
			for j := 0; j < 10000; j++ {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
			burstSink.Add(x)
		}(uint64(i))
	}
	wg.Wait()
}

const (
	allocChunk = 4 << 10
	liveSlots  = 1024 // 4 MiB kept live: marking has work while allocation goes on
)

var allocLive [liveSlots][]byte

// allocate makes garbage at rate bytes/s in 4 KiB chunks, every ms.
func allocate(rate int64) {
	start := time.Now()
	var done int64
	n := 0
	for now := range time.Tick(time.Millisecond) {
		due := int64(float64(rate)*now.Sub(start).Seconds()) - done
		if most := max(rate/20, allocChunk); due > most {
			done += due - most
			due = most
		}
		for ; due > 0; due -= allocChunk {
			b := make([]byte, allocChunk)
			b[0] = byte(n)
			if n%8 == 0 {
				allocLive[(n/8)%liveSlots] = b
			}
			n++
			done += allocChunk
		}
	}
}
