//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// kernelPipe moves proxied connections' bytes inside the kernel.
//
// Both sockets of a connection go into one BPF SOCKHASH, each stored
// under the other's socket cookie. An sk_skb verdict program attached to
// the map looks up the cookie of the socket a segment arrived on and
// redirects the segment to the send queue of the socket stored there: its
// peer. Once the client is authenticated, no byte of the conversation enters the
// proxy process and no goroutine wakes per query; the proxy only waits for
// either side to close.
//
// Rules for callers:
//  1. add a pair only while neither socket can receive data the other
//     side has not yet been given: once the proxy holds the server's last
//     answer of the startup phase (ReadyForQuery, or the 'S' that starts
//     TLS) and before it passes it on (the client speaks only after it,
//     the server only after the client). Data already queued on a socket
//     when it is added stays in its receive queue for the user-space copy
//     loop.
//  2. keep reading both sockets in user space (the copy loop): reads
//     return EOF when a peer closes, and return any byte the kernel did
//     not redirect, which must still be forwarded.
//  3. closing a socket removes it from the map; nothing else needs
//     cleaning up. Keys are socket cookies, never reused while the
//     system runs.
type kernelPipe struct {
	hash *ebpf.Map
	prog *ebpf.Program
}

// newKernelPipe loads the map and program. It fails without CAP_BPF and
// CAP_NET_ADMIN (the proxy then copies in user space).
func newKernelPipe(maxConns int) (*kernelPipe, error) {
	hash, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "petrel_pipe",
		Type:       ebpf.SockHash,
		KeySize:    8, // the peer's socket cookie
		ValueSize:  4, // socket fd on update
		MaxEntries: uint32(2*maxConns + 16),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the socket map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "petrel_redirect",
		Type:    ebpf.SkSKB,
		License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			// key = bpf_get_socket_cookie(skb) on the stack
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnGetSocketCookie.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			// return bpf_sk_redirect_hash(skb, &map, &key, 0): egress of the
			// peer; SK_DROP when the peer is gone (the pair is closing).
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadMapPtr(asm.R2, hash.FD()),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkRedirectHash.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		hash.Close()
		return nil, fmt.Errorf("loading the redirect program: %w", err)
	}
	// BPF_SK_SKB_VERDICT (5.13+) needs no stream parser; older kernels
	// take the stream verdict.
	var attachErr error
	for _, at := range []ebpf.AttachType{ebpf.AttachSkSKBVerdict, ebpf.AttachSkSKBStreamVerdict} {
		attachErr = link.RawAttachProgram(link.RawAttachProgramOptions{Target: hash.FD(), Program: prog, Attach: at})
		if attachErr == nil {
			return &kernelPipe{hash: hash, prog: prog}, nil
		}
	}
	prog.Close()
	hash.Close()
	return nil, fmt.Errorf("attaching the redirect program: %w", attachErr)
}

func (k *kernelPipe) close() {
	if k == nil {
		return
	}
	k.prog.Close()
	k.hash.Close()
}

// add links client and server (see the rules on kernelPipe). On error
// neither is left in the map and the caller copies in user space.
func (k *kernelPipe) add(client, server net.Conn) error {
	cc, ok1 := client.(*net.TCPConn)
	sc, ok2 := server.(*net.TCPConn)
	if !ok1 || !ok2 {
		return errors.New("not TCP connections")
	}
	craw, err := cc.SyscallConn()
	if err != nil {
		return err
	}
	sraw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	ctlErr := craw.Control(func(cfd uintptr) {
		opErr = errors.Join(opErr, sraw.Control(func(sfd uintptr) {
			ccookie, err := unix.GetsockoptUint64(int(cfd), unix.SOL_SOCKET, unix.SO_COOKIE)
			if err != nil {
				opErr = fmt.Errorf("reading the client socket cookie: %w", err)
				return
			}
			scookie, err := unix.GetsockoptUint64(int(sfd), unix.SOL_SOCKET, unix.SO_COOKIE)
			if err != nil {
				opErr = fmt.Errorf("reading the server socket cookie: %w", err)
				return
			}
			// The server first: it has nothing to send until the client
			// speaks again (rule 1), so none of its segments can meet a
			// missing peer in between.
			if err := k.hash.Update(ccookie, uint32(sfd), ebpf.UpdateNoExist); err != nil {
				opErr = fmt.Errorf("adding the server socket: %w", err)
				return
			}
			if err := k.hash.Update(scookie, uint32(cfd), ebpf.UpdateNoExist); err != nil {
				_ = k.hash.Delete(ccookie)
				opErr = fmt.Errorf("adding the client socket: %w", err)
			}
		}))
	})
	if ctlErr != nil {
		return ctlErr
	}
	return opErr
}
