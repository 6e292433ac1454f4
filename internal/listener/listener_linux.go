package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/nlsock"
)

// bufSize is the receive buffer of one message. The kernel never sends
// more than about 2.5 KiB and udevd's messages stay under 8 KiB
// (uevent.MaxMessageSize); anything longer is cut and flagged MSG_TRUNC.
const bufSize = 16 << 10

// oobSize holds SCM_CREDENTIALS (one cmsghdr and a struct ucred) with room
// to spare; a message whose control data does not fit loses its
// credentials and is dropped for it.
const oobSize = 64

// batch is how many messages one recvmmsg(2) may return. A system call
// costs about as much as copying a uevent out, so reading a storm in
// batches roughly doubles the rate. Only the first page of each buffer is
// touched by a typical uevent.
const batch = 32

// spinRetries is how many times read retries at once, after a read that
// returned messages, before it lets the poller wait. The kernel wakes a
// waiting reader for each message, and the wake-up (an inter-processor
// interrupt, costly in a VM) is paid by the process whose write made the
// uevent: during a storm, retrying for a few microseconds instead of
// sleeping lets the kernel emit up to twice as fast. Once quiet, it costs
// that many failed recvmmsg calls per burst.
const spinRetries = 32

// netlinkConn is a NETLINK_KOBJECT_UEVENT socket in non-blocking mode,
// waited on through the runtime's poller so that closing it unblocks a
// pending receive. Its buffers and headers are allocated once: reading
// costs one recvmmsg(2) per batch and no allocation.
type netlinkConn struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool

	bufs  []byte // batch buffers of bufSize
	oobs  []byte // batch control buffers of oobSize
	addrs [batch]unix.RawSockaddrNetlink
	iovs  [batch]unix.Iovec
	msgs  [batch]unix.Mmsghdr

	// readFn is read, stored once so that passing it does not allocate.
	readFn func(fd uintptr) bool
	n      int           // messages in msgs from the last read
	next   int           // the next of them to return
	errno  syscall.Errno // the error of the last read, when n is 0
	spin   int           // EAGAIN retries left before waiting (see spinRetries)
}

// open creates, configures and binds the socket to group.
func open(group uint32, rcvbuf int, log *slog.Logger) (conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("listener: netlink socket: %w", err)
	}
	if err := nlsock.Setup(fd, group, rcvbuf, "uevent", log); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listener: %w", err)
	}
	c := &netlinkConn{
		f:    os.NewFile(uintptr(fd), "netlink-uevent"),
		bufs: make([]byte, batch*bufSize),
		oobs: make([]byte, batch*oobSize),
	}
	if c.rc, err = c.f.SyscallConn(); err != nil {
		c.f.Close()
		return nil, fmt.Errorf("listener: %w", err)
	}
	for i := range c.msgs {
		c.iovs[i].Base = &c.bufs[i*bufSize]
		c.iovs[i].SetLen(bufSize)
		h := &c.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&c.addrs[i]))
		h.Iov = &c.iovs[i]
		h.SetIovlen(1)
		h.Control = &c.oobs[i*oobSize]
	}
	c.readFn = c.read
	return c, nil
}

// read is called by the poller when the socket may be readable. It returns
// false to wait for readiness.
func (c *netlinkConn) read(fd uintptr) bool {
	for {
		for i := range c.msgs {
			h := &c.msgs[i].Hdr
			h.Namelen = unix.SizeofSockaddrNetlink
			h.SetControllen(oobSize)
			h.Flags = 0
		}
		// The socket is non-blocking: this returns what is queued, up to
		// batch messages, or EAGAIN. An error met after the first message
		// is kept by the kernel for the next call.
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])), batch, 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// Not yet: retry while the burst may go on.
			if c.spin > 0 {
				c.spin--
				continue
			}
			return false
		case 0:
			c.n, c.next, c.errno = int(n), 0, 0
			c.spin = spinRetries
		default:
			c.n, c.next, c.errno = 0, 0, errno
		}
		return true
	}
}

func (c *netlinkConn) receive() ([]byte, sender, error) {
	for c.next >= c.n {
		if err := c.rc.Read(c.readFn); err != nil {
			if c.closed.Load() {
				return nil, sender{}, errClosed
			}
			return nil, sender{}, err
		}
		switch {
		case c.errno == unix.ENOBUFS:
			return nil, sender{}, errOverrun
		case c.errno != 0:
			return nil, sender{}, os.NewSyscallError("recvmmsg", c.errno)
		}
	}
	i := c.next
	c.next++
	h := &c.msgs[i].Hdr
	s := sender{truncated: h.Flags&unix.MSG_TRUNC != 0}
	if h.Namelen >= unix.SizeofSockaddrNetlink && c.addrs[i].Family == unix.AF_NETLINK {
		s.port, s.groups = c.addrs[i].Pid, c.addrs[i].Groups
	} else {
		s.port = ^uint32(0) // unknown sender: never the kernel
	}
	if h.Flags&unix.MSG_CTRUNC == 0 {
		oob := c.oobs[i*oobSize : (i+1)*oobSize]
		s.pid, s.uid, s.hasCreds = nlsock.Creds(oob[:min(int(h.Controllen), oobSize)])
	}
	n := min(int(c.msgs[i].Len), bufSize)
	return c.bufs[i*bufSize : i*bufSize+n], s, nil
}

func (c *netlinkConn) close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if err := c.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("listener: close: %w", err)
	}
	return nil
}
