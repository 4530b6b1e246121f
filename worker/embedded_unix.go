//go:build unix && !linux

package worker

import "syscall"

// childSysProcAttr puts the embedded redis-server in a process group of
// its own, so that a Ctrl-C meant for the worker does not stop it before
// the worker has shut down. Outside Linux nothing kills it if the worker
// is killed with SIGKILL.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
