package sdktests

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/upstash/qstash-go"
)

func TestMessageGetReturnsEveryField(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	queue := "go-msg-queue-" + uid()
	defer c.Queues().Delete(queue)
	res, err := c.Enqueue(qstash.EnqueueOptions{
		Queue: queue,
		PublishOptions: qstash.PublishOptions{
			Url:             r.url("/fields?q=1"),
			Body:            "the body",
			Method:          http.MethodPut,
			ContentType:     "text/plain",
			Headers:         map[string]string{"test-header": "test-value"},
			Retries:         qstash.RetryCount(2),
			Callback:        r.url("/cb"),
			FailureCallback: r.url("/fcb"),
			Delay:           "1h",
		},
	})
	must(t, err, "enqueue")
	defer c.Messages().Cancel(res.MessageId)
	m, err := c.Messages().Get(res.MessageId)
	must(t, err, "get")
	if m.MessageId != res.MessageId || m.Url != r.url("/fields?q=1") || m.Method != http.MethodPut ||
		m.Body != "the body" || m.BodyBase64 != "" || m.MaxRetries != 2 || m.Callback != r.url("/cb") ||
		m.FailureCallback != r.url("/fcb") || m.Queue != queue || m.CallerIP != "127.0.0.1" ||
		m.UrlGroup != "" || m.ScheduleId != "" || m.Api != "" {
		t.Fatalf("message %+v", m)
	}
	if m.CreatedAt == 0 || m.NotBefore-m.CreatedAt < 3_599_000 {
		t.Fatalf("createdAt %d, notBefore %d", m.CreatedAt, m.NotBefore)
	}
	want := http.Header{"Content-Type": {"text/plain"}, "Test-Header": {"test-value"}}
	if !reflect.DeepEqual(m.Header, want) {
		t.Fatalf("header %v, want %v", m.Header, want)
	}
}

// The Go SDK reads a URL-group message's group from the key `urlGroup` (QStash's other SDKs
// read `topicName`), and its endpoint from `endpointName`.
func TestMessageGetOfAUrlGroupMessage(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	group := "go-msg-group-" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(group, []qstash.Endpoint{{Url: r.url("/named"), Name: "named"}}), "create group")
	defer c.UrlGroups().Delete(group)
	res, err := c.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: group, Body: "x", Delay: "1h"})
	must(t, err, "publish")
	defer c.Messages().Cancel(res[0].MessageId)
	m, err := c.Messages().Get(res[0].MessageId)
	must(t, err, "get")
	if m.UrlGroup != group || m.Endpoint != "named" || m.Url != r.url("/named") {
		t.Fatalf("message %+v", m)
	}
}

func TestMessageGetAndCancelOfAnUnknownIdFail(t *testing.T) {
	c := client()
	_, err := c.Messages().Get("msg_unknown" + uid())
	mustFail(t, err, "get unknown", "not found")
	mustFail(t, c.Messages().Cancel("msg_unknown"+uid()), "cancel unknown", "not found")
}

func TestCancel(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/cancel"), Delay: "1h"})
	must(t, err, "publish")
	must(t, c.Messages().Cancel(res.MessageId), "cancel")
	list := waitForState(t, c, res.MessageId, qstash.Canceled)
	if !hasState(list, qstash.CancelRequested) {
		t.Fatalf("states %v", states(list))
	}
	// a finished message can be cancelled again without an error
	must(t, c.Messages().Cancel(res.MessageId), "cancel again")

	delivered, err := c.Publish(qstash.PublishOptions{Url: r.url("/done")})
	must(t, err, "publish")
	assertDeliveredEventually(t, c, delivered.MessageId)
	must(t, c.Messages().Cancel(delivered.MessageId), "cancel a delivered message")
}

// The SDK's TestCancelMany.
func TestCancelMany(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	var even, odd []string
	for i := 0; i < 10; i++ {
		res, err := c.PublishJSON(qstash.PublishJSONOptions{Body: map[string]any{"ex_key": "ex_value"}, Url: r.url("/many"), Delay: "60s"})
		must(t, err, "publish")
		if i%2 == 0 {
			even = append(even, res.MessageId)
		} else {
			odd = append(odd, res.MessageId)
		}
	}
	// the SDK sends an empty or null id list in the JSON body: that selects nothing, not all
	for _, none := range [][]string{{}, nil} {
		cancelled, err := c.Messages().CancelMany(none)
		must(t, err, "cancel many of no ids")
		if cancelled != 0 {
			t.Fatalf("cancelling an empty list cancelled %d", cancelled)
		}
	}
	cancelled, err := c.Messages().CancelMany(even)
	must(t, err, "cancel many")
	if cancelled != 5 {
		t.Fatalf("cancelled %d, want 5", cancelled)
	}
	for _, id := range odd {
		list, err := events(c, qstash.EventFilter{MessageId: id})
		must(t, err, "events")
		if hasState(list, qstash.Canceled) || hasState(list, qstash.CancelRequested) {
			t.Fatalf("message %s was not in the list but is cancelled", id)
		}
	}
	// unknown and already cancelled ids are skipped
	cancelled, err = c.Messages().CancelMany(append(append([]string{"msg_unknown"}, even...), odd...))
	must(t, err, "cancel many again")
	if cancelled != 5 {
		t.Fatalf("cancelled %d, want 5", cancelled)
	}
}

// The SDK's TestCancelAll (as user 2, so that no other test's message is cancelled).
func TestCancelAll(t *testing.T) {
	c := newClient(shared, user2)
	r := statusReceiver(t, 400, "bad", nil)
	ids := make([]string, 10)
	for i := range ids {
		res, err := c.PublishJSON(qstash.PublishJSONOptions{Body: map[string]any{"ex_key": "ex_value"}, Url: r.url("/all"), Delay: "30s", Retries: qstash.RetryCount(0)})
		must(t, err, "publish")
		ids[i] = res.MessageId
	}
	mine, err := client().Publish(qstash.PublishOptions{Url: r.url("/user1"), Delay: "1h"})
	must(t, err, "publish as user 1")
	defer client().Messages().Cancel(mine.MessageId)

	cancelled, err := c.Messages().CancelAll()
	must(t, err, "cancel all")
	if cancelled < 10 {
		t.Fatalf("cancelled %d, want at least 10", cancelled)
	}
	for _, id := range ids {
		waitForState(t, c, id, qstash.Canceled)
	}
	list, err := events(client(), qstash.EventFilter{MessageId: mine.MessageId})
	must(t, err, "events of user 1's message")
	if hasState(list, qstash.Canceled) {
		t.Fatal("user 2's cancel-all cancelled user 1's message")
	}
}
