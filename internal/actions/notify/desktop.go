package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/hotplugd/hotplugd/internal/account"
	"github.com/hotplugd/hotplugd/internal/actions/run"
)

// notifyHelperEnv, set to notifyHelperMode, makes RunNotifyHelper act as
// the desktop helper. The daemon sets it in the helper's environment,
// which it builds from nothing.
const (
	notifyHelperEnv  = "HOTPLUGD_NOTIFY_HELPER"
	notifyHelperMode = "desktop"
	// notifyHelperArgv0 is the helper's argv[0]. The environment alone
	// does not make a helper: `sudo -E hotplugd` keeps the caller's, and
	// would then talk, as root, to a bus the caller chose. argv[0] is the
	// daemon's to set, not a sudo caller's.
	notifyHelperArgv0 = "hotplugd-notify"
)

// The notification as the daemon sends it (Desktop Notifications
// Specification, org.freedesktop.Notifications.Notify).
const (
	desktopAppName = "hotplugd"
	desktopIcon    = "drive-removable-media" // freedesktop icon naming spec
	// desktopExpire -1: the server's default expiry.
	desktopExpire = -1
	// maxDesktopRequest bounds what the helper reads from stdin.
	maxDesktopRequest = 1 << 20
	// maxHelperOutput bounds what is kept of the helper's stdout and
	// stderr for the log.
	maxHelperOutput = 4 << 10
)

// D-Bus names of the notification server and of logind.
const (
	notificationsName  = "org.freedesktop.Notifications"
	notificationsPath  = "/org/freedesktop/Notifications"
	login1Name         = "org.freedesktop.login1"
	login1Path         = "/org/freedesktop/login1"
	login1Manager      = "org.freedesktop.login1.Manager"
	login1Session      = "org.freedesktop.login1.Session"
	dbusPropertiesIntf = "org.freedesktop.DBus.Properties"
)

// desktopRequest is the helper's stdin.
type desktopRequest struct {
	AppName string `json:"app_name"`
	Icon    string `json:"icon"`
	Summary string `json:"summary"` // plain text
	Body    string `json:"body"`    // markup, already escaped
	Expire  int32  `json:"expire_timeout"`
	// TimeoutMS bounds the helper on its own, in case the daemon dies
	// before it could kill it.
	TimeoutMS int64 `json:"timeout_ms"`
}

// sessionUser is a user with an active graphical session and a session
// bus to deliver to.
type sessionUser struct {
	uid uint32
	bus string // path of the bus socket
}

// deliverDesktop shows m in every active graphical session, as the
// session's user, concurrently. A missing session or bus and a hung or
// failing notification server are logged at debug: a headless machine or
// a locked-down desktop is normal, not an error of the daemon.
func (n *Notifier) deliverDesktop(ctx context.Context, m *notification) {
	req, err := json.Marshal(desktopRequest{
		AppName:   desktopAppName,
		Icon:      desktopIcon,
		Summary:   plainText(m.rule),
		Body:      markupEscape(m.message),
		Expire:    desktopExpire,
		TimeoutMS: n.cfg.DesktopTimeout.Milliseconds(),
	})
	if err != nil {
		n.failed.Add(1)
		n.log.LogAttrs(ctx, slog.LevelError, "desktop notification", slog.String("rule", m.rule), slog.Any("err", err))
		return
	}
	sctx, cancel := context.WithTimeout(ctx, n.cfg.DesktopTimeout)
	users, err := n.desktopUsers(sctx)
	cancel()
	if err != nil {
		n.log.LogAttrs(ctx, slog.LevelDebug, "desktop notification skipped", slog.String("rule", m.rule),
			slog.String("reason", "no session list"), slog.Any("err", err))
		return
	}
	if len(users) == 0 {
		n.log.LogAttrs(ctx, slog.LevelDebug, "desktop notification skipped", slog.String("rule", m.rule),
			slog.String("reason", "no active graphical session with a session bus"))
		return
	}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() { n.notifyUser(ctx, u, m.rule, req) })
	}
	wg.Wait()
}

