package daemon

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/broker"
	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// openBroker makes the MQTT client of settings.mqtt, if any, with its
// outbox opened: a queue_dir that cannot be used stops the start.
func (d *daemon) openBroker(s rules.Settings) error {
	if s.MQTT == nil {
		return nil
	}
	c, err := broker.New(broker.Config{Settings: s.MQTT, Version: d.cfg.Version, BootID: d.bootID(),
		Since: d.startedAt, Handlers: controlHandlers{d}, Log: d.log})
	if err != nil {
		return err
	}
	d.broker = c
	return nil
}

// bootID is the kernel's boot_id, which with a SEQNUM makes an event's
// id unique across reboots.
func (d *daemon) bootID() string {
	b, err := os.ReadFile(d.cfg.Roots.ProcPath("sys/kernel/random/boot_id"))
	if id := strings.TrimSpace(string(b)); err == nil && id != "" {
		return id
	}
	d.log.Warn("no boot_id: event ids are unique within this start only", "err", err)
	return "boot-" + d.startedAt.UTC().Format("20060102T150405Z")
}

// notifyPublisher is the broker as the mqtt notify target's publisher;
// nil (no interface holding a nil pointer) without one.
func (d *daemon) notifyPublisher() notify.Publisher {
	if d.broker == nil {
		return nil
	}
	return d.broker
}

// startBroker connects, once the mounts are reconciled, and publishes
// them.
func (d *daemon) startBroker() {
	if d.broker == nil {
		return
	}
	if err := d.broker.Start(); err != nil {
		d.log.Error("mqtt broker not started; events are handled locally", "err", err)
		return
	}
	d.mountsChanged()
}

// mountsChanged hands the mounts to the broker (retained P/mounts); the
// broker publishes them only when they differ from the last.
func (d *daemon) mountsChanged() {
	if d.broker == nil {
		return
	}
	ms := []control.MountStatus{}
	if d.deps != nil && d.deps.Mounter != nil {
		for _, e := range d.deps.Mounter.Entries() {
			ms = append(ms, mountStatus(e))
		}
	}
	d.broker.Mounts(ms)
}

// closeBroker lets the outbox drain briefly, says offline and
// disconnects; what is left waits on disk.
func (d *daemon) closeBroker() {
	if d.broker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.broker.Close(ctx)
}

// brokerStatus is status's broker, nil without one.
func (d *daemon) brokerStatus() *control.BrokerStatus {
	if d.broker == nil {
		return nil
	}
	return d.broker.Status()
}

// registerBrokerMetrics makes the hotplugd_broker_* series.
func (d *daemon) registerBrokerMetrics() {
	if d.broker == nil {
		return
	}
	m := d.metrics
	published := m.Counter("hotplugd_broker_messages_published_total")
	dropped := make(map[string]func(uint64))
	for _, r := range broker.DropReasons {
		c := m.Counter("hotplugd_broker_messages_dropped_total", "reason", r)
		dropped[r] = c.Set
	}
	m.OnExpose(func() {
		st := d.broker.Stats()
		published.Set(st.Published)
		for r, n := range st.Dropped {
			if set, ok := dropped[r]; ok {
				set(n)
			}
		}
	})
	m.Gauge(func() float64 {
		if d.broker.Stats().Connected {
			return 1
		}
		return 0
	}, "hotplugd_broker_connected")
	m.Gauge(func() float64 { return float64(d.broker.Stats().Queue) }, "hotplugd_broker_queue_messages")
}

// warnMQTTReload says that settings.mqtt changes at the next start.
func (d *daemon) warnMQTTReload(a, b *rules.MQTTSettings) {
	if (a == nil) != (b == nil) || a != nil && (a.URL.String() != b.URL.String() || a.Host != b.Host ||
		a.Prefix != b.Prefix || a.Events != b.Events || a.QueueDir != b.QueueDir || a.Commands != b.Commands) {
		d.log.Warn("settings.mqtt takes effect at the next start; the broker connection in force stays")
	}
}
