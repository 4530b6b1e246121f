package worker

import "syscall"

// childSysProcAttr puts the embedded redis-server in a process group of
// its own, so that a Ctrl-C meant for the worker does not stop it before
// the worker has shut down, and has Linux kill it when the worker dies,
// even by SIGKILL. (Pdeathsig fires when the thread that started it
// exits: runChild starts it on a locked thread that lives as long as the
// child.)
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