// notifyUser runs the helper as u and waits for it, at most
// DesktopTimeout.
func (n *Notifier) notifyUser(ctx context.Context, u sessionUser, rule string, req []byte) {
	attrs := []slog.Attr{slog.String("rule", rule), slog.Uint64("uid", uint64(u.uid))}
	id, err := n.notifyAs(ctx, u, req)
	if err != nil {
		n.failed.Add(1)
		n.log.LogAttrs(ctx, slog.LevelDebug, "desktop notification skipped",
			append(attrs, slog.String("reason", "delivery failed"), slog.Any("err", err))...)
		return
	}
	n.delivered.Add(1)
	n.log.LogAttrs(ctx, slog.LevelDebug, "desktop notification sent", append(attrs, slog.String("id", id))...)
}

func (n *Notifier) notifyAs(ctx context.Context, u sessionUser, req []byte) (id string, err error) {
	cred, err := lookupCredential(u.uid)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DesktopTimeout)
	defer cancel()
	out, err := n.runDesktopHelper(ctx, cred, "unix:path="+dbus.EscapeBusAddressValue(u.bus), req)
	return strings.TrimSpace(out), err
}

// desktopUsers lists the users to notify: those logind reports with an
// active x11, wayland or mir session that is not a greeter, or, when
// logind cannot be asked (no system bus, no logind), every user with a
// runtime directory under RunUserDir. Either way a user counts only if
// RunUserDir/UID is a directory and RunUserDir/UID/bus a socket, both
// owned by that user.
func (n *Notifier) desktopUsers(ctx context.Context) ([]sessionUser, error) {
	uids, err := logindUsers(ctx, n.cfg.SystemBusAddress)
	if err != nil {
		n.log.LogAttrs(ctx, slog.LevelDebug, "logind not available; looking for session buses",
			slog.String("dir", n.cfg.RunUserDir), slog.Any("err", err))
		if uids, err = scanRunUserDir(n.cfg.RunUserDir); err != nil {
			return nil, err
		}
	}
	var users []sessionUser
	for _, uid := range uids {
		bus, err := userBus(n.cfg.RunUserDir, uid)
		if err != nil {
			n.log.LogAttrs(ctx, slog.LevelDebug, "no session bus for user", slog.Uint64("uid", uint64(uid)),
				slog.Any("err", err))
			continue
		}
		users = append(users, sessionUser{uid: uid, bus: bus})
	}
	return users, nil
}

// login1SessionEntry is one entry of logind's ListSessions, a(susso).
type login1SessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// logindUsers asks logind (org.freedesktop.login1(5)) for the users of
// the active graphical sessions, sorted and without duplicates. The
// daemon talks to the system bus as itself: that bus belongs to the
// system, not to a user.
func logindUsers(ctx context.Context, address string) ([]uint32, error) {
	conn, err := dbus.Connect(address, dbus.WithContext(ctx),
		dbus.WithAuth(dbus.AuthExternal(strconv.Itoa(os.Geteuid()))))
	if err != nil {
		return nil, fmt.Errorf("system bus %s: %w", address, err)
	}
	defer conn.Close()
	var sessions []login1SessionEntry
	if err := conn.Object(login1Name, login1Path).CallWithContext(ctx, login1Manager+".ListSessions", 0).Store(&sessions); err != nil {
		return nil, fmt.Errorf("logind ListSessions: %w", err)
	}
	var uids []uint32
	for _, s := range sessions {
		var props map[string]dbus.Variant
		err := conn.Object(login1Name, s.Path).CallWithContext(ctx, dbusPropertiesIntf+".GetAll", 0, login1Session).Store(&props)
		if err != nil {
			return nil, fmt.Errorf("logind session %s: %w", s.ID, err)
		}
		if graphicalActive(props) && !slices.Contains(uids, s.UID) {
			uids = append(uids, s.UID)
		}
	}
	slices.Sort(uids)
	return uids, nil
}

