package mount

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// msFlags maps flag options to mount(2) flags.
var msFlags = map[string]uintptr{
	"nosuid":      unix.MS_NOSUID,
	"nodev":       unix.MS_NODEV,
	"noexec":      unix.MS_NOEXEC,
	"ro":          unix.MS_RDONLY,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
	"lazytime":    unix.MS_LAZYTIME,
	"sync":        unix.MS_SYNCHRONOUS,
	"dirsync":     unix.MS_DIRSYNC,
}

// helperEnv is the whole environment of a mount helper: nothing from the
// daemon's environment or the event.
var helperEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// helperOutputMax bounds how much of a helper's output goes into an error.
const helperOutputMax = 4096

// NewMounter returns a Mounter with the state recorded at cfg.StatePath.
// A state file that cannot be parsed is logged, moved aside to
// <StatePath>.bad and replaced by an empty state: hotplugd then leaves
// those mounts alone rather than refusing to start. NewMounter creates no
// directory; with PlanOnly it changes nothing at all.
func NewMounter(cfg Config) (*Mounter, error) {
	cfg = cfg.withDefaults()
	cfg.PlanOnly = cfg.PlanOnly || cfg.Simulated
	if !filepath.IsAbs(cfg.MountRoot) {
		return nil, fmt.Errorf("mount root %q: %w", cfg.MountRoot, errMountRootNotAbs)
	}
	if !filepath.IsAbs(cfg.StatePath) {
		return nil, fmt.Errorf("state file %q: %w", cfg.StatePath, errStatePathNotAbs)
	}
	cfg.MountRoot = filepath.Clean(cfg.MountRoot)
	m := &Mounter{
		cfg:        cfg,
		log:        cfg.Logger,
		sysMount:   unix.Mount,
		sysUnmount: unix.Unmount,
		busy:       map[string]bool{},
	}
	if !cfg.PlanOnly {
		lock, err := lockStateDir(filepath.Dir(cfg.StatePath))
		if err != nil {
			return nil, err
		}
		m.lock = lock
	}
	entries, err := map[string]Entry{}, error(nil)
	if !cfg.Simulated {
		entries, err = readState(cfg.StatePath)
	}
	if err != nil {
		m.log.Error("mount state unreadable; starting with an empty state", "path", cfg.StatePath, "err", err)
		if !cfg.PlanOnly { // a dry run leaves the file to the daemon
			if rerr := os.Rename(cfg.StatePath, cfg.StatePath+".bad"); rerr != nil {
				m.log.Error("moving the unreadable mount state aside", "err", rerr)
			}
		}
		entries = map[string]Entry{}
	}
	// The state decides what gets unmounted and removed: an entry whose
	// mount point is not directly under mount_root (an edited file, or
	// mount_root changed since) is left alone.
	for key, e := range entries {
		if filepath.Dir(e.MountPoint) != cfg.MountRoot {
			m.log.Warn("mount state entry outside mount_root; leaving it alone", "path", e.MountPoint, "mount_root", cfg.MountRoot)
			delete(entries, key)
		}
	}
	m.entries = entries
	m.loadMappings()
	return m, nil
}

// checkStateDir refuses a state directory that is a symlink, or that
// someone other than root (or this user) owns or may write: its file
// says which mounts hotplugd unmounts and which directories it removes.
// lockStateDir creates a missing one 0700.
func checkStateDir(dir string) error {
	var st unix.Stat_t
	err := unix.Lstat(dir, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("state directory %s: %w", dir, err)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%w: state directory %s is not a directory (or is a symlink)", ErrUnsafeStateDir, dir)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: state directory %s is owned by uid %d", ErrUnsafeStateDir, dir, st.Uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%w: state directory %s is writable by group or others (mode %04o)", ErrUnsafeStateDir, dir, st.Mode&0o7777)
	}
	return nil
}

// Plan computes the mount point and options a Mount of dev would use, and
// returns the same skip and refusal errors, without creating or mounting
// anything. The mount point's suffix may differ at mount time if the name
// is taken in between.
func (m *Mounter) Plan(dev Device, req Request) (Plan, error) {
	p, err := m.plan(dev, req)
	if err != nil {
		return Plan{}, err
	}
	if m.cfg.Simulated {
		m.simulateMount(dev, req, &p)
		return p, nil
	}
	p.name = freeName(m.cfg.MountRoot, p.name)
	p.MountPoint = filepath.Join(m.cfg.MountRoot, p.name)
	return p, nil
}

