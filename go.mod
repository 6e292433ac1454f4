module github.com/hotplugd/hotplugd

go 1.26.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/expr-lang/expr v1.17.8
	github.com/google/go-cmp v0.7.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require go.yaml.in/yaml/v3 v3.0.6

require github.com/moby/sys/mountinfo v0.7.3

require (
	github.com/VictoriaMetrics/metrics v1.45.0
	github.com/eclipse/paho.golang v0.23.0
	github.com/godbus/dbus/v5 v5.2.4
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/valyala/fastrand v1.1.0 // indirect
	github.com/valyala/histogram v1.2.0 // indirect
	golang.org/x/net v0.43.0 // indirect
)
