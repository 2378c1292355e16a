package sdktests

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// The SDK's TestEvents: 100 failing messages give exactly 400 entries (CREATED, ACTIVE,
// ERROR, FAILED each) in one page without a count. As user 4, who publishes nothing else.
func TestEvents(t *testing.T) {
	c := newClient(shared, user4)
	r := statusReceiver(t, 404, "404 Not Found", nil)
	now := time.Now()
	for i := 0; i < 100; i++ {
		res, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/events"), Retries: qstash.RetryCount(0)})
		must(t, err, "publish")
		if res.MessageId == "" {
			t.Fatal("no message id")
		}
	}
	waitUntil(t, "400 log entries", func() error {
		list, _, err := c.Events().List(qstash.ListEventsOptions{Filter: qstash.EventFilter{FromDate: now}})
		if err != nil {
			return err
		}
		if len(list) != 400 {
			return fmt.Errorf("%d entries", len(list))
		}
		return nil
	})
}

func TestEventsDeliveredLifecycle(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/life"), Body: "x"})
	must(t, err, "publish")
	list := waitForState(t, c, res.MessageId, qstash.Delivered)
	if got := states(list); !slices.Equal(got, []string{"DELIVERED", "ACTIVE", "CREATED"}) {
		t.Fatalf("states %v, want the latest first", got)
	}
	for i, e := range list {
		if e.MessageId != res.MessageId || e.Url != r.url("/life") || e.Time == 0 || (i > 0 && e.Time > list[i-1].Time) {
			t.Fatalf("entry %+v", e)
		}
	}
	if list[2].NextDeliveryTime == 0 {
		t.Fatalf("CREATED entry without nextDeliveryTime: %+v", list[2])
	}
}

func TestEventsFailedLifecycleAndFilters(t *testing.T) {
	c := client()
	r := statusReceiver(t, 500, "boom", nil)
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	group := "go-events-" + uid()
	queue := "go-events-q-" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(group, []qstash.Endpoint{{Url: a.url("/a"), Name: "ep-a"}, {Url: b.url("/b")}}), "create group")
	defer c.UrlGroups().Delete(group)
	defer c.Queues().Delete(queue)
	start := time.Now()

	failed, err := c.Publish(qstash.PublishOptions{Url: r.url("/failed"), Retries: qstash.RetryCount(0)})
	must(t, err, "publish")
	list := waitForState(t, c, failed.MessageId, qstash.Failed)
	if got := states(list); !slices.Equal(got, []string{"FAILED", "ERROR", "ACTIVE", "CREATED"}) {
		t.Fatalf("states %v", got)
	}
	if list[1].Error == "" {
		t.Fatalf("ERROR entry without an error text: %+v", list[1])
	}
	fanned, err := c.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: group, Body: "g"})
	must(t, err, "publish to group")
	queued, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{Url: a.url("/queued")}})
	must(t, err, "enqueue")
	for _, id := range []string{fanned[0].MessageId, fanned[1].MessageId, queued.MessageId} {
		waitForState(t, c, id, qstash.Delivered)
	}

	check := func(what string, filter qstash.EventFilter, ok func(qstash.Event) bool, atLeast int) {
		t.Helper()
		got, err := events(c, filter)
		must(t, err, "events by "+what)
		if len(got) < atLeast {
			t.Fatalf("%s: %d entries, want at least %d", what, len(got), atLeast)
		}
		for _, e := range got {
			if !ok(e) {
				t.Fatalf("%s: unexpected entry %+v", what, e)
			}
		}
	}
	check("state", qstash.EventFilter{State: qstash.Failed, FromDate: start}, func(e qstash.Event) bool { return e.State == qstash.Failed }, 1)
	check("url", qstash.EventFilter{Url: r.url("/failed")}, func(e qstash.Event) bool { return e.MessageId == failed.MessageId }, 4)
	check("url group", qstash.EventFilter{UrlGroup: group}, func(e qstash.Event) bool {
		return e.UrlGroup == group && (e.MessageId != fanned[0].MessageId || e.EndpointName == "ep-a")
	}, 6)
	check("queue", qstash.EventFilter{Queue: queue}, func(e qstash.Event) bool { return e.QueueName == queue && e.MessageId == queued.MessageId }, 3)
	check("dates", qstash.EventFilter{MessageId: failed.MessageId, FromDate: start, ToDate: time.Now().Add(time.Second)}, func(e qstash.Event) bool { return true }, 4)
	none, err := events(c, qstash.EventFilter{MessageId: failed.MessageId, ToDate: start.Add(-time.Hour)})
	must(t, err, "events before start")
	if len(none) != 0 {
		t.Fatalf("toDate before the message matched %d entries", len(none))
	}
	// the Go SDK sends the obsolete `api` filter when it is set
	_, err = events(c, qstash.EventFilter{Api: "llm"})
	must(t, err, "events with the api filter")
}

func TestEventsCursorPagination(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	path := "/pages-" + uid()
	for i := 0; i < 2; i++ {
		res, err := c.Publish(qstash.PublishOptions{Url: r.url(path)})
		must(t, err, "publish")
		waitForState(t, c, res.MessageId, qstash.Delivered)
	}
	all, err := events(c, qstash.EventFilter{Url: r.url(path)})
	must(t, err, "all entries")
	if len(all) != 6 {
		t.Fatalf("%d entries, want 6", len(all))
	}
	var paged []qstash.Event
	cursor := ""
	for pages := 1; ; pages++ {
		list, next, err := c.Events().List(qstash.ListEventsOptions{Count: 4, Cursor: cursor, Filter: qstash.EventFilter{Url: r.url(path)}})
		must(t, err, "page")
		if len(list) > 4 {
			t.Fatalf("page of %d for count 4", len(list))
		}
		paged = append(paged, list...)
		if next == "" {
			break
		}
		if pages > 3 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if len(paged) != len(all) {
		t.Fatalf("pages held %d entries, one request %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i] != all[i] {
			t.Fatalf("entry %d differs: %+v vs %+v", i, paged[i], all[i])
		}
	}
}
