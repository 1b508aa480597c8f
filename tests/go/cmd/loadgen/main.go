// Command loadgen is a small closed-loop HTTP load generator: CONNS workers
// each send the next GET as soon as the previous answer is read, for
// DURATION, then one JSON line is printed:
//
//	{"requests":N,"rps":..,"p50_ms":..,"p99_ms":..,"errors":N}
//
// requests counts every completed request (errors included); a transport
// error or a status >= 400 is an error. Requests still in flight at the end
// are not counted. Latencies are taken over all completed requests.
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
	flag.Parse()
	if *url == "" || *conns < 1 || *dur <= 0 {
		fmt.Fprintln(os.Stderr, "usage: loadgen -url U [-c CONNS] [-d DURATION]")
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
	}
	tallies := make([]tally, *conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		wg.Add(1)
		go func(t *tally) {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				t0 := time.Now()
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
	errs := 0
	for _, t := range tallies {
		all = append(all, t.lat...)
		errs += t.errors
	}
	slices.Sort(all)
	json.NewEncoder(os.Stdout).Encode(struct {
		Requests int     `json:"requests"`
		RPS      float64 `json:"rps"`
		P50      float64 `json:"p50_ms"`
		P99      float64 `json:"p99_ms"`
		Errors   int     `json:"errors"`
	}{len(all), float64(len(all)) / elapsed.Seconds(), pct(all, 0.50), pct(all, 0.99), errs})
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
