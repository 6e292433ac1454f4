package rules

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MQTTSettings are settings.mqtt: the broker hotplugd publishes its
// events, mounts and presence to, and takes commands from. Secrets and
// certificates are read when the file loads, so a daemon starts with
// what `hotplugd check` saw.
type MQTTSettings struct {
	URL      *url.URL // mqtt:// or mqtts://, with a port, without user or password
	Host     string   // this host's topic level, [A-Za-z0-9_-]
	ClientID string
	Username string
	// PasswordFile is where Password was read from; the password itself
	// never sits in the rules file.
	PasswordFile string
	Password     []byte
	CAFile       string
	CertFile     string
	KeyFile      string
	// RootCAs are the certificates of CAFile; nil trusts the system's.
	RootCAs *x509.CertPool
	// Certificates is the client certificate of CertFile and KeyFile.
	Certificates []tls.Certificate
	Prefix       string   // topics are Prefix/Host/...
	QoS          byte     // of every publish
	Events       string   // all, matched or none
	Properties   []string // event properties sent; nil: all
	QueueDir     string   // the on-disk outbox
	QueueMax     int      // messages the outbox holds; beyond, the oldest are dropped
	Commands     bool     // subscribe to Prefix/Host/cmd/+
}

// MQTTTarget publishes a notification to the broker of settings.mqtt, on
// its topic notify/<rule>.
type MQTTTarget struct{}

// Kind returns "mqtt".
func (*MQTTTarget) Kind() string { return "mqtt" }

// Defaults and limits of settings.mqtt.
const (
	DefaultMQTTPrefix   = "hotplugd/v1"
	DefaultMQTTQueueDir = "/var/lib/hotplugd/mqtt"
	DefaultMQTTQueueMax = 10000
	maxMQTTQueue        = 1_000_000
	maxSecretFile       = 4 << 10
	maxCertFile         = 1 << 20
)

var (
	mqttHost     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	mqttClientID = regexp.MustCompile(`^[!-~]{1,128}$`)
	propertyKey  = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
)

var mqttKeys = []string{"url", "host", "client_id", "username", "password_file", "ca_file", "cert_file", "key_file",
	"prefix", "qos", "events", "properties", "queue_dir", "queue_max", "commands"}

// loadMQTT reads settings.mqtt; null means no broker.
func (l *loader) loadMQTT(n *yaml.Node) *MQTTSettings {
	if isNull(n) {
		return nil
	}
	m := &MQTTSettings{Prefix: DefaultMQTTPrefix, QoS: 1, Events: "matched", QueueDir: DefaultMQTTQueueDir,
		QueueMax: DefaultMQTTQueueMax}
	f := l.fields(n, "mqtt", mqttKeys...)
	if v, ok := f["url"]; !ok {
		l.errAt(n, "mqtt needs a url (mqtt://HOST[:PORT] or mqtts://HOST[:PORT])")
	} else {
		m.URL = l.mqttURL(v.val)
	}
	l.mqttNames(f, m)
	l.mqttSecrets(f, m)
	l.mqttTopics(f, m)
	if v, ok := f["queue_dir"]; ok {
		if p, ok := l.dir(v.val, "mqtt.queue_dir"); ok {
			m.QueueDir = p
		}
	}
	if err := UnsafeDir(m.QueueDir, os.Geteuid()); err != nil {
		at := n
		if v, ok := f["queue_dir"]; ok {
			at = v.val
		}
		l.errAt(at, "mqtt.queue_dir: %v", err)
	}
	if v, ok := f["queue_max"]; ok {
		if i, ok := l.integer(v.val, "mqtt.queue_max", 1, maxMQTTQueue); ok {
			m.QueueMax = i
		}
	}
	if v, ok := f["commands"]; ok {
		if b, ok := l.boolean(v.val, "mqtt.commands"); ok {
			m.Commands = b
		}
	}
	return m
}

