package edge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names. The fly-* ones are the protocol apps already speak; the
// petrel-* ones are internal to petrel's edges and are stripped from every
// client request (see stripInternal).
const (
	HeaderReplay        = "Fly-Replay"        // response: replay this request elsewhere
	HeaderReplaySrc     = "Fly-Replay-Src"    // request, to the target: who asked for the replay
	HeaderReplayFailed  = "Fly-Replay-Failed" // request (fallback) and response: why a replay failed
	HeaderPreferRegion  = "Fly-Prefer-Region" // client request: serve in this region if it can
	HeaderForceRegion   = "Fly-Force-Region"  // client request: serve in this region or fail
	HeaderRegion        = "Fly-Region"        // response: the region that served the request
	headerEdgeAuth      = "Petrel-Edge-Auth"  // edge to edge: HMAC over the request (auth.go)
	headerEdgeHops      = "Petrel-Edge-Hops"  // edge to edge: replays so far
	headerEdgeKind      = "Petrel-Edge-Kind"  // edge to edge: replay, shed, force, ryw
	headerEdgeInstance  = "Petrel-Edge-Instance"
	headerEdgeOrigin    = "Petrel-Edge-Origin" // edge to edge: the asking edge's region
	internalPrefixEdge  = "Petrel-Edge-"
	replaySrcStateLimit = 1024
)

// Fallback is what to do when a replay cannot be delivered.
type Fallback string

// Fallbacks (fly-replay's fallback=).
const (
	FallbackNone Fallback = ""
	// FallbackForceSelf sends the request back to the instance that asked
	// for the replay, with fly-replay-failed, whatever its state.
	FallbackForceSelf Fallback = "force_self"
	// FallbackPreferSelf sends it back to that instance if it is still
	// healthy, else to another instance of its region.
	FallbackPreferSelf Fallback = "prefer_self"
)

// Directive is a parsed fly-replay response header.
type Directive struct {
	Regions        []string      // region= (one, or a quoted comma list); "any" is AnyRegion
	AnyRegion      bool          // region=any
	Instance       string        // instance=: exactly this instance
	PreferInstance string        // prefer_instance=: this instance when it can
	Elsewhere      bool          // elsewhere=true: never the asking instance
	State          string        // state=: passed to the target in fly-replay-src
	Timeout        time.Duration // timeout=: how long to look for a target (0: the edge's default)
	Fallback       Fallback
}

// ErrBadDirective is wrapped by ParseReplay's errors.
var ErrBadDirective = errors.New("bad fly-replay header")

