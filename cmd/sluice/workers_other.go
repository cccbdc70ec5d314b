//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

// startPinned starts cmd; pinning is Linux-only, so cpu >= 0 is an error.
func startPinned(cmd *exec.Cmd, cpu int) error {
	if cpu >= 0 {
		return errors.ErrUnsupported
	}
	return cmd.Start()
}

// closeInheritedOnExec is Linux-only: elsewhere a worker inherits the
// descriptors that this process inherited without close-on-exec.
func closeInheritedOnExec() error { return errors.ErrUnsupported }
