package route

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/nlsock"
)

// bufSize is the receive buffer of one message. The kernel makes the
// parts of a dump at most 32 KiB long for a reader with a large buffer,
// and a notification is one message of a few KiB; anything longer is cut
// and flagged MSG_TRUNC.
const bufSize = 64 << 10

// oobSize holds SCM_CREDENTIALS with room to spare.
const oobSize = 64

// groups are the multicast groups listened to: links, IPv4 and IPv6
// addresses.
const groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR

// netlinkConn is a NETLINK_ROUTE socket in non-blocking mode, waited on
// through the runtime's poller so that closing it unblocks a pending
// receive.
type netlinkConn struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
	buf    []byte
	oob    []byte

	// readFn is read, stored once so that passing it does not allocate.
	readFn func(fd uintptr) bool
	// The outcome of the last read.
	n, oobn, flags int
	from           unix.Sockaddr
	err            error
}

// open creates, configures and binds the socket.
func open(rcvbuf int, log *slog.Logger) (conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("route: netlink socket: %w", err)
	}
	if err := nlsock.Setup(fd, groups, rcvbuf, "route", log); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route: %w", err)
	}
	c := &netlinkConn{
		f:   os.NewFile(uintptr(fd), "netlink-route"),
		buf: make([]byte, bufSize),
		oob: make([]byte, oobSize),
	}
	if c.rc, err = c.f.SyscallConn(); err != nil {
		c.f.Close()
		return nil, fmt.Errorf("route: %w", err)
	}
	c.readFn = c.read
	return c, nil
}

// read is called by the poller when the socket may be readable; it
// returns false to wait for readiness.
func (c *netlinkConn) read(fd uintptr) bool {
	for {
		c.n, c.oobn, c.flags, c.from, c.err = unix.Recvmsg(int(fd), c.buf, c.oob, unix.MSG_DONTWAIT)
		switch c.err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		return true
	}
}

func (c *netlinkConn) receive() ([]byte, sender, error) {
	if err := c.rc.Read(c.readFn); err != nil {
		if c.closed.Load() {
			return nil, sender{}, errClosed
		}
		return nil, sender{}, err
	}
	switch {
	case c.err == unix.ENOBUFS:
		return nil, sender{}, errOverrun
	case c.err != nil:
		return nil, sender{}, os.NewSyscallError("recvmsg", c.err)
	}
	s := sender{truncated: c.flags&unix.MSG_TRUNC != 0, port: ^uint32(0)} // unknown: never the kernel
	if sa, ok := c.from.(*unix.SockaddrNetlink); ok {
		s.port, s.groups = sa.Pid, sa.Groups
	}
	if c.flags&unix.MSG_CTRUNC == 0 {
		s.pid, s.uid, s.hasCreds = nlsock.Creds(c.oob[:c.oobn])
	}
	return c.buf[:min(c.n, len(c.buf))], s, nil
}

// send sends a request to the kernel (port 0).
func (c *netlinkConn) send(b []byte) error {
	var err error
	werr := c.rc.Write(func(fd uintptr) bool {
		err = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return err != unix.EAGAIN
	})
	if werr != nil {
		return fmt.Errorf("route: send: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("route: send: %w", err)
	}
	return nil
}

func (c *netlinkConn) close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if err := c.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("route: close: %w", err)
	}
	return nil
}
