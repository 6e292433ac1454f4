// Package nlsock sets up the netlink sockets the listeners read, the
// uevent one and the route one, and reads the credentials the kernel
// attaches to their messages.
package nlsock

import (
	"encoding/binary"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// Setup asks for credentials on every message, sizes the receive buffer
// and binds fd to the multicast groups. what names the socket in the
// log ("uevent", "route").
func Setup(fd int, groups uint32, rcvbuf int, what string, log *slog.Logger) error {
	// Credentials must be asked for before bind, or the first messages
	// could arrive without them and be dropped.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fmt.Errorf("SO_PASSCRED: %w", err)
	}
	// SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN;
	// SO_RCVBUF is capped at rmem_max. The kernel doubles either value
	// for its bookkeeping (socket(7)), and reports the doubled one.
	if ferr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); ferr != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return fmt.Errorf("SO_RCVBUF %d: %w", rcvbuf, err)
		}
		got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		log.Warn("cannot force the "+what+" receive buffer; a storm may overrun it",
			"requested", rcvbuf, "obtained", got, "error", ferr)
	} else {
		got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		log.Debug(what+" receive buffer", "requested", rcvbuf, "obtained", got)
	}
	// Port id 0 asks the kernel to pick a unique one.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		return fmt.Errorf("bind netlink groups %#x: %w", groups, err)
	}
	return nil
}

// Creds finds SCM_CREDENTIALS in control data, without allocating.
func Creds(oob []byte) (pid int32, uid uint32, ok bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_CREDENTIALS && len(data) >= unix.SizeofUcred {
			// struct ucred { pid_t pid; uid_t uid; gid_t gid; }
			return int32(binary.NativeEndian.Uint32(data[0:])), binary.NativeEndian.Uint32(data[4:]), true
		}
		oob = rest
	}
	return 0, 0, false
}
