package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrLive: another daemon answers on the socket.
var ErrLive = errors.New("another hotplugd answers on the control socket")

// listenUnix binds the socket at path, replacing a stale one, with mode
// 0660 and group group (-1: root's). The directory is made 0755 when
// missing: clients of the group must reach the socket.
func listenUnix(path string, group int) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("control socket %q: not an absolute path", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := replaceStale(path); err != nil {
		return nil, err
	}
	// The socket is made with no permission for anyone but root, then
	// opened to the group: no window in which others may connect.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it, and only its own
	if group >= 0 {
		if err := os.Lchown(path, -1, group); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket: %w", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// replaceStale removes a socket file nobody answers on; anything else
// at path, or a live socket, is an error.
func replaceStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control socket: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("control socket %s: a %s is in the way", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrLive, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("control socket: removing the stale one: %w", err)
	}
	return nil
}

// peer is a client as the kernel sees it.
type peer struct {
	uid, gid uint32
	groups   []uint32
}

func (p peer) inGroup(gid int) bool {
	return int(p.gid) == gid || slices.Contains(p.groups, uint32(gid))
}

type peerKey struct{}

// withPeer puts the connection's peer credentials into its context.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		if lc, isLimited := c.(*limitedConn); isLimited {
			uc, ok = lc.Conn.(*net.UnixConn)
		}
	}
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var p peer
	var perr error
	raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		if cred, perr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); perr == nil {
			p.uid, p.gid = cred.Uid, cred.Gid
			p.groups = peerGroups(int(fd))
		}
	})
	if perr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerGroups is SO_PEERGROUPS: the client's supplementary groups when it
// connected.
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 256)
	n := uint32(len(buf) * 4)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return nil
	}
	return buf[:n/4]
}

// limitListener accepts at most n connections at a time.
func limitListener(ln net.Listener, n int) net.Listener {
	return &limited{Listener: ln, sem: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	sem chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
