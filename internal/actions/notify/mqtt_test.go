package notify

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// recordingPublisher is what the broker's client is to a Sender.
type recordingPublisher struct {
	mu   sync.Mutex
	docs map[string][]byte
}

func (p *recordingPublisher) PublishNotify(rule string, doc []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.docs == nil {
		p.docs = map[string][]byte{}
	}
	p.docs[rule] = doc
}

// TestMQTTTarget: the mqtt target hands the webhook's document, with the
// rendered message, to the broker's outbox.
func TestMQTTTarget(t *testing.T) {
	pub := &recordingPublisher{}
	n := NewNotifier(NotifierConfig{MQTT: pub})
	defer n.Close(context.Background())
	s, err := NewSender(n, nil, []rules.Target{&rules.MQTTTarget{}})
	if err != nil {
		t.Fatal(err)
	}
	ev := stickEvent(t, `"quoted" {label}`)
	if err := s.Send(context.Background(), Notification{Rule: "r", Message: "Mounted it", Event: ev, DevNode: "/dev/sdb1"}); err != nil {
		t.Fatal(err)
	}
	var doc webhookDoc
	if err := json.Unmarshal(pub.docs["r"], &doc); err != nil {
		t.Fatalf("%v: %s", err, pub.docs["r"])
	}
	if doc.Rule != "r" || doc.Message != "Mounted it" || doc.Event.Env["ID_FS_LABEL"] != `"quoted" {label}` {
		t.Errorf("document %+v", doc)
	}
	if _, err := NewSender(NewNotifier(NotifierConfig{}), nil, []rules.Target{&rules.MQTTTarget{}}); !errors.Is(err, ErrNoBroker) {
		t.Errorf("an mqtt target without a broker: %v, want ErrNoBroker", err)
	}
}
