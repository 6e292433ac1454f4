package rules

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// writeCert writes a self-signed certificate and its key as PEM files
// into dir and returns their paths.
func writeCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write(t, cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	write(t, key, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})), 0o600)
	return cert, key
}

func write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestMQTTSettings(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	pw := filepath.Join(dir, "pw")
	write(t, pw, "s3cret\n", 0o600)
	queue := filepath.Join(dir, "queue")
	rs := mustParse(t, `settings:
  mqtt:
    url: mqtts://broker.example
    host: kiosk-12
    username: kiosk-12
    password_file: `+pw+`
    ca_file: `+cert+`
    cert_file: `+cert+`
    key_file: `+key+`
    prefix: site/a
    qos: 2
    events: all
    properties: [ID_FS_LABEL, ID_SERIAL, ID_FS_LABEL]
    queue_dir: `+queue+`
    queue_max: 100
    commands: true
rules:
  - name: n
    match: action == "add"
    actions:
      - notify: {message: hi, targets: [{mqtt: {}}]}
`)
	m := rs.Settings.MQTT
	if m == nil {
		t.Fatal("no mqtt settings")
	}
	if m.RootCAs == nil || len(m.Certificates) != 1 {
		t.Errorf("CAs %v, certificates %d; want both read", m.RootCAs, len(m.Certificates))
	}
	got := *m
	got.RootCAs, got.Certificates = nil, nil
	want := MQTTSettings{URL: got.URL, Host: "kiosk-12", ClientID: "hotplugd-kiosk-12", Username: "kiosk-12",
		PasswordFile: pw, Password: []byte("s3cret"), CAFile: cert, CertFile: cert, KeyFile: key, Prefix: "site/a",
		QoS: 2, Events: "all", Properties: []string{"ID_FS_LABEL", "ID_SERIAL"}, QueueDir: queue, QueueMax: 100, Commands: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mqtt (-want +got):\n%s", diff)
	}
	if got.URL.String() != "mqtts://broker.example:8883" {
		t.Errorf("url %s, want the default port", got.URL)
	}
	targets := rs.Rules[0].Actions[0].(*NotifySpec).Targets
	if len(targets) != 1 || targets[0].Kind() != "mqtt" {
		t.Errorf("targets %v, want mqtt", targets)
	}
}

func TestMQTTDefaults(t *testing.T) {
	rs := mustParse(t, "settings:\n  mqtt: {url: \"mqtt://127.0.0.1\"}\nrules: []\n")
	m := rs.Settings.MQTT
	want := MQTTSettings{URL: m.URL, Host: DefaultMQTTHost(), ClientID: "hotplugd-" + DefaultMQTTHost(),
		Prefix: "hotplugd/v1", QoS: 1, Events: "matched", QueueDir: "/var/lib/hotplugd/mqtt", QueueMax: 10000}
	if diff := cmp.Diff(want, *m); diff != "" {
		t.Errorf("mqtt (-want +got):\n%s", diff)
	}
	if m.URL.String() != "mqtt://127.0.0.1:1883" {
		t.Errorf("url %s", m.URL)
	}
	if h := DefaultMQTTHost(); !mqttHost.MatchString(h) {
		t.Errorf("default host %q is not a topic level", h)
	}
	if rs := mustParse(t, "settings:\n  mqtt:\nrules: []\n"); rs.Settings.MQTT != nil {
		t.Errorf("mqtt: null configured a broker")
	}
}

// TestMQTTErrors: every problem of settings.mqtt is reported with its
// place, secrets and directories included.
func TestMQTTErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: the unreadable password file is readable")
	}
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	write(t, open, "pw", 0o644)
	empty := filepath.Join(dir, "empty")
	write(t, empty, "\n", 0o600)
	notPEM := filepath.Join(dir, "ca.pem")
	write(t, notPEM, "hello", 0o644)
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"no url", `{host: a}`, []string{`t.yaml:2:9: mqtt needs a url`}},
		{"scheme", `{url: "http://b"}`, []string{`t.yaml:2:15: mqtt.url "http://b" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]`}},
		{"password in url", `{url: "mqtt://u:p@b"}`, []string{`t.yaml:2:15: mqtt.url must not hold a user or password: set username and password_file`}},
		{"path", `{url: "mqtt://b/x"}`, []string{`t.yaml:2:15: mqtt.url "mqtt://b/x" must have no path, query or fragment`}},
		{"host", `{url: "mqtt://b", host: "a/b"}`, []string{`t.yaml:2:33: mqtt.host "a/b": use 1 to 64 letters`}},
		{"missing password", `{url: "mqtt://b", password_file: /nonexistent/pw}`, []string{`t.yaml:2:42: mqtt.password_file: open /nonexistent/pw: no such file or directory`}},
		{"open password", `{url: "mqtt://b", password_file: ` + open + `}`, []string{`is readable or writable by others (mode 0644)`}},
		{"empty password", `{url: "mqtt://b", password_file: ` + empty + `}`, []string{`is empty`}},
		{"relative password", `{url: "mqtt://b", password_file: pw}`, []string{`mqtt.password_file must be an absolute path`}},
		{"ca not pem", `{url: "mqtts://b", ca_file: ` + notPEM + `}`, []string{`holds no PEM certificate`}},
		{"ca without tls", `{url: "mqtt://b", ca_file: /etc/ssl/certs/ca-certificates.crt}`, []string{`mqtt.ca_file needs an mqtts:// url`}},
		{"cert alone", `{url: "mqtts://b", cert_file: /x}`, []string{`t.yaml:2:28: mqtt.cert_file needs key_file too`}},
		{"prefix", `{url: "mqtt://b", prefix: "a/+/b"}`, []string{`mqtt.prefix "a/+/b": must not contain the wildcards`}},
		{"prefix sys", `{url: "mqtt://b", prefix: "$SYS"}`, []string{`must not start with $`}},
		{"prefix slash", `{url: "mqtt://b", prefix: "a/"}`, []string{`has an empty level`}},
		{"qos", `{url: "mqtt://b", qos: 3}`, []string{`t.yaml:2:32: mqtt.qos must be a whole number from 0 to 2`}},
		{"events", `{url: "mqtt://b", events: some}`, []string{`mqtt.events must be all, matched or none, not "some"`}},
		{"properties", `{url: "mqtt://b", properties: ["a b"]}`, []string{`mqtt.properties[0] "a b" is not a property name`}},
		{"queue dir shared", `{url: "mqtt://b", queue_dir: ` + shared + `}`, []string{`mqtt.queue_dir: ` + shared + ` is writable by its group or others (mode 0777)`}},
		{"queue max", `{url: "mqtt://b", queue_max: 0}`, []string{`mqtt.queue_max must be a whole number from 1 to 1000000`}},
		{"unknown key", `{url: "mqtt://b", password: x}`, []string{`unknown key "password" in mqtt`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTest(t, "settings:\n  mqtt: "+tt.yaml+"\nrules: []\n")
			lines := errLines(err)
			if len(lines) != len(tt.want) {
				t.Fatalf("errors %q, want %d like %q", lines, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("error %q, want it to contain %q", lines[i], w)
				}
			}
		})
	}
}

func TestMQTTTargetNeedsSettings(t *testing.T) {
	_, err := parseTest(t, `rules:
  - name: n
    match: action == "add"
    actions:
      - notify: {message: hi, targets: [mqtt: {}]}
`)
	want := []string{`t.yaml:5:41: rule "n": the mqtt target needs settings.mqtt (the broker to publish to)`}
	if diff := cmp.Diff(want, errLines(err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}
