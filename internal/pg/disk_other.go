//go:build !linux

package pg

func diskFree(string) int64 { return -1 }
