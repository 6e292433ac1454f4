package mqtttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CA is a certificate authority made for one test with openssl.
type CA struct {
	Dir      string
	CertFile string // PEM, for settings.mqtt.ca_file
	KeyFile  string
}

// NewCA makes a self-signed CA (EC P-256, valid a day) named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	need(t, tool("openssl") != "", "openssl (Debian package openssl)")
	dir := t.TempDir()
	ca := &CA{Dir: dir, CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", ca.KeyFile, "-out", ca.CertFile, "-days", "1", "-subj", "/CN="+name,
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	return ca
}

// Issue makes a key and a certificate signed by the CA for 127.0.0.1
// and localhost, usable by a server and a client, and returns their
// files.
func (ca *CA) Issue(t testing.TB, name string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(ca.Dir, name+".crt"), filepath.Join(ca.Dir, name+".key")
	csr := filepath.Join(ca.Dir, name+".csr")
	ext := filepath.Join(ca.Dir, name+".ext")
	if err := os.WriteFile(ext, []byte("subjectAltName=IP:127.0.0.1,DNS:localhost\n"+
		"extendedKeyUsage=serverAuth,clientAuth\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, ca.Dir, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", key, "-out", csr, "-subj", "/CN="+name)
	openssl(t, ca.Dir, "x509", "-req", "-in", csr, "-CA", ca.CertFile, "-CAkey", ca.KeyFile, "-CAcreateserial",
		"-out", cert, "-days", "1", "-extfile", ext)
	return cert, key
}

func openssl(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool("openssl"), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
}
