package flyreplay

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of the fly-replay protocol.
const (
	// HeaderReplay is the response header that asks the edge to replay
	// the request elsewhere: "region=<r>;state=<s>".
	HeaderReplay = "fly-replay"
	// HeaderReplaySrc is set by the edge on a replayed request: where it
	// came from ("instance=<id>;region=<r>;t=<µs>;state=<s>").
	HeaderReplaySrc = "fly-replay-src"
	// HeaderReplayFailed is set by the edge when a replay found no
	// target and the request came back to its origin; such a request
	// cannot be replayed again.
	HeaderReplayFailed = "fly-replay-failed"
)

// Source is the parsed fly-replay-src header of a replayed request.
type Source struct {
	Instance string    // the instance that asked for the replay
	Region   string    // its region
	Time     time.Time // when it asked (t=, microseconds since the epoch); zero if absent
	State    string    // the state it attached (e.g. "captured_write")
}

// ReplaySource parses r's fly-replay-src header; ok is false when the
// request was not replayed (no header, or nothing in it we understand).
func ReplaySource(r *http.Request) (src Source, ok bool) {
	for k, v := range params(r.Header.Get(HeaderReplaySrc)) {
		switch k {
		case "instance":
			src.Instance, ok = v, true
		case "region":
			src.Region, ok = v, true
		case "state":
			src.State, ok = v, true
		case "t":
			if us, err := strconv.ParseInt(v, 10, 64); err == nil && us > 0 {
				src.Time, ok = time.UnixMicro(us), true
			}
		}
	}
	return src, ok
}

// Failed is the parsed fly-replay-failed header of a request that came
// back to its origin because the replay could not be delivered.
type Failed struct {
	Region       string // the region the replay asked for
	Instance     string
	App          string
	ReplaySource string // replay_source
	Reason       string // timeout, retries_exhausted or no_candidate
	Elapsed      time.Duration
}

// ReplayFailed parses r's fly-replay-failed header. Any non-empty
// header counts (ok true), even one with no fields we know.
func ReplayFailed(r *http.Request) (f Failed, ok bool) {
	h := r.Header.Get(HeaderReplayFailed)
	if strings.TrimSpace(h) == "" {
		return f, false
	}
	for k, v := range params(h) {
		switch k {
		case "region":
			f.Region = v
		case "instance":
			f.Instance = v
		case "app":
			f.App = v
		case "replay_source":
			f.ReplaySource = v
		case "reason":
			f.Reason = v
		case "elapsed_ms":
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
				f.Elapsed = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return f, true
}

// params iterates over "k=v;k=v" (keys lower-cased, spaces and double
// quotes around values trimmed); elements without '=' are skipped.
func params(h string) func(yield func(k, v string) bool) {
	return func(yield func(k, v string) bool) {
		for part := range strings.SplitSeq(h, ";") {
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			k = strings.ToLower(strings.TrimSpace(k))
			v = strings.TrimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if k != "" && !yield(k, v) {
				return
			}
		}
	}
}
