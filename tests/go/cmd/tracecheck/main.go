// Command tracecheck parses Go execution traces completely and prints one
// JSON line per file, so that Rust tests can check captured windows with
// Go's own parser:
//
//	{"file":"w.trace","ok":true,"error":"","events":1234,"first_ns":..,
//	 "last_ns":..,"sync_events":2,"checker":"x/exp/trace","go_version":"1.26","bytes":5678}
//
// first_ns/last_ns are Event.Time() of the first and last event: the
// trace's own clock in nanoseconds (shared by all traces of one process).
// The exit status is 0 when every file is ok, 1 otherwise (2 on usage).
//
// golang.org/x/exp/trace reads every format from Go 1.11 to Go 1.26. For a
// header version it does not know (a future Go), the file is handed to
// `go tool trace -d=parsed` of the go command in PATH instead; then only
// ok/error are filled in and checker says "go tool trace".
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"golang.org/x/exp/trace"
)

type result struct {
	File       string `json:"file"`
	OK         bool   `json:"ok"`
	Error      string `json:"error"`
	Events     int64  `json:"events"`
	FirstNs    int64  `json:"first_ns"`
	LastNs     int64  `json:"last_ns"`
	SyncEvents int64  `json:"sync_events"`
	Checker    string `json:"checker"`
	GoVersion  string `json:"go_version"` // from the header, "" if none
	Bytes      int64  `json:"bytes"`
}

var headerRE = regexp.MustCompile(`^go 1\.(\d+) trace\x00\x00\x00`)

func main() {
	checker := flag.String("checker", "auto", "auto (x/exp/trace, go tool trace for unknown versions), xexp or gotool")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tracecheck [-checker auto|xexp|gotool] FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || (*checker != "auto" && *checker != "xexp" && *checker != "gotool") {
		flag.Usage()
		os.Exit(2)
	}
	allOK := true
	enc := json.NewEncoder(os.Stdout)
	for _, f := range flag.Args() {
		res := check(f, *checker)
		allOK = allOK && res.OK
		enc.Encode(res)
	}
	if !allOK {
		os.Exit(1)
	}
}

func check(file, checker string) result {
	res := result{File: file}
	data, err := os.ReadFile(file)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Bytes = int64(len(data))
	if m := headerRE.FindSubmatch(data); m != nil {
		res.GoVersion = "1." + string(m[1])
	}
	if checker != "gotool" {
		res.Checker = "x/exp/trace"
		err = parse(data, &res)
		if err == nil || checker == "xexp" || !strings.Contains(err.Error(), "unsupported trace version") {
			res.OK = err == nil
			if err != nil {
				res.Error = err.Error()
			}
			return res
		}
	}
	res = result{File: file, Bytes: res.Bytes, GoVersion: res.GoVersion, Checker: "go tool trace"}
	if err := goToolTrace(file); err != nil {
		res.Error = err.Error()
	} else {
		res.OK = true
	}
	return res
}

// parse reads every event; a trace is only known to be whole once the
// reader reaches io.EOF without an error.
func parse(data []byte, res *result) error {
	r, err := trace.NewReader(bytes.NewReader(data))
	if err != nil {
		return err
	}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		t := int64(ev.Time())
		if res.Events == 0 {
			res.FirstNs = t
		}
		res.LastNs = t
		res.Events++
		if ev.Kind() == trace.EventSync {
			res.SyncEvents++
		}
	}
}

// goToolTrace runs the go command's own parser; it exits non-zero with the
// reason on stderr when the trace is bad.
func goToolTrace(file string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("go", "tool", "trace", "-d=parsed", file)
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(lastLine(stderr.String()))
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("go tool trace: %s", msg)
	}
	return nil
}

func lastLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(strings.TrimSpace(s)))
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	return last
}
