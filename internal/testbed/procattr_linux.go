package testbed

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr makes the kernel kill a child when the process that started it
// dies, so an interrupted test run leaves no Envoy or splitter behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// stopped returns nil once /proc says pid is stopped (state T).
func stopped(pid int) error {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return err
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
	}
	if st := data[i+2]; st != 'T' {
		return fmt.Errorf("process %d is in state %c", pid, st)
	}
	return nil
}
