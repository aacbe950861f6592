package engine

import "time"

// Watch is what the fence watchdogs do (the agent's own, every 50 ms, and
// the external watchdog process it arms), backing rule 1 up when the main
// loop is stuck on a slow query or action: SIGKILL a writable Postgres at
// once when its time is nearly out, else keep the external watchdog armed
// to do so at the same point, so that a hung or dead agent cannot leave a
// primary writing past its lease.
type Watch struct {
	Kill bool          // kill the postmaster now
	Arm  time.Duration // arm the external watchdog to kill it after this long (0: disarm)
}

// DecideWatchdog is the watchdogs' rule: writable is the last observed
// Postgres (running, not in recovery), leaseHeld whether a leader lease is
// held, safeLeft the lease's (or failsafe window's) time left. Both act
// at half the fence margin, after the engine's own fence.
func DecideWatchdog(writable, leaseHeld bool, safeLeft time.Duration, p Params) Watch {
	at := p.FenceMargin / 2
	switch {
	case !writable:
		return Watch{}
	case safeLeft <= at:
		return Watch{Kill: true}
	case leaseHeld:
		return Watch{Arm: safeLeft - at}
	}
	return Watch{}
}
