// Command legacy is a minimal target built with OLD Go toolchains
// (GOTOOLCHAIN=go1.21.13 / go1.22.12 / go1.23.12 / go1.25.x go build), so that
// tests meet the real behaviour of those versions: Go 1.21 writes the old v1
// trace format, Go <= 1.22 answers 400 when ?seconds= reaches the server's
// WriteTimeout. It must stay stdlib-only and compile with Go 1.21.
//
// Contract (same as cmd/fixture): one line "listening on http://HOST:PORT"
// on stdout once bound; logs on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/* on DefaultServeMux, as most services do
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	pairs := flag.Int("pairs", 0, "goroutine pairs ping-ponging on unbuffered channels")
	rate := flag.Float64("rate", 0, "ping-pongs per second per pair (0 = as fast as possible)")
	writeTimeout := flag.Duration("write-timeout", 0, "http.Server.WriteTimeout (0 = none)")
	loadCfg := loadFlags() // workloads.go
	flag.Parse()

	for i := 0; i < *pairs; i++ {
		go runPair(*rate)
	}
	loadCfg.start()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "listening on http://%s\n", ln.Addr())
	log.Printf("legacy fixture built with %s", runtime.Version())

	srv := &http.Server{WriteTimeout: *writeTimeout, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// runPair ping-pongs between two goroutines over unbuffered channels, at
// rate round trips per second (paced by a 1-10 ms tick) or flat out.
func runPair(rate float64) {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	if rate <= 0 {
		for i := 0; ; i++ {
			ping <- i
			<-pong
		}
	}
	tick := time.Duration(float64(time.Second) / rate)
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	if tick > 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	burst := int64(rate * 0.05) // make up at most 50 ms after a stall
	if burst < 1 {
		burst = 1
	}
	start := time.Now()
	var done int64
	for now := range time.Tick(tick) {
		due := int64(rate*now.Sub(start).Seconds()) - done
		if due > burst {
			done += due - burst
			due = burst
		}
		for ; due > 0; due-- {
			ping <- int(done)
			<-pong
			done++
		}
	}
}
