//go:build !linux

package proxy

import (
	"errors"
	"net"
)

// kernelPipe exists only on Linux (BPF sockmap); elsewhere the proxy
// copies in user space.
type kernelPipe struct{}

func newKernelPipe(int) (*kernelPipe, error) {
	return nil, errors.New("the kernel pipe needs Linux")
}

func (k *kernelPipe) close() {}

func (k *kernelPipe) add(client, server net.Conn) error {
	return errors.New("the kernel pipe needs Linux")
}
