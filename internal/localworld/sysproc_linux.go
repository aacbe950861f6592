package localworld

import "syscall"

// childAttr puts a child in its own process group (a Ctrl-C on the
// terminal reaches only `petrel up`, which then stops the children in
// order) and has the kernel SIGTERM it if `petrel up` dies abruptly.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