// graphicalActive reports whether logind's session properties describe
// the active session of a seat or remote display that shows
// notifications: Active, of Type x11, wayland or mir, and not a greeter.
func graphicalActive(props map[string]dbus.Variant) bool {
	str := func(k string) string {
		s, _ := props[k].Value().(string)
		return s
	}
	active, _ := props["Active"].Value().(bool)
	switch str("Type") {
	case "x11", "wayland", "mir":
	default:
		return false
	}
	return active && str("Class") != "greeter"
}

// lookupCredential resolves the uid of a session to the Credential the
// helper runs with: primary group and supplementary groups from the user
// database. A uid without an account gets no notification: its groups
// cannot be known.
func lookupCredential(uid uint32) (*run.Credential, error) {
	u, err := account.LookupID(uid)
	if err != nil {
		return nil, err
	}
	return run.NewCredential(u), nil
}

// plainText makes s fit for a plain-text field of a notification: valid
// UTF-8 (D-Bus refuses anything else, and drops the connection that sent
// it), no NUL and no control characters but newline and tab.
func plainText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r >= 0x20 && r != 0x7f && (r < 0x80 || r >= 0xa0) {
			return r
		}
		return '\uFFFD'
	}, s)
}

// markupEscape makes s a notification body that servers display as the
// text it is: plainText, then &, <, >, ' and " as entities, so a device
// label like <a href="..."> or <img src="..."> is shown, not
// interpreted (the body-markup capability of the specification).
func markupEscape(s string) string {
	return html.EscapeString(plainText(s))
}

// RunNotifyHelper turns the process into the desktop-notification helper
// when the daemon started it as one (see the package doc: argv[0] and the
// environment both say so) and exits; otherwise it returns at once. main calls it
// before anything else. The helper runs as a session's user, reads one
// notification as JSON from stdin, calls Notify on the session bus named
// by DBUS_SESSION_BUS_ADDRESS and prints the notification id.
func RunNotifyHelper() {
	if len(os.Args) == 0 || os.Args[0] != notifyHelperArgv0 || os.Getenv(notifyHelperEnv) != notifyHelperMode {
		return
	}
	err := notifyHelper(os.Stdin, os.Stdout, os.Getenv("DBUS_SESSION_BUS_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotplugd notify helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// errHelperInput is a helper's stdin that is not one notification.
var errHelperInput = errors.New("bad notification on stdin")

func notifyHelper(stdin io.Reader, stdout io.Writer, address string) error {
	var req desktopRequest
	b, err := io.ReadAll(io.LimitReader(stdin, maxDesktopRequest+1))
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", errHelperInput, err)
	case len(b) > maxDesktopRequest:
		return fmt.Errorf("%w: more than %d bytes", errHelperInput, maxDesktopRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("%w: %w", errHelperInput, err)
	}
	if address == "" {
		return errors.New("no DBUS_SESSION_BUS_ADDRESS")
	}
	ctx := context.Background()
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	conn, err := dbus.Connect(address, dbus.WithContext(ctx),
		dbus.WithAuth(dbus.AuthExternal(strconv.Itoa(os.Geteuid()))))
	if err != nil {
		return fmt.Errorf("session bus: %w", err)
	}
	defer conn.Close()
	var id uint32
	err = conn.Object(notificationsName, notificationsPath).CallWithContext(ctx, notificationsName+".Notify", 0,
		req.AppName, uint32(0), req.Icon, req.Summary, req.Body,
		[]string{}, map[string]dbus.Variant{}, req.Expire).Store(&id)
	if err != nil {
		return fmt.Errorf("calling Notify: %w", err)
	}
	_, err = fmt.Fprintln(stdout, id)
	return err
}

// userRuntimeDir is RUNUSERDIR/UID.
func userRuntimeDir(runUserDir string, uid uint32) string {
	return filepath.Join(runUserDir, strconv.FormatUint(uint64(uid), 10))
}
