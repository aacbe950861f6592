//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relay moves the bytes of routed connections on one goroutine with its
// own epoll set, as HAProxy's event loop does, instead of two goroutines
// per connection woken through Go's poller. On two shared cores the
// poller's way costs a wake-up of another thread (futex) and sysmon's
// 20 µs ticks (timer interrupts) per few queries; the relay's way is one
// epoll_wait per burst of events, a read and a write per message.
//
// Rules (the loop's invariants):
//  1. Once a pair is handed over, the proxy's descriptors of its sockets
//     are closed (which takes them out of Go's poller: left there, every
//     segment would wake it) and only the loop reads, writes or closes
//     the relay's duplicates (the idle watcher keeps one more, for
//     TCP_INFO only). Anyone else ends a pair through kill (pconn.close
//     does); the loop closes the descriptors, then the pair's done.
//  2. Bytes read from one side are written to the other before that side
//     is read again. What the other's send buffer cannot take waits in
//     its out, and the reading side is not read until out drains, so a
//     slow reader holds back a fast writer (TCP's own back-pressure) and
//     a pair never holds more than one buffer per side.
//  3. While any pair has had traffic, the loop waits in epoll_wait
//     without telling the scheduler (a raw syscall: no hand-off of its P,
//     no other thread woken per event) for at most relayRawWaitMS; after
//     a wait that long with nothing, it waits as a normal blocking
//     syscall, so an idle proxy holds no P. A raw wait keeps its P, so
//     the proxy runs its relays only with a P to spare for everything
//     else (DefaultProcs adds one per relay).
//  4. Events carry a side's id, never reused, not its descriptor number:
//     an event still queued for a closed side is dropped even if another
//     socket got the same number meanwhile.
//  5. When the proxy has one relay per CPU it may run on, each relay's
//     thread is pinned to its own CPU, and a connection goes to the relay
//     pinned where the kernel last took in its client's segments
//     (SO_INCOMING_CPU); otherwise connections go round robin. Unpinned,
//     the scheduler put both busy relays on one CPU at times and moved
//     them between CPUs, away from the caches holding their bytes.
type relay struct {
	ep   int // the epoll set
	cpu  int // the CPU the loop's thread is pinned to, or -1 (rule 5)
	wake int // eventfd: pipe and stop write to it

	mu       sync.Mutex // guards the following fields
	queue    []*relayPair
	kills    []*relayPair
	stopping bool // the loop is asked to stop
	stopped  bool // the loop has ended; ep and wake are closed

	shortWrites atomic.Int64 // writes the far side took only part of (rule 2)
}

// relayCount is how many relays a proxy runs, each on its own thread
// when busy: one per CPU, as HAProxy runs a thread per CPU, up to 4. With
// one, every connection's messages queue behind each other on one thread;
// two measured about 15 % more select-only TPS than one on 2 cores
// (pgbench -S -c4 -j2), ahead of HAProxy.
func relayCount() int { return min(runtime.NumCPU(), 4) }

// relayRawWaitMS bounds one raw wait (rule 3): how long the relay's P is
// kept from the rest of the process at most while nothing moves, and how
// long a stop-the-world waits at most if its signal does not land.
const relayRawWaitMS = 5

type relayPair struct {
	relay  *relay
	fds    [2]int
	done   chan struct{} // closed once the loop has closed both fds
	killed bool          // guarded by relay.mu
	sides  [2]*relaySide // the loop's
}

type relaySide struct {
	id     uint64
	fd     int
	peer   *relaySide
	pair   *relayPair
	out    []byte // read from peer, not yet written to fd
	events uint32 // what the epoll set asks of fd
}

// newRelay makes the epoll set.
func newRelay() (*relay, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating the relay's epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(ep)
		return nil, fmt.Errorf("creating the relay's eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		_ = unix.Close(ep)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("adding the relay's eventfd: %w", err)
	}
	return &relay{ep: ep, wake: wake, cpu: -1}, nil
}

