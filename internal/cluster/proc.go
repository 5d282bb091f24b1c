package cluster

// NewProc describes a process of any binary (not only flashsale: `make
// bench` runs its baselines' helper programs this way) that runs with args
// and env and logs to logPath. addr is its listen address, if it has one;
// the caller checks its readiness itself ([Proc.WaitReady] knows only
// flashsale's endpoints). Start it with [Proc.Start]; it is stopped, killed
// and measured like the processes of a [Cluster].
func NewProc(name, addr, logPath string, args, env []string) *Proc {
	return &Proc{Name: name, Addr: addr, logPath: logPath,
		args: append([]string{}, args...), env: append([]string{}, env...)}
}

// FreeAddr returns a free 127.0.0.1 TCP address for a process to listen on.
func FreeAddr() (string, error) { return freeAddr() }
