// Command latencyprobe is the `run` action of the daemon's benchmarks: it
// takes the time as early as a Go program can (package initialisation,
// before main) and sends "$HOTPLUG_SYNTH_UUID UNIXNANO" as one datagram to
// the unixgram socket named by its first argument. It uses syscall only,
// so that little else is initialised before the clock is read.
package main

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

var start = time.Now().UnixNano()

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		os.Exit(1)
	}
	msg := os.Getenv("HOTPLUG_SYNTH_UUID") + " " + strconv.FormatInt(start, 10)
	if err := syscall.Sendto(fd, []byte(msg), 0, &syscall.SockaddrUnix{Name: os.Args[1]}); err != nil {
		os.Exit(1)
	}
}
