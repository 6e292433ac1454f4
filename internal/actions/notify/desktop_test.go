package notify

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// escapedLabels is each of hostileLabels as a notification body: markup
// characters as entities, control characters but newline and tab as
// U+FFFD.
var escapedLabels = map[string]string{
	`"},"admin":true,"x":{"`:        `&#34;},&#34;admin&#34;:true,&#34;x&#34;:{&#34;`,
	"line\r\nX-Injected: 1\r\n\r\n": "line\uFFFD\nX-Injected: 1\uFFFD\n\uFFFD\n",
	`<a href="http://evil.example/">click</a><img src="x" onerror="alert(1)"><b>bold</b>`: `&lt;a href=&#34;http://evil.example/&#34;&gt;click&lt;/a&gt;` +
		`&lt;img src=&#34;x&#34; onerror=&#34;alert(1)&#34;&gt;&lt;b&gt;bold&lt;/b&gt;`,
	`%s%d%n%x%!`: `%s%d%n%x%!`,
	`'single' "double" \back\slash &amp; &lt;`: `&#39;single&#39; &#34;double&#34; \back\slash &amp;amp; &amp;lt;`,
	"{{ devnode }} $(reboot) `id`":             "{{ devnode }} $(reboot) `id`",
	"\u202etxt.exe \u00e9t\u00e9 \U0001F600":   "\u202etxt.exe \u00e9t\u00e9 \U0001F600",
}

func TestDesktopMarkupEscape(t *testing.T) {
	for _, label := range hostileLabels {
		want, ok := escapedLabels[label]
		if !ok {
			t.Fatalf("no escaped form of %q", label)
		}
		if got := markupEscape(label); got != want {
			t.Errorf("markupEscape(%q) = %q, want %q", label, got, want)
		}
	}
	for in, want := range map[string]string{
		"tab\tnul\x00esc\x1b[2Jdel\x7fc1\u0085": "tab\tnul\uFFFDesc\uFFFD[2Jdel\uFFFDc1\uFFFD",
		"not utf-8: \xff\xfe":                   "not utf-8: \uFFFD",
		"":                                      "",
	} {
		if got := markupEscape(in); got != want {
			t.Errorf("markupEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDesktopGraphicalActive(t *testing.T) {
	v := dbus.MakeVariant
	tests := []struct {
		name  string
		props map[string]dbus.Variant
		want  bool
	}{
		{"active wayland", map[string]dbus.Variant{"Active": v(true), "Type": v("wayland"), "Class": v("user")}, true},
		{"active x11", map[string]dbus.Variant{"Active": v(true), "Type": v("x11"), "Class": v("user")}, true},
		{"active mir without class", map[string]dbus.Variant{"Active": v(true), "Type": v("mir")}, true},
		{"inactive x11", map[string]dbus.Variant{"Active": v(false), "Type": v("x11"), "Class": v("user")}, false},
		{"active tty", map[string]dbus.Variant{"Active": v(true), "Type": v("tty"), "Class": v("user")}, false},
		{"active greeter", map[string]dbus.Variant{"Active": v(true), "Type": v("wayland"), "Class": v("greeter")}, false},
		{"wrong types", map[string]dbus.Variant{"Active": v("yes"), "Type": v(uint32(1))}, false},
		{"nothing", nil, false},
	}
	for _, tt := range tests {
		if got := graphicalActive(tt.props); got != tt.want {
			t.Errorf("%s: graphicalActive = %v, want %v", tt.name, got, tt.want)
		}
	}
}