// mqttURL checks the broker's URL and gives it its default port. A user
// or password in it is refused: the rules file is readable where the
// password file need not be.
func (l *loader) mqttURL(n *yaml.Node) *url.URL {
	s, ok := l.str(n, "mqtt.url")
	if !ok {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		l.errAt(n, "mqtt.url: %v", errors.Unwrap(err))
		return nil
	case u.Scheme != "mqtt" && u.Scheme != "mqtts" || u.Hostname() == "":
		l.errAt(n, "mqtt.url %q must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", s)
		return nil
	case u.User != nil:
		l.errAt(n, "mqtt.url must not hold a user or password: set username and password_file")
		return nil
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "":
		l.errAt(n, "mqtt.url %q must have no path, query or fragment", s)
		return nil
	}
	if u.Port() == "" {
		port := "1883"
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}
}

// mqttNames reads host, client_id and username.
func (l *loader) mqttNames(f map[string]field, m *MQTTSettings) {
	if v, ok := f["host"]; ok {
		if h, ok := l.str(v.val, "mqtt.host"); ok && h != "" {
			if !mqttHost.MatchString(h) {
				l.errAt(v.val, "mqtt.host %q: use 1 to 64 letters, digits, '_' and '-' (it is a topic level)", h)
			}
			m.Host = h
		}
	}
	if m.Host == "" {
		m.Host = DefaultMQTTHost()
	}
	m.ClientID = "hotplugd-" + m.Host
	if v, ok := f["client_id"]; ok {
		if id, ok := l.str(v.val, "mqtt.client_id"); ok && id != "" {
			if !mqttClientID.MatchString(id) {
				l.errAt(v.val, "mqtt.client_id %q: use 1 to 128 printable characters without spaces", id)
			}
			m.ClientID = id
		}
	}
	if v, ok := f["username"]; ok {
		if u, ok := l.str(v.val, "mqtt.username"); ok {
			if len(u) > 256 || strings.ContainsFunc(u, isControl) {
				l.errAt(v.val, "mqtt.username: at most 256 characters, no control characters")
			}
			m.Username = u
		}
	}
}

// DefaultMQTTHost is the host's name reduced to a topic level: its first
// label, each character other than [A-Za-z0-9_-] replaced by '_'.
func DefaultMQTTHost() string {
	h, err := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	if err != nil || h == "" {
		return "localhost"
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), 64)])
}

// mqttSecrets reads password_file, ca_file, cert_file and key_file.
func (l *loader) mqttSecrets(f map[string]field, m *MQTTSettings) {
	if v, ok := f["password_file"]; ok {
		if p, ok := l.dir(v.val, "mqtt.password_file"); ok {
			m.PasswordFile = p
			b, err := readSecret(p)
			if err != nil {
				l.errAt(v.val, "mqtt.password_file: %v", err)
			}
			m.Password = b
		}
	}
	tlsURL := m.URL == nil || m.URL.Scheme == "mqtts"
	if v, ok := f["ca_file"]; ok {
		if p, ok := l.dir(v.val, "mqtt.ca_file"); ok {
			m.CAFile = p
			pool, err := readCAs(p)
			switch {
			case err != nil:
				l.errAt(v.val, "mqtt.ca_file: %v", err)
			case !tlsURL:
				l.errAt(v.val, "mqtt.ca_file needs an mqtts:// url")
			}
			m.RootCAs = pool
		}
	}
	cert, certOK := f["cert_file"]
	key, keyOK := f["key_file"]
	switch {
	case certOK != keyOK && certOK:
		l.errAt(cert.key, "mqtt.cert_file needs key_file too")
	case certOK != keyOK:
		l.errAt(key.key, "mqtt.key_file needs cert_file too")
	case certOK:
		cp, ok1 := l.dir(cert.val, "mqtt.cert_file")
		kp, ok2 := l.dir(key.val, "mqtt.key_file")
		if !ok1 || !ok2 {
			return
		}
		m.CertFile, m.KeyFile = cp, kp
		c, err := readKeyPair(cp, kp)
		switch {
		case err != nil:
			l.errAt(cert.val, "mqtt.cert_file: %v", err)
		case !tlsURL:
			l.errAt(cert.val, "mqtt.cert_file needs an mqtts:// url")
		default:
			m.Certificates = []tls.Certificate{c}
		}
	}
}