// pipe relays pc's two sockets until either side ends, pc.close is
// called or the relay stops. It returns false, having changed nothing,
// when the relay cannot take them (not sockets, or the relay has
// stopped: its loop failed, or the proxy is stopping).
func (r *relay) pipe(pc *pconn) bool {
	r.mu.Lock()
	gone := r.stopped || r.stopping
	r.mu.Unlock()
	if gone {
		return false
	}
	a, err := dupConn(pc.client)
	if err != nil {
		return false
	}
	b, err := dupConn(pc.server)
	if err != nil {
		_ = unix.Close(a)
		return false
	}
	pr := &relayPair{relay: r, fds: [2]int{a, b}, done: make(chan struct{})}
	if !pc.handTo(pr) { // already closed
		_ = unix.Close(a)
		_ = unix.Close(b)
		return true
	}
	_ = pc.client.Close() // rule 1
	_ = pc.server.Close()
	r.mu.Lock()
	if r.stopped || r.stopping {
		r.mu.Unlock()
		_ = unix.Close(a)
		_ = unix.Close(b)
		return true
	}
	r.queue = append(r.queue, pr)
	r.poke() // under mu: the loop closes wake only under mu, after stopped
	r.mu.Unlock()
	<-pr.done
	return true
}

// kill ends pr, whether or not the loop has taken it in yet.
func (r *relay) kill(pr *relayPair) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || pr.killed {
		return
	}
	select {
	case <-pr.done:
		return // ended already (pipe's own pconn.close after the end)
	default:
	}
	pr.killed = true
	r.kills = append(r.kills, pr)
	r.poke()
}

// poke wakes the loop. Called with mu held and the loop not stopped.
func (r *relay) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(r.wake, one[:])
}

// run is the loop. It returns when ctx ends, having closed every pair,
// or on an epoll error nothing can recover from (then it ends its pairs
// and later pipe calls return false, so the proxy copies instead).
func (r *relay) run(ctx context.Context) error {
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return errors.New("the relay has stopped already")
	}
	if r.cpu >= 0 {
		// Never unlocked: the goroutine ends locked, so the runtime ends
		// the pinned thread with it (or parks it for good, if it is the
		// main thread) rather than run other goroutines on one CPU. A
		// locked thread asks the runtime's template thread for any new
		// thread, so none inherits the affinity.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(r.cpu)
		// On failure the loop runs unpinned; connections still map by cpu.
		_ = unix.SchedSetaffinity(0, &set)
	}
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.stopped {
			r.stopping = true
			r.poke()
		}
	})
	defer stop()
	sides := map[uint64]*relaySide{}
	var nextID uint64 = 1 // 0 is the eventfd
	defer r.shutdown(sides)
	evs := make([]unix.EpollEvent, 128)
	buf := make([]byte, 64<<10)
	raw := false
	for {
		var n int
		var err error
		if raw && len(sides) > 0 {
			n, err = rawEpollWait(r.ep, evs, relayRawWaitMS)
		} else {
			n, err = unix.EpollWait(r.ep, evs, -1)
		}
		if errors.Is(err, unix.EINTR) {
			// Often a preemption request (sysmon, a stop-the-world): a raw
			// wait gave the scheduler no chance, so give it one now.
			runtime.Gosched()
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for events: %w", err) // EBADF or EINVAL
		}
		raw = n > 0
		ended := false
		for i := range n {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if id == 0 {
				if !r.admit(sides, &nextID) {
					return nil
				}
				continue
			}
			s := sides[id]
			if s == nil {
				continue // rule 4: its pair ended earlier in this batch
			}
			ev := evs[i].Events
			switch {
			case ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0:
				// Reset or shut both ways; what it sent before (a
				// backend's last ErrorResponse, say) still goes on.
				r.salvage(s, ev, buf)
				r.end(sides, s)
			case ev&unix.EPOLLOUT != 0 && len(s.out) > 0 && !r.flush(s):
				r.end(sides, s)
			case ev&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 && len(s.peer.out) == 0 && !r.forward(s, buf):
				r.end(sides, s)
			default:
				continue
			}
			ended = ended || sides[s.id] == nil
		}
		if ended {
			// close(done) made a pipe caller runnable on this P, which a
			// raw wait would not give up.
			runtime.Gosched()
		}
	}
}

