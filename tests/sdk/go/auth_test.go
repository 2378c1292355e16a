package sdktests

import (
	"testing"

	"github.com/upstash/qstash-go"
)

var badUser = devUser{token: "not-a-token"}

func TestAnInvalidTokenIsRefusedAndNothingIsDelivered(t *testing.T) {
	c := newClient(shared, badUser)
	r := newReceiver(t, nil)
	_, err := c.Publish(qstash.PublishOptions{Url: r.url("/nope"), Body: "x"})
	if err == nil {
		t.Fatal("publish with an invalid token was accepted")
	}
	calls := map[string]func() error{
		"batch":        func() error { _, err := c.Batch([]qstash.BatchOptions{{Url: r.url("/nope")}}); return err },
		"messages.get": func() error { _, err := c.Messages().Get("msg_x"); return err },
		"cancel all":   func() error { _, err := c.Messages().CancelAll(); return err },
		"queues.list":  func() error { _, err := c.Queues().List(); return err },
		"schedules":    func() error { _, err := c.Schedules().List(); return err },
		"url groups":   func() error { _, err := c.UrlGroups().List(); return err },
		"dlq.list":     func() error { _, _, err := c.Dlq().List(qstash.ListDlqOptions{}); return err },
		"events":       func() error { _, _, err := c.Events().List(qstash.ListEventsOptions{}); return err },
		"keys.get":     func() error { _, err := c.Keys().Get(); return err },
		"keys.rotate":  func() error { _, err := c.Keys().Rotate(); return err },
	}
	for name, call := range calls {
		err := call()
		if err == nil {
			t.Fatalf("%s with an invalid token succeeded", name)
		}
		// tern's JSON error text, not a decoding error
		if err.Error() == "" || err.Error()[0] == '{' {
			t.Fatalf("%s: error %q", name, err)
		}
	}
	probe, err := client().Publish(qstash.PublishOptions{Url: r.url("/probe")})
	must(t, err, "probe")
	r.waitForMessage(t, probe.MessageId)
	if got := r.requests(); len(got) != 1 {
		t.Fatalf("refused requests were delivered: %d requests", len(got))
	}
}

func TestAnotherUserCannotSeeOrCancelMessages(t *testing.T) {
	c := client()
	other := newClient(shared, user2)
	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/private"), Delay: "1h"})
	must(t, err, "publish")
	defer c.Messages().Cancel(res.MessageId)
	_, err = other.Messages().Get(res.MessageId)
	mustFail(t, err, "user 2 reads user 1's message", "not found")
	mustFail(t, other.Messages().Cancel(res.MessageId), "user 2 cancels user 1's message", "not found")
	cancelled, err := other.Messages().CancelMany([]string{res.MessageId})
	must(t, err, "user 2 cancels by id")
	if cancelled != 0 {
		t.Fatalf("user 2 cancelled %d of user 1's messages", cancelled)
	}
	list, err := events(other, qstash.EventFilter{MessageId: res.MessageId})
	must(t, err, "user 2 lists user 1's log")
	if len(list) != 0 {
		t.Fatalf("user 2 sees %d log entries of user 1", len(list))
	}
	m, err := c.Messages().Get(res.MessageId)
	must(t, err, "user 1 still reads it")
	if m.MessageId != res.MessageId {
		t.Fatalf("message %+v", m)
	}
}