// readSecret reads a password file: a regular file others may neither
// read nor write, its content without a trailing line break.
func readSecret(path string) ([]byte, error) {
	b, fi, err := readSmall(path, maxSecretFile)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("%s is readable or writable by others (mode %04o); make it 0600 or 0640", path, perm)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}

func readCAs(path string) (*x509.CertPool, error) {
	b, _, err := readSmall(path, maxCertFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func readKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	cb, _, err := readSmall(certPath, maxCertFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, _, err := readSmall(keyPath, maxCertFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s and %s: %w", certPath, keyPath, err)
	}
	return c, nil
}

// readSmall reads a regular file of at most limit bytes.
func readSmall(path string, limit int64) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, nil, err
	case !fi.Mode().IsRegular():
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	case fi.Size() > limit:
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit))
	return b, fi, err
}

// mqttTopics reads prefix, qos, events and properties.
func (l *loader) mqttTopics(f map[string]field, m *MQTTSettings) {
	if v, ok := f["prefix"]; ok {
		if p, ok := l.str(v.val, "mqtt.prefix"); ok {
			if err := checkTopicPrefix(p); err != nil {
				l.errAt(v.val, "mqtt.prefix %q: %v", p, err)
			} else {
				m.Prefix = p
			}
		}
	}
	if v, ok := f["qos"]; ok {
		if q, ok := l.integer(v.val, "mqtt.qos", 0, 2); ok {
			m.QoS = byte(q)
		}
	}
	if v, ok := f["events"]; ok {
		if e, ok := l.str(v.val, "mqtt.events"); ok {
			switch e {
			case "all", "matched", "none":
				m.Events = e
			default:
				l.errAt(v.val, "mqtt.events must be all, matched or none, not %q", e)
			}
		}
	}
	if v, ok := f["properties"]; ok {
		for i, item := range l.seq(v.val, "mqtt.properties") {
			p, ok := l.str(item, fmt.Sprintf("mqtt.properties[%d]", i))
			switch {
			case !ok:
			case !propertyKey.MatchString(p):
				l.errAt(item, "mqtt.properties[%d] %q is not a property name (like ID_FS_LABEL)", i, p)
			case !slices.Contains(m.Properties, p):
				m.Properties = append(m.Properties, p)
			}
		}
	}
}

// checkTopicPrefix says why p cannot start every topic: it must be
// levels without wildcards, not a $SYS-like system topic.
func checkTopicPrefix(p string) error {
	switch {
	case p == "" || len(p) > 128:
		return errors.New("must be 1 to 128 characters")
	case strings.ContainsAny(p, "+#\x00"):
		return errors.New("must not contain the wildcards + and # or NUL")
	case strings.HasPrefix(p, "$"):
		return errors.New("must not start with $ (topics of the broker itself)")
	case strings.ContainsFunc(p, isControl):
		return errors.New("must not contain control characters")
	case slices.Contains(strings.Split(p, "/"), ""):
		return errors.New("has an empty level (a leading, trailing or double /)")
	}
	return nil
}

// loadMQTTTarget reads the target `mqtt: {}`, which needs settings.mqtt.
func (l *loader) loadMQTTTarget(n, key *yaml.Node) Target {
	l.fields(n, "mqtt")
	if l.settings.MQTT == nil {
		l.errAt(key, "the mqtt target needs settings.mqtt (the broker to publish to)")
	}
	return &MQTTTarget{}
}