// salvage passes on, without blocking, what s's peer still had to be
// given and what s had received before it failed: a socket reset after
// its last write reports the error before the bytes are read.
func (r *relay) salvage(s *relaySide, ev uint32, buf []byte) {
	p := s.peer
	if len(p.out) > 0 {
		w, err := rawWrite(p.fd, p.out)
		if err != nil || w < len(p.out) {
			return
		}
		p.out = nil
	}
	if ev&unix.EPOLLIN == 0 {
		return
	}
	for range 64 { // bounded: a reset socket holds at most its receive buffer
		n, err := rawRead(s.fd, buf)
		if err != nil || n == 0 {
			return
		}
		if w, err := rawWrite(p.fd, buf[:n]); err != nil || w < n {
			return
		}
	}
}

// admit takes the queued pairs into the epoll set and ends the killed
// ones; false when the loop is to stop.
func (r *relay) admit(sides map[uint64]*relaySide, nextID *uint64) bool {
	var b [8]byte
	_, _ = unix.Read(r.wake, b[:])
	r.mu.Lock()
	q, kills := r.queue, r.kills
	r.queue, r.kills = nil, nil
	killed := map[*relayPair]bool{}
	for _, pr := range q {
		killed[pr] = pr.killed
	}
	stopping := r.stopping
	r.mu.Unlock()
	for _, pr := range q {
		if killed[pr] {
			_ = unix.Close(pr.fds[0])
			_ = unix.Close(pr.fds[1])
			close(pr.done)
			continue
		}
		a := &relaySide{id: *nextID, fd: pr.fds[0], pair: pr}
		b := &relaySide{id: *nextID + 1, fd: pr.fds[1], pair: pr, peer: a}
		a.peer = b
		pr.sides = [2]*relaySide{a, b}
		*nextID += 2
		sides[a.id], sides[b.id] = a, b
		for _, s := range []*relaySide{a, b} {
			s.events = unix.EPOLLIN | unix.EPOLLRDHUP
			if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, s.fd, s.epollEvent()); err != nil {
				r.end(sides, s)
				break
			}
		}
	}
	for _, pr := range kills {
		if s := pr.sides[0]; s != nil && sides[s.id] == s {
			r.end(sides, s)
		}
	}
	return !stopping
}

// forward reads what s has and writes it to its peer; false when the
// pair is to end (EOF or an error on either side).
func (r *relay) forward(s *relaySide, buf []byte) bool {
	n, err := rawRead(s.fd, buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true // level-triggered: a later wait reports what is left
	case err != nil || n == 0:
		return false
	}
	p := s.peer
	w, err := rawWrite(p.fd, buf[:n])
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		w = 0
	case err != nil:
		return false
	}
	if w < n {
		r.shortWrites.Add(1)
		p.out = append(p.out[:0], buf[w:n]...)
		return r.update(s) && r.update(p)
	}
	return true
}

// flush writes s.out on; false when the pair is to end.
func (r *relay) flush(s *relaySide) bool {
	w, err := rawWrite(s.fd, s.out)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true
	case err != nil:
		return false
	}
	s.out = s.out[w:]
	if len(s.out) > 0 {
		return true
	}
	s.out = nil
	return r.update(s) && r.update(s.peer)
}

