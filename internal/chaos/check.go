package chaos

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput / regOutput are the register model's operations.
type regInput struct {
	f        string
	key      int
	arg, new int64
}

type regOutput struct {
	value   int64
	ok      bool // cas applied
	unknown bool
}

// RegisterModel is a single register per key starting at 0: read, write,
// and compare-and-set. An operation of unknown outcome has an infinite
// return time, so the checker may place it anywhere after its call,
// including after everything (not happened); an unknown cas may have
// applied or not.
var RegisterModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			by[k] = append(by[k], op)
		}
		keys := make([]int, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		sort.Ints(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(int64), input.(regInput), output.(regOutput)
		switch in.f {
		case "read":
			return out.value == s, s
		case "write":
			return true, in.arg
		case "cas":
			if out.unknown {
				if s == in.arg {
					return true, in.new
				}
				return true, s
			}
			if out.ok {
				return s == in.arg, in.new
			}
			return s != in.arg, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch in.f {
		case "read":
			return fmt.Sprintf("k%d read -> %d", in.key, out.value)
		case "write":
			return fmt.Sprintf("k%d write %d", in.key, in.arg)
		default:
			return fmt.Sprintf("k%d cas %d->%d: ok=%v unknown=%v", in.key, in.arg, in.new, out.ok, out.unknown)
		}
	},
}

// CheckRegister checks the register history for linearizability.
// Failed operations and reads without an answer are left out; writes and
// cas of unknown outcome are kept with an infinite return time.
func CheckRegister(ops []Op, timeout time.Duration) (porcupine.CheckResult, int) {
	var h []porcupine.Operation
	for _, op := range ops {
		if op.Workload != "register" || op.Outcome == Fail {
			continue
		}
		if op.F == "read" && op.Outcome != OK {
			continue
		}
		in := regInput{f: op.F, key: op.Key, arg: op.Arg1, new: op.Arg2}
		out := regOutput{value: op.Result, ok: op.ResultOK, unknown: op.Outcome == Unknown}
		ret := int64(op.Return)
		if op.Outcome == Unknown {
			ret = math.MaxInt64
		}
		h = append(h, porcupine.Operation{ClientId: op.Client, Input: in, Call: int64(op.Call), Output: out, Return: ret})
	}
	return porcupine.CheckOperationsTimeout(RegisterModel, h, timeout), len(h)
}

// CheckBankReads returns the reads that saw a wrong total or a negative
// balance.
func CheckBankReads(ops []Op) []Op {
	var bad []Op
	want := int64(Accounts * InitialBalance)
	for _, op := range ops {
		if op.Workload == "bank" && op.F == "total" && op.Outcome == OK && (op.Result != want || op.Arg1 < 0) {
			bad = append(bad, op)
		}
	}
	return bad
}

// AckedAppends are the ids whose insert was acknowledged.
func AckedAppends(ops []Op) []int64 {
	var ids []int64
	for _, op := range ops {
		if op.Workload == "append" && op.Outcome == OK {
			ids = append(ids, op.Arg1)
		}
	}
	return ids
}

// Missing returns the ids of want absent from have.
func Missing(want, have []int64) []int64 {
	set := make(map[int64]struct{}, len(have))
	for _, x := range have {
		set[x] = struct{}{}
	}
	var miss []int64
	for _, x := range want {
		if _, ok := set[x]; !ok {
			miss = append(miss, x)
		}
	}
	return miss
}

// Window is a stretch of time with no acknowledged write.
type Window struct {
	From  time.Duration `json:"from"`
	To    time.Duration `json:"to"`
	Fault string        `json:"fault,omitempty"`
}

// Len is the window's duration.
func (w Window) Len() time.Duration { return w.To - w.From }

// Unavailability finds gaps longer than min between consecutive
// acknowledged writes (of any workload).
func Unavailability(ops []Op, min time.Duration) []Window {
	var rets []time.Duration
	for _, op := range ops {
		if op.Outcome == OK && op.F != "read" && op.F != "total" {
			rets = append(rets, op.Return)
		}
	}
	sort.Slice(rets, func(i, j int) bool { return rets[i] < rets[j] })
	var out []Window
	for i := 1; i < len(rets); i++ {
		if rets[i]-rets[i-1] > min {
			out = append(out, Window{From: rets[i-1], To: rets[i]})
		}
	}
	return out
}
