//go:build !linux

package localworld

import "syscall"

// childAttr puts a child in its own process group, so that a Ctrl-C on
// the terminal reaches only `petrel up`.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