// update sets what the epoll set asks of s from the pair's state: read s
// only while its peer has nothing waiting (rule 2), and wait for room to
// write while s has.
func (r *relay) update(s *relaySide) bool {
	var want uint32
	if len(s.peer.out) == 0 {
		want |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if len(s.out) > 0 {
		want |= unix.EPOLLOUT
	}
	if want == s.events {
		return true
	}
	s.events = want
	return unix.EpollCtl(r.ep, unix.EPOLL_CTL_MOD, s.fd, s.epollEvent()) == nil
}

// end closes both sides of s's pair and tells its pipe call. The fds
// are removed from the epoll set first: epoll forgets a socket only when
// its last descriptor closes, and the idle watcher may hold one more.
func (r *relay) end(sides map[uint64]*relaySide, s *relaySide) {
	for _, x := range []*relaySide{s, s.peer} {
		if _, ok := sides[x.id]; !ok {
			continue
		}
		delete(sides, x.id)
		_ = unix.EpollCtl(r.ep, unix.EPOLL_CTL_DEL, x.fd, nil)
		_ = unix.Close(x.fd)
	}
	close(s.pair.done)
}

// shutdown ends every pair, queued ones included, and closes the relay.
func (r *relay) shutdown(sides map[uint64]*relaySide) {
	for _, s := range sides {
		if _, ok := sides[s.id]; ok {
			r.end(sides, s)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pr := range r.queue {
		_ = unix.Close(pr.fds[0])
		_ = unix.Close(pr.fds[1])
		close(pr.done)
	}
	r.queue = nil
	r.stopped = true
	_ = unix.Close(r.ep)
	_ = unix.Close(r.wake)
}

// close releases a relay whose loop never ran.
func (r *relay) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.stopped = true
		_ = unix.Close(r.ep)
		_ = unix.Close(r.wake)
	}
}

func (s *relaySide) epollEvent() *unix.EpollEvent {
	return &unix.EpollEvent{Events: s.events, Fd: int32(uint32(s.id)), Pad: int32(uint32(s.id >> 32))}
}

// dupConn duplicates c's socket descriptor, close-on-exec and
// non-blocking (the flag is the socket's, shared with Go's descriptor,
// which set it already; set again because a raw read on a blocking
// descriptor would hold a P for good).
func dupConn(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// rawEpollWait is epoll_pwait with no signal mask, as a raw syscall
// (rule 3).
func rawEpollWait(ep int, evs []unix.EpollEvent, msec int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket
// as raw syscalls: they never block, so the scheduler need not know.
func rawRead(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// pinRelays pins rs to the CPUs the process may run on, one each, when
// there are exactly as many (rule 5).
func pinRelays(rs []*relay) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return
	}
	for i, cpu := range cpusToPin(&set, len(rs)) {
		rs[i].cpu = cpu
	}
}

// cpusToPin lists the CPUs in set when there are exactly n of them, else
// nothing: with more CPUs than relays, pinning would leave some CPUs'
// connections without a relay of their own; with fewer, relays would
// share a CPU.
func cpusToPin(set *unix.CPUSet, n int) []int {
	if n < 1 || set.Count() != n {
		return nil
	}
	var cpus []int
	for cpu := 0; len(cpus) < n && cpu < len(set)*64; cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// pinnedRelay is the index of the relay pinned to the CPU that last took
// in c's segments, or -1 when the relays are not pinned or none is.
func pinnedRelay(rs []*relay, c net.Conn) int {
	if len(rs) == 0 || rs[0].cpu < 0 {
		return -1
	}
	cpu := incomingCPU(c)
	if cpu < 0 {
		return -1
	}
	for i, r := range rs {
		if r.cpu == cpu {
			return i
		}
	}
	return -1
}

// incomingCPU is the CPU that last processed c's incoming segments, or
// -1 when the kernel does not say.
func incomingCPU(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	cpu := -1
	_ = rc.Control(func(f uintptr) {
		if v, err := unix.GetsockoptInt(int(f), unix.SOL_SOCKET, unix.SO_INCOMING_CPU); err == nil {
			cpu = v
		}
	})
	return cpu
}
