// Command loadgen is a small HTTP load generator. Closed loop (the default):
// CONNS workers each send the next GET as soon as the previous answer is
// read, for DURATION. Open loop (-rps R): requests are due at a fixed rate R
// whatever the answers do, CONNS workers take them in turn, and a latency is
// measured from when the request was due, so a stalled server shows up as
// latency instead of fewer requests (no coordinated omission). Then one
// JSON line is printed:
//
//	{"requests":N,"rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,"errors":N,"late":N}
//
// requests counts every completed request (errors included); a transport
// error or a status >= 400 is an error. Requests still in flight at the end
// are not counted. Latencies are taken over all completed requests. late
// counts open-loop requests that started more than 1 ms after they were
// due (every worker was busy).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	conns := flag.Int("c", 8, "concurrent connections (workers)")
	dur := flag.Duration("d", 10*time.Second, "duration")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	rps := flag.Float64("rps", 0, "open loop: requests due per second (0 = closed loop)")
	flag.Parse()
	if *url == "" || *conns < 1 || *dur <= 0 || *rps < 0 {
		fmt.Fprintln(os.Stderr, "usage: loadgen -url U [-c CONNS] [-d DURATION] [-rps R]")
		os.Exit(2)
	}

	// One kept-alive connection per worker, like wrk.
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			MaxIdleConns:        *conns,
			MaxIdleConnsPerHost: *conns,
			DisableCompression:  true,
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()

	type tally struct {
		lat    []time.Duration
		errors int
		late   int
	}
	tallies := make([]tally, *conns)
	var wg sync.WaitGroup
	start := time.Now()
	// Open loop: a schedule of due times the workers take from. Its buffer
	// holds the whole run, so the schedule never waits for the workers.
	var due chan time.Time
	if *rps > 0 {
		n := int(*rps*dur.Seconds()) + 1
		due = make(chan time.Time, n)
		go func() {
			defer close(due)
			interval := time.Duration(float64(time.Second) / *rps)
			for i := 0; i < n; i++ {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				due <- at
			}
		}()
	}
	for i := range tallies {
		wg.Add(1)
		go func(t *tally) {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				if due != nil {
					at, ok := <-due
					if !ok {
						return
					}
					if time.Since(at) > time.Millisecond {
						t.late++
					}
					t0 = at
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				resp, err := client.Do(req)
				if err == nil {
					// Read the whole body so the connection is reused.
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if ctx.Err() != nil {
					return // cut by the end of the run, not a real answer
				}
				t.lat = append(t.lat, time.Since(t0))
				if err != nil || resp.StatusCode >= 400 {
					t.errors++
				}
			}
		}(&tallies[i])
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	errs, late := 0, 0
	for _, t := range tallies {
		all = append(all, t.lat...)
		errs += t.errors
		late += t.late
	}
	slices.Sort(all)
	json.NewEncoder(os.Stdout).Encode(struct {
		Requests int     `json:"requests"`
		RPS      float64 `json:"rps"`
		P50      float64 `json:"p50_ms"`
		P90      float64 `json:"p90_ms"`
		P99      float64 `json:"p99_ms"`
		Max      float64 `json:"max_ms"`
		Errors   int     `json:"errors"`
		Late     int     `json:"late"`
	}{len(all), float64(len(all)) / elapsed.Seconds(), pct(all, 0.50), pct(all, 0.90), pct(all, 0.99), pct(all, 1), errs, late})
}

// pct is the nearest-rank percentile of sorted latencies, in milliseconds.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / 1e6
}
