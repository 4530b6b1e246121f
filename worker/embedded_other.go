//go:build !unix

package worker

import "syscall"

// childSysProcAttr returns nil: the embedded redis-server runs with the
// defaults of the platform.
func childSysProcAttr() *syscall.SysProcAttr { return nil }