// ParseReplay parses "region=scl;state=captured_write" and its relatives.
// Keys are case-insensitive; unknown keys (app=, and future ones) are
// ignored so apps written for a newer protocol still get their replay.
// A value may be double-quoted (region="scl,ord"). The JSON form
// (application/vnd.fly.replay+json) is not supported.
func ParseReplay(v string) (Directive, error) {
	var d Directive
	v = strings.TrimSpace(v)
	if v == "" {
		return d, fmt.Errorf("%w: empty", ErrBadDirective)
	}
	if len(v) > 4096 {
		return d, fmt.Errorf("%w: longer than 4096 bytes", ErrBadDirective)
	}
	for _, part := range splitParams(v) {
		k, val, ok := strings.Cut(part, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "" {
			continue
		}
		if !ok {
			return d, fmt.Errorf("%w: %q has no value", ErrBadDirective, part)
		}
		val = unquote(strings.TrimSpace(val))
		switch k {
		case "region":
			for _, r := range strings.Split(val, ",") {
				r = strings.ToLower(strings.TrimSpace(r))
				switch {
				case r == "":
				case r == "any":
					d.AnyRegion = true
				case !validToken(r):
					return d, fmt.Errorf("%w: region %q", ErrBadDirective, r)
				default:
					d.Regions = append(d.Regions, r)
				}
			}
		case "instance":
			if !validToken(val) {
				return d, fmt.Errorf("%w: instance %q", ErrBadDirective, val)
			}
			d.Instance = val
		case "prefer_instance":
			if !validToken(val) {
				return d, fmt.Errorf("%w: prefer_instance %q", ErrBadDirective, val)
			}
			d.PreferInstance = val
		case "elsewhere":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return d, fmt.Errorf("%w: elsewhere=%q", ErrBadDirective, val)
			}
			d.Elsewhere = b
		case "state":
			if len(val) > replaySrcStateLimit || strings.ContainsAny(val, ";\r\n") {
				return d, fmt.Errorf("%w: state must be under %d bytes, without ';'", ErrBadDirective, replaySrcStateLimit)
			}
			d.State = val
		case "timeout":
			t, err := parseTimeout(val)
			if err != nil {
				return d, fmt.Errorf("%w: timeout=%q: %v", ErrBadDirective, val, err)
			}
			d.Timeout = t
		case "fallback":
			switch Fallback(strings.ToLower(val)) {
			case FallbackForceSelf, FallbackPreferSelf:
				d.Fallback = Fallback(strings.ToLower(val))
			default:
				return d, fmt.Errorf("%w: fallback=%q (want force_self or prefer_self)", ErrBadDirective, val)
			}
		}
	}
	if len(d.Regions) == 0 && !d.AnyRegion && d.Instance == "" && d.PreferInstance == "" && !d.Elsewhere {
		return d, fmt.Errorf("%w: names no region or instance", ErrBadDirective)
	}
	return d, nil
}

// splitParams splits on ';' outside double quotes.
func splitParams(v string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			inQ = !inQ
		case ';':
			if !inQ {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// validToken accepts region and instance ids: letters, digits, '-', '_',
// '.', at most 64 bytes.
func validToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// parseTimeout takes a Go duration ("500ms", "5s") or a bare number of
// seconds, as Fly's docs write both; at most a minute.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0, err
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d <= 0 || d > time.Minute {
		return 0, errors.New("want a duration above 0 and at most 1m")
	}
	return d, nil
}

// Source is the fly-replay-src header a replay's target receives.
type Source struct {
	Instance string
	Region   string
	Time     time.Time
	State    string
}

// String formats "instance=<id>;region=<r>;t=<µs since epoch>;state=<s>".
func (s Source) String() string {
	out := "instance=" + s.Instance + ";region=" + s.Region + ";t=" + strconv.FormatInt(s.Time.UnixMicro(), 10)
	if s.State != "" {
		out += ";state=" + s.State
	}
	return out
}

// Failure is the fly-replay-failed header: on a fallback request to the
// asking instance, and on the error response when there is no fallback.
type Failure struct {
	Instance string // the instance asked for, if any
	Region   string // the region(s) asked for
	Source   string // replay_source: the instance that asked
	Reason   Reason
	Elapsed  time.Duration
}

// Reason says why a replay failed.
type Reason string

// Reasons, Fly's three first.
const (
	ReasonTimeout          Reason = "timeout"           // no target answered in time
	ReasonRetriesExhausted Reason = "retries_exhausted" // targets refused every try
	ReasonNoCandidate      Reason = "no_candidate"      // nothing matches the directive
	ReasonBodyTooLarge     Reason = "body_too_large"    // the request body was not kept (over the replay limit)
	ReasonHopLimit         Reason = "hop_limit"         // replayed too many times (a loop)
	ReasonInvalid          Reason = "invalid"           // the fly-replay header does not parse
	ReasonFallbackReplay   Reason = "fallback_replay"   // a fallback request asked to replay again
	ReasonUpgrade          Reason = "upgrade"           // a protocol upgrade cannot be replayed
)

// String formats the header value.
func (f Failure) String() string {
	return "instance=" + f.Instance + ";region=" + f.Region + ";replay_source=" + f.Source +
		";reason=" + string(f.Reason) + ";elapsed_ms=" + strconv.FormatInt(f.Elapsed.Milliseconds(), 10)
}