// plan makes every decision of a mount that needs no side effect.
func (m *Mounter) plan(dev Device, req Request) (Plan, error) {
	if dev.FSUsage != "filesystem" {
		return Plan{}, skip(dev, ErrNotFilesystem, "ID_FS_USAGE is %q, not \"filesystem\"", dev.FSUsage)
	}
	drivers, ok := filesystems[dev.FSType]
	if !ok {
		return Plan{}, skip(dev, ErrFilesystemRefused, "%q is not one of %s", dev.FSType, strings.Join(AllowedFilesystems(), ", "))
	}
	if dev.Major == 0 && dev.Minor == 0 {
		return Plan{}, fmt.Errorf("mount %s: %w", dev.Devnode, errDeviceNumber)
	}
	if !filepath.IsAbs(dev.Devnode) || filepath.Clean(dev.Devnode) != dev.Devnode {
		return Plan{}, fmt.Errorf("mount: device node %q is not a clean absolute path", dev.Devnode)
	}
	if e, ok := m.Lookup(Device{Major: dev.Major, Minor: dev.Minor}); ok && !e.Unmounted {
		return Plan{}, skip(dev, ErrAlreadyMounted, "mounted by hotplugd at %s", e.MountPoint)
	}
	if m.cfg.Simulated {
		return m.planWith(dev, req, simulatedDriver(filesystems[dev.FSType]))
	}
	infos, err := readMounts(m.cfg.mountinfoPath())
	if err != nil {
		return Plan{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	if at, ok := deviceMountedAt(infos, dev); ok {
		return Plan{}, skip(dev, ErrAlreadyMounted, "%s is mounted at %s", dev.DevNum(), at)
	}
	if err := m.checkFstab(dev); err != nil {
		return Plan{}, err
	}
	cands, err := m.usableDrivers(dev, drivers)
	if err != nil {
		return Plan{}, err
	}
	return m.planWith(dev, req, cands[0])
}

// planWith fills a Plan for one driver choice.
func (m *Mounter) planWith(dev Device, req Request, c driverChoice) (Plan, error) {
	opts, err := buildOptions(c.drv, req)
	if err != nil {
		return Plan{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	name := Name(dev.Label, dev.UUID, dev.Devname)
	return Plan{
		Device:     dev,
		MountPoint: filepath.Join(m.cfg.MountRoot, name),
		FSType:     dev.FSType,
		Driver:     c.drv.name(),
		Helper:     c.helper,
		Flags:      opts.flags,
		Data:       strings.Join(opts.data, ","),
		Options:    opts.all(),
		Ignored:    opts.ignored,
		name:       name,
		drv:        c.drv,
		opts:       opts,
	}, nil
}

// checkFstab skips a device the administrator listed in fstab: by its
// node (or any /dev link to it), LABEL=, UUID=, PARTUUID= or PARTLABEL=.
func (m *Mounter) checkFstab(dev Device) error {
	entries, err := readFstab(m.cfg.fstabPath())
	if err != nil {
		return fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	for _, e := range entries {
		match := false
		if tag, value, ok := fstabTag(e.spec); ok {
			match = matchesTag(dev, tag, value)
		} else if strings.HasPrefix(e.spec, "/dev/") {
			match = e.spec == dev.Devnode
			var st unix.Stat_t
			if !match && unix.Stat(e.spec, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
				match = unix.Major(st.Rdev) == dev.Major && unix.Minor(st.Rdev) == dev.Minor
			}
		}
		if match {
			return skip(dev, ErrInFstab, "%s:%d: %s %s", m.cfg.fstabPath(), e.line, e.spec, e.dir)
		}
	}
	return nil
}

// driverChoice is a driver usable on this machine.
type driverChoice struct {
	drv    driver
	helper string // the helper's path, for helper drivers
}

// unsupportedFSError says that neither the kernel nor a helper can mount a
// filesystem type.
type unsupportedFSError struct {
	fsType, kernelType, filesystemsPath string
	helpers, dirs                       []string
	rejected                            []string
}

func (e *unsupportedFSError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "filesystem %s is not supported by this kernel (no %q in %s) and no mount helper was found",
		e.fsType, e.kernelType, e.filesystemsPath)
	if len(e.helpers) > 0 {
		fmt.Fprintf(&b, " (looked for %s in %s)", strings.Join(e.helpers, ", "), strings.Join(e.dirs, ", "))
	}
	for _, r := range e.rejected {
		b.WriteString("; " + r)
	}
	return b.String()
}

func (e *unsupportedFSError) Unwrap() error { return ErrUnsupportedFS }

// usableDrivers returns the drivers of a type this machine has, in order
// of preference: a kernel filesystem listed in /proc/filesystems or
// available as a module (mount(2) then loads it; the type is allow-listed),
// then FUSE helpers found in the helper directories.
func (m *Mounter) usableDrivers(dev Device, drivers []driver) ([]driverChoice, error) {
	known, err := readProcFilesystems(m.cfg.filesystemsPath())
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	unsupported := &unsupportedFSError{fsType: dev.FSType, filesystemsPath: m.cfg.filesystemsPath(), dirs: m.cfg.HelperDirs}
	var out []driverChoice
	for _, d := range drivers {
		if d.kernel != "" {
			if unsupported.kernelType == "" {
				unsupported.kernelType = d.kernel
			}
			if known[d.kernel] || m.moduleAvailable(d.kernel) {
				out = append(out, driverChoice{drv: d})
			}
			continue
		}
		unsupported.helpers = append(unsupported.helpers, d.helpers...)
		if path, rejected := findHelper(d.helpers, m.cfg.HelperDirs); path != "" {
			out = append(out, driverChoice{drv: d, helper: path})
		} else {
			unsupported.rejected = append(unsupported.rejected, rejected...)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("mount %s: %w", dev.Devnode, unsupported)
	}
	return out, nil
}

// readProcFilesystems returns the filesystem types the kernel has now.
func readProcFilesystems(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read filesystems: %w", err)
	}
	defer f.Close()
	known := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text()) // "nodev\tproc" or "\text4"
		if len(fields) > 0 {
			known[fields[len(fields)-1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read filesystems %s: %w", path, err)
	}
	return known, nil
}

// moduleAvailable reports whether the running kernel has a loadable module
// for a filesystem type: modules.alias maps "fs-<type>" to it, and that
// alias is what mount(2) asks modprobe for.
func (m *Mounter) moduleAvailable(fsType string) bool {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return false
	}
	f, err := os.Open(filepath.Join(m.cfg.ModulesDir, unix.ByteSliceToString(uts.Release[:]), "modules.alias"))
	if err != nil {
		return false
	}
	defer f.Close()
	want := "alias fs-" + fsType + " "
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), want) {
			return true
		}
	}
	return false
}

// findHelper returns the first helper program that is a root-owned
// executable file no one else can write to; rejected says why others were
// passed over.
func findHelper(names, dirs []string) (path string, rejected []string) {
	for _, name := range names {
		for _, dir := range dirs {
			p := filepath.Join(dir, name)
			st, err := os.Stat(p)
			if err != nil {
				continue
			}
			sys, _ := st.Sys().(*syscall.Stat_t)
			switch {
			case !st.Mode().IsRegular() || st.Mode()&0o111 == 0:
				rejected = append(rejected, p+" is not an executable file")
			case sys == nil || sys.Uid != 0:
				rejected = append(rejected, p+" is not owned by root")
			case st.Mode()&0o022 != 0:
				rejected = append(rejected, p+" is writable by group or others")
			default:
				return p, rejected
			}
		}
	}
	return "", rejected
}

// Mount mounts dev under the mount root as req asks and records it.
//
// It refuses (errors wrapping ErrSkipped) devices that are not a
// filesystem, of a type not allow-listed, already mounted, or listed in
// fstab. The mount point is a new 0700 directory (see Name and
// createMountDir), removed again if the mount fails. Kernel filesystems
// are mounted with mount(2) onto /proc/self/fd/N of the new directory;
// FUSE filesystems by executing their helper directly (no shell) as
// helper DEVNODE MOUNTPOINT -o OPTIONS.
//
// The mount is bounded by ctx and the configured Timeout. mount(2) itself
// cannot be interrupted: when the deadline passes Mount returns an error
// wrapping ErrMountTimeout at once, and the mount(2) call, left running,
// is undone when it returns (lazy unmount, rmdir). A helper that misses the
// deadline is killed with its process group.
func (m *Mounter) Mount(ctx context.Context, dev Device, req Request) (Entry, error) {
	if m.cfg.PlanOnly {
		return Entry{}, fmt.Errorf("mount %s: %w", dev.Devnode, ErrPlanOnly)
	}
	release, ok := m.reserve(dev.DevNum())
	if !ok {
		return Entry{}, fmt.Errorf("mount %s: %w", dev.Devnode, ErrDeviceBusy)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()

	m.finishPending(ctx, dev)
	p, err := m.plan(dev, req)
	if err != nil {
		return Entry{}, err
	}
	if err := checkDevnode(dev); err != nil {
		return Entry{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()

	rootFD, err := openMountRoot(m.cfg.MountRoot)
	if err != nil {
		return Entry{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	dir, err := createMountDir(rootFD, m.cfg.MountRoot, p.name)
	if err != nil {
		return Entry{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}

	p, handedOff, err = m.mountWithDrivers(ctx, dir, dev, req, release)
	if handedOff {
		return Entry{}, err // the mount(2) goroutine cleans up and releases
	}
	if err == nil {
		err = m.verifyMounted(dir, dev)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("mount %s on %s: %w", dev.Devnode, dir.path, errors.Join(err, dir.remove()))
	}
	dir.close()
	return m.record(ctx, dev, req, p, dir.path)
}

// mountWithDrivers mounts dev on dir with the first of its filesystem's
// drivers the kernel (or a helper) has, trying the next when mount(2)
// says the kernel lacks one (ENODEV), and returns the plan that worked.
// handedOff: mount(2) missed the deadline, and the goroutine left
// waiting for it now owns dir and release.
func (m *Mounter) mountWithDrivers(ctx context.Context, dir *mountDir, dev Device, req Request, release func()) (p Plan, handedOff bool, err error) {
	cands, err := m.usableDrivers(dev, filesystems[dev.FSType])
	if err != nil {
		return Plan{}, false, err
	}
	for i, c := range cands {
		if p, err = m.planWith(dev, req, c); err != nil {
			return Plan{}, false, err
		}
		if c.helper != "" {
			err = m.helperMount(ctx, dir, dev, p)
		} else if err = m.kernelMount(ctx, dir, dev, p, release); errors.Is(err, ErrMountTimeout) {
			return Plan{}, true, err
		}
		if !errors.Is(err, unix.ENODEV) || i == len(cands)-1 {
			break
		}
		m.log.Info("kernel lacks the filesystem driver; trying the next one", "device", dev.Devnode, "driver", c.drv.name())
	}
	if errors.Is(err, unix.ENODEV) {
		err = fmt.Errorf("%w: the kernel has no driver for %s (mount(2): %v)", ErrUnsupportedFS, dev.FSType, err)
	}
	return p, false, err
}

// record adds the mount to the state file. A mount whose state cannot be
// written (a full /run) is undone: after a restart hotplugd would not know
// it, never unmount it and leave its directory behind.
func (m *Mounter) record(ctx context.Context, dev Device, req Request, p Plan, path string) (Entry, error) {
	recorded := dev
	recorded.FSUsage, recorded.FSType = "", "" // the entry has its own FSType
	recorded.Diskseq = m.diskseq(dev.Devpath)
	entry := Entry{
		Device:     recorded,
		MountPoint: path,
		FSType:     dev.FSType,
		Driver:     p.Driver,
		Options:    p.Options,
		Rule:       req.Rule,
		CreatedDir: true,
		MountedAt:  time.Now().UTC(),
	}
	if p.Helper != "" {
		entry.Driver = p.Helper
	}
	key := dev.DevNum()
	m.mu.Lock()
	m.entries[key] = entry
	err := m.saveLocked()
	if err != nil {
		delete(m.entries, key)
	}
	m.mu.Unlock()
	if err != nil {
		m.log.Error("the mount state could not be saved: undoing the mount", "device", dev.Devnode, "path", path, "err", err)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
		defer cancel()
		_, _, uerr := m.cleanup(ctx, key, entry, detachIfBusy)
		return Entry{}, fmt.Errorf("mount %s on %s: %w: %w", dev.Devnode, path, errStateNotSaved, errors.Join(err, uerr))
	}
	for _, ig := range p.Ignored {
		m.log.Info("mount option ignored", "device", dev.Devnode, "option", ig)
	}
	return entry, nil
}

// finishPending retries the cleanup of an earlier mount of dev whose
// directory could not be removed, before dev is mounted anew; the caller
// holds the device's reservation.
func (m *Mounter) finishPending(ctx context.Context, dev Device) {
	m.mu.Lock()
	e, ok := m.entries[dev.DevNum()]
	m.mu.Unlock()
	if !ok || !e.Unmounted {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	if _, _, err := m.cleanup(ctx, dev.DevNum(), e, detachIfBusy); err != nil {
		m.log.Warn("earlier mount point of the device not removed; forgetting it", "device", dev.Devnode, "err", err)
		m.mu.Lock()
		delete(m.entries, dev.DevNum())
		m.mu.Unlock()
	}
}

// checkDevnode makes sure the node to be mounted is the block device the
// event named.
func checkDevnode(dev Device) error {
	var st unix.Stat_t
	if err := unix.Stat(dev.Devnode, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != dev.Major || unix.Minor(st.Rdev) != dev.Minor {
		return fmt.Errorf("%w: %s is not block device %s", errDevnodeMismatch, dev.Devnode, dev.DevNum())
	}
	return nil
}

// kernelMount runs mount(2) in its own goroutine and waits for it until
// ctx is done. On a timeout it returns at once and the goroutine owns the
// directory and the device reservation: when mount(2) finally returns it
// undoes the mount, removes the directory and releases the device.
func (m *Mounter) kernelMount(ctx context.Context, dir *mountDir, dev Device, p Plan, release func()) error {
	var flags uintptr
	for _, f := range p.Flags {
		flags |= msFlags[f]
	}
	var (
		mu        sync.Mutex
		abandoned bool
		done      = make(chan error, 1)
	)
	go func() {
		err := m.sysMount(dev.Devnode, dir.procPath(), p.drv.kernel, flags, p.Data)
		mu.Lock()
		if !abandoned {
			done <- err
			mu.Unlock()
			return
		}
		mu.Unlock()
		defer release()
		if err == nil {
			if uerr := m.sysUnmount(dir.path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); uerr != nil {
				m.log.Error("late mount could not be undone", "device", dev.Devnode, "path", dir.path, "err", uerr)
				dir.close()
				return
			}
		}
		if rerr := dir.remove(); rerr != nil {
			m.log.Error("directory of a timed-out mount not removed", "path", dir.path, "err", rerr)
			return
		}
		m.log.Info("timed-out mount finished and was undone", "device", dev.Devnode, "path", dir.path, "mount_err", err)
	}()
	wrap := func(err error) error {
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("mount(2) type %s: %w (mounting needs root or CAP_SYS_ADMIN)", p.drv.kernel, err)
		}
		return fmt.Errorf("mount(2) type %s, options %q: %w", p.drv.kernel, p.Options, err)
	}
	select {
	case err := <-done:
		return wrap(err)
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	select {
	case err := <-done:
		return wrap(err)
	default:
	}
	abandoned = true
	return fmt.Errorf("mount %s on %s: %w (%w); mount(2) cannot be cancelled: it is undone if it ever completes",
		dev.Devnode, dir.path, ErrMountTimeout, context.Cause(ctx))
}

// helperMount runs a FUSE mount helper: executed directly with a fixed
// environment, in its own process group, killed at the deadline.
func (m *Mounter) helperMount(ctx context.Context, dir *mountDir, dev Device, p Plan) error {
	if !dir.stillThere() {
		return fmt.Errorf("%s was replaced before the mount", dir.path)
	}
	out, err := memFile("hotplugd-mount-helper")
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, p.Helper, dev.Devnode, dir.path, "-o", p.Options)
	cmd.Env = helperEnv
	cmd.Stdout, cmd.Stderr = out, out // files, not pipes: the daemon the helper leaves behind keeps no pipe of ours
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	// Its own scope: the FUSE daemon it leaves running must outlive a
	// restart of hotplugd's service.
	runErr := m.cfg.Scopes.Start(cmd, "hotplugd-mount", "system.slice", "hotplugd: FUSE filesystem on "+dev.Devnode)
	if runErr == nil {
		runErr = cmd.Wait()
	}
	if runErr == nil {
		return nil
	}
	// The helper may have mounted before failing or being killed.
	if infos, err := readMounts(m.cfg.mountinfoPath()); err == nil {
		for _, mi := range mountsAt(infos, dir.path) {
			if isDeviceMount(mi, dev) {
				_ = m.sysUnmount(dir.path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			}
		}
	}
	msg := readBounded(out)
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w (%w); helper killed; output: %q", p.Helper, ErrMountTimeout, context.Cause(ctx), msg)
	}
	return fmt.Errorf("%s: %w; output: %q", p.Helper, runErr, msg)
}

// memFile returns an anonymous in-memory file.
func memFile(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// readBounded returns at most helperOutputMax bytes of f from its start,
// trimmed.
func readBounded(f *os.File) string {
	b := make([]byte, helperOutputMax)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return strings.TrimSpace(string(b[:n]))
}

// verifyMounted checks in mountinfo that dev is now mounted at the
// directory's path (mount(2) went through /proc/self/fd/N, so this also
// proves the name still leads to the directory mounted on).
func (m *Mounter) verifyMounted(dir *mountDir, dev Device) error {
	infos, err := readMounts(m.cfg.mountinfoPath())
	if err != nil {
		return err
	}
	if slices.ContainsFunc(mountsAt(infos, dir.path), func(mi *mountinfoInfo) bool { return isDeviceMount(mi, dev) }) {
		return nil
	}
	return fmt.Errorf("%w at %s", errNotMountedAfter, dir.path)
}

// Unmount unmounts what hotplugd mounted for dev (found by major:minor,
// else by devpath) and removes the directory it created. A busy
// filesystem is detached lazily (MNT_DETACH) and the result says Lazy:
// report it as "removed while in use". The entry is dropped only when
// everything is done; a failed step keeps it for a retry (a later Unmount
// or Reconcile). Nothing is removed recursively, ever.
//
// It returns an error wrapping ErrNotMounted when hotplugd has no mount of
// dev, which is the common case on removal of a device it did not mount.
func (m *Mounter) Unmount(ctx context.Context, dev Device) (UnmountResult, error) {
	return m.unmount(ctx, dev, detachIfBusy)
}

// Eject is Unmount for `hotplugd eject`: a busy filesystem is not
// detached but refused with ErrBusy (Holders says who holds it), unless
// force, which detaches at once. The cleartext of a LUKS device hotplugd
// unlocked has its mapping closed after the unmount (UnmountResult.Closed).
func (m *Mounter) Eject(ctx context.Context, dev Device, force bool) (UnmountResult, error) {
	if mp, ok := m.MappingOf(dev); ok && !m.cfg.PlanOnly {
		return m.ejectMapping(ctx, mp, ejectMode(force)) // and its mapping is closed
	}
	return m.unmount(ctx, dev, ejectMode(force))
}

// ejectMode is what an eject does with a busy filesystem: refuse, or
// with force detach it lazily.
func ejectMode(force bool) busyMode {
	if force {
		return detachNow
	}
	return failIfBusy
}

func (m *Mounter) unmount(ctx context.Context, dev Device, mode busyMode) (UnmountResult, error) {
	if m.cfg.PlanOnly {
		return UnmountResult{}, fmt.Errorf("unmount %s: %w", describe(dev), ErrPlanOnly)
	}
	m.mu.Lock()
	key, ok := m.findLocked(dev)
	m.mu.Unlock()
	if !ok {
		return UnmountResult{}, fmt.Errorf("unmount %s: %w", describe(dev), ErrNotMounted)
	}
	release, ok := m.reserve(key)
	if !ok {
		return UnmountResult{}, fmt.Errorf("unmount %s: %w", describe(dev), ErrDeviceBusy)
	}
	defer release()
	m.mu.Lock()
	entry, ok := m.entries[key]
	m.mu.Unlock()
	if !ok {
		return UnmountResult{}, fmt.Errorf("unmount %s: %w", describe(dev), ErrNotMounted)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	res, _, err := m.cleanup(ctx, key, entry, mode)
	return res, err
}

// describe names a device in an error.
func describe(dev Device) string {
	switch {
	case dev.Devnode != "":
		return dev.Devnode
	case dev.Devpath != "":
		return dev.Devpath
	}
	return dev.DevNum()
}

// cleanupOutcome is what cleanup did with an entry.
type cleanupOutcome int

// busyMode is what cleanup does with a filesystem that is in use.
type busyMode int

const (
	detachIfBusy busyMode = iota // a plain unmount, detached lazily when busy (removal)
	detachNow                    // detached lazily at once (the device is gone; eject --force)
	failIfBusy                   // a plain unmount; busy is ErrBusy (eject)
)

const (
	outcomeCleaned cleanupOutcome = iota // unmounted (if mounted) and directory removed
	outcomeDropped                       // nothing of ours was mounted: entry forgotten
	outcomeFailed                        // entry kept for a retry
)

// cleanup unmounts the entry's mount if it is still there and is ours,
// removes the directory hotplugd created, and updates the state; mode
// says what happens when the filesystem is busy. The caller holds the
// device's reservation. A plan-only Mounter does none of it
// (planCleanup).
func (m *Mounter) cleanup(ctx context.Context, key string, e Entry, mode busyMode) (UnmountResult, cleanupOutcome, error) {
	if m.cfg.PlanOnly {
		return m.planCleanup(key, e), outcomeCleaned, nil
	}
	res := UnmountResult{Entry: e}
	fail := func(err error) (UnmountResult, cleanupOutcome, error) {
		m.mu.Lock()
		m.entries[key] = e
		werr := m.saveLocked()
		m.mu.Unlock()
		res.Entry = e
		return res, outcomeFailed, fmt.Errorf("unmount %s at %s: %w", describe(e.Device), e.MountPoint, errors.Join(err, werr))
	}
	infos, err := readMounts(m.cfg.mountinfoPath())
	if err != nil {
		return fail(err)
	}
	at := mountsAt(infos, e.MountPoint)
	ours := slices.IndexFunc(at, func(mi *mountinfoInfo) bool { return isDeviceMount(mi, e.Device) })
	outcome := outcomeCleaned
	switch {
	case ours >= 0 && !e.Unmounted:
		if ours != len(at)-1 {
			return fail(fmt.Errorf("%w: %s %s is mounted over it", ErrForeignMount, at[len(at)-1].FSType, at[len(at)-1].Source))
		}
		if mode == detachNow {
			err = m.unmountWithDeadline(ctx, e.MountPoint, unix.MNT_DETACH)
			res.Lazy = err == nil
		} else {
			err = m.unmountWithDeadline(ctx, e.MountPoint, 0)
			switch {
			case errors.Is(err, unix.EBUSY) && mode == failIfBusy:
				err = fmt.Errorf("%w: %w", ErrBusy, err)
			case errors.Is(err, unix.EBUSY):
				err = m.unmountWithDeadline(ctx, e.MountPoint, unix.MNT_DETACH)
				res.Lazy = err == nil
			}
		}
		if err != nil {
			return fail(err)
		}
		e.Unmounted = true
		res.Unmounted = true
		if res.Lazy {
			m.log.Warn("filesystem was in use; detached lazily", "device", describe(e.Device), "path", e.MountPoint)
		}
	case ours >= 0 && e.Unmounted:
		// Recorded as unmounted, yet mounted again: someone else did it.
		outcome = outcomeDropped
	case len(at) > 0:
		// Something else is mounted there and ours is gone: not ours.
		m.log.Info("a mount hotplugd did not make is at a recorded mount point; leaving it", "path", e.MountPoint, "source", at[len(at)-1].Source)
		outcome = outcomeDropped
	default:
		// Ours is gone already (unmounted by someone, or by us before a crash).
		if !e.Unmounted {
			outcome = outcomeDropped
		}
		e.Unmounted = true
	}
	// The directory is free only if nothing is mounted on it any more:
	// nothing was, or ours was the only mount and is now gone.
	if e.CreatedDir && (len(at) == 0 || outcome == outcomeCleaned) {
		if err := removeRecordedDir(e.MountPoint); err != nil {
			return fail(err)
		}
		res.DirRemoved = true
	}
	m.mu.Lock()
	delete(m.entries, key)
	werr := m.saveLocked()
	m.mu.Unlock()
	if werr != nil {
		m.log.Error("mount state could not be saved", "err", werr)
	}
	res.Entry = e
	return res, outcome, nil
}

// unmountWithDeadline runs umount2(2), never following a symlink at the
// path, in its own goroutine, and stops waiting when ctx is done; the
// entry is then kept and a later cleanup sees what the call did.
func (m *Mounter) unmountWithDeadline(ctx context.Context, path string, flags int) error {
	done := make(chan error, 1)
	go func() { done <- m.sysUnmount(path, flags|unix.UMOUNT_NOFOLLOW) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("umount2: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("umount2: %w (%w); the call may still complete", ErrMountTimeout, context.Cause(ctx))
	}
}

// Reconcile brings the recorded state in line with the mounts and devices
// of the machine, at start-up (after a crash, or a restart while disks
// were mounted) and after lost events. For each recorded mount:
//   - device present and still mounted by hotplugd: kept;
//   - device gone: the mount is detached lazily (MNT_DETACH, which never
//     waits on a dead device) and its directory removed;
//   - mount already gone: the directory hotplugd created is removed if
//     empty, the entry dropped;
//   - a mount hotplugd did not make at the recorded path: left alone, entry
//     dropped.
//
// The recorded LUKS mappings come first (reconcileMappings): one whose
// backing device is gone has its cleartext detached and is closed, since
// its cleartext device stays until then.
//
// present says whether a device is still there; nil asks sysfs
// (/sys/dev/block/MAJOR:MINOR and its devpath). Failures keep their entry
// and are returned joined.
func (m *Mounter) Reconcile(ctx context.Context, present func(Device) bool) (ReconcileReport, error) {
	if m.cfg.PlanOnly {
		return ReconcileReport{}, fmt.Errorf("reconcile mounts: %w", ErrPlanOnly)
	}
	if present == nil {
		present = m.presentInSysfs
	}
	var rep ReconcileReport
	errs := m.reconcileMappings(ctx, present, &rep)
	for _, e := range m.Entries() {
		key := e.Device.DevNum()
		release, ok := m.reserve(key)
		if !ok {
			continue // an operation on it is running; it will update the entry
		}
		m.mu.Lock()
		e, ok = m.entries[key]
		m.mu.Unlock()
		if !ok {
			release()
			continue
		}
		isPresent := present(e.Device)
		if isPresent && !e.Unmounted {
			infos, err := readMounts(m.cfg.mountinfoPath())
			if err != nil {
				release()
				return rep, err
			}
			at := mountsAt(infos, e.MountPoint)
			if slices.ContainsFunc(at, func(mi *mountinfoInfo) bool { return isDeviceMount(mi, e.Device) }) && !deadFUSE(e.MountPoint) {
				rep.Kept = append(rep.Kept, e)
				release()
				continue
			}
		}
		opCtx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		mode := detachIfBusy
		if !isPresent || deadFUSE(e.MountPoint) {
			mode = detachNow
		}
		res, outcome, err := m.cleanup(opCtx, key, e, mode)
		cancel()
		release()
		switch outcome {
		case outcomeCleaned:
			rep.Cleaned = append(rep.Cleaned, res.Entry)
			if res.Lazy {
				rep.Lazy = append(rep.Lazy, res.Entry)
			}
		case outcomeDropped:
			rep.Dropped = append(rep.Dropped, res.Entry)
		case outcomeFailed:
			rep.Failed = append(rep.Failed, res.Entry)
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// deadFUSE reports whether the filesystem at path is a FUSE mount whose
// daemon is gone (stat answers ENOTCONN): it cannot be used, and detaching
// it lets the device be mounted again.
func deadFUSE(path string) bool {
	var st unix.Stat_t
	return errors.Is(unix.Stat(path, &st), unix.ENOTCONN)
}

// presentInSysfs reports whether a block device exists now: its
// /sys/dev/block/MAJOR:MINOR link resolves, to the recorded devpath when
// one was recorded, and its disk has the recorded diskseq when one was
// recorded (device numbers and devpaths are reused: another stick in the
// same port while the daemon was down has both).
func (m *Mounter) presentInSysfs(dev Device) bool {
	link := m.cfg.Roots.SysPath("dev", "block", dev.DevNum())
	target, err := os.Readlink(link)
	if err != nil {
		return false
	}
	if dev.Devpath == "" {
		return true
	}
	abs := filepath.Join(filepath.Dir(link), target)
	if strings.TrimPrefix(abs, filepath.Clean(m.cfg.Roots.Sys)) != dev.Devpath {
		return false
	}
	return dev.Diskseq == 0 || m.diskseq(dev.Devpath) == dev.Diskseq
}

// diskseq is the sequence number the kernel gave the disk of the block
// device at devpath when it appeared (Linux 5.15 and later; a
// partition's is its disk's, the sysfs directory above it). Unlike a
// device number it is never given to another disk until reboot. 0 when
// the kernel has none.
func (m *Mounter) diskseq(devpath string) uint64 {
	if !strings.HasPrefix(devpath, "/devices/") || strings.Contains(devpath, "/../") || strings.HasSuffix(devpath, "/..") {
		return 0
	}
	dir := m.cfg.Roots.SysPath(devpath)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		dir = filepath.Dir(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "diskseq"))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
