// Command pause is the only program in skiff's pod sandbox image. Every pod's
// sandbox runs it as PID 1 to hold the pod's namespaces open while its
// containers come and go. skiff builds it into its own binary and imports it
// into containerd at start-up, because an air-gapped node cannot pull
// registry.k8s.io/pause.
//
// Being PID 1 gives it two duties. The kernel drops any signal PID 1 has no
// handler for, so it must handle SIGINT and SIGTERM itself or every sandbox
// stop waits out the grace period and ends in SIGKILL. And when a pod shares
// one PID namespace, orphaned processes are re-parented to it, so it must reap
// them or they linger as zombies.
//
// It has two more uses, so that no other image is needed: the local-path
// storage's helper pods run `pause create-dir DIR` to make a new volume's
// directory on its node, writable by any user as K3s's provisioner makes
// it, and `pause remove-dir DIR` to delete a released volume's directory.
//
// It uses only os/signal and syscall, not fmt or log, to keep the static binary
// around a megabyte: one copy runs per pod.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		os.Stdout.WriteString("pause (skiff)\n")
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "remove-dir" {
		if err := os.RemoveAll(os.Args[2]); err != nil {
			os.Stderr.WriteString("pause: " + err.Error() + "\n")
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "create-dir" {
		if err := createDir(os.Args[2]); err != nil {
			os.Stderr.WriteString("pause: " + err.Error() + "\n")
			os.Exit(1)
		}
		return
	}
	if os.Getpid() != 1 {
		// Still useful outside a sandbox (for tests), but then it reaps
		// only its own children.
		os.Stderr.WriteString("pause: warning: not running as PID 1\n")
	}

	// Buffered so a burst of SIGCHLD while reaping is not lost; signals of
	// one kind coalesce anyway, which is why reap loops until none are left.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)

	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking. One SIGCHLD may stand
// for many exits, so it loops until the kernel reports no more.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		// pid 0: children remain but none has exited; ECHILD: no children.
		if err != nil || pid <= 0 {
			return
		}
	}
}

// createDir makes a volume's directory with mode 0777, so that a pod running
// as any user (runAsUser, fsGroup or neither) can write it: the kubelet does
// not change a hostPath volume's owner or mode. The mode is set after mkdir
// because the umask would take bits off. A directory that already exists is
// left as it is: it may hold data whose modes its owner chose.
func createDir(dir string) error {
	err := os.Mkdir(dir, 0o777)
	if os.IsExist(err) {
		st, serr := os.Stat(dir)
		if serr == nil && !st.IsDir() {
			return &os.PathError{Op: "create-dir", Path: dir, Err: syscall.ENOTDIR}
		}
		return serr
	}
	if err != nil {
		return err
	}
	return os.Chmod(dir, 0o777)
}
