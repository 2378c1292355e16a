package sdktests

import (
	"fmt"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// notFound answers like the SDK tests' httpstat.us/404, with an immediate retry (the Go SDK
// cannot set a retry delay).
func notFound(t testing.TB) *receiver {
	return statusReceiver(t, 404, "404 Not Found", map[string]string{"Retry-After": "0"})
}

// The SDK's AssertFailedEventually: one DLQ entry per message, with the literal response body
// on both the list and the get.
func assertFailedEventually(t *testing.T, c *qstash.Client, messageIDs ...string) []string {
	t.Helper()
	dlqIDs := make([]string, len(messageIDs))
	for i, id := range messageIDs {
		entry := waitForDlq(t, c, id)
		got, err := c.Dlq().Get(entry.DlqId)
		must(t, err, "get DLQ entry")
		if entry.ResponseBody != "404 Not Found" || got.ResponseBody != "404 Not Found" || got.DlqId != entry.DlqId {
			t.Fatalf("DLQ entry %+v, get %+v", entry, got)
		}
		dlqIDs[i] = entry.DlqId
	}
	return dlqIDs
}

// The SDK's TestDlqGetAndDelete.
func TestDlqGetAndDelete(t *testing.T) {
	c := client()
	r := notFound(t)
	res, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/dlq?x=1"), Retries: qstash.RetryCount(1), Body: map[string]any{"k": "v"}, Headers: map[string]string{"test-header": "test-value"}})
	must(t, err, "publish")
	ids := assertFailedEventually(t, c, res.MessageId)
	if n := len(r.requests()); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
	entry, err := c.Dlq().Get(ids[0])
	must(t, err, "get")
	if entry.MessageId != res.MessageId || entry.Url != r.url("/dlq?x=1") || entry.Body != `{"k":"v"}` || entry.MaxRetries != 1 ||
		entry.ResponseStatus != 404 || entry.ResponseHeaders.Get("Retry-After") != "0" || entry.Header.Get("Test-Header") != "test-value" ||
		entry.Method != "POST" || entry.CallerIP != "127.0.0.1" {
		t.Fatalf("DLQ entry %+v", entry)
	}
	must(t, c.Dlq().Delete(ids[0]), "delete")
	mustFail(t, c.Dlq().Delete(ids[0]), "delete again", "not found")
	_, err = c.Dlq().Get(ids[0])
	mustFail(t, err, "get deleted", "not found")
}

// The SDK's TestDlqGetAndDeleteMany.
func TestDlqGetAndDeleteMany(t *testing.T) {
	c := client()
	r := notFound(t)
	ids := make([]string, 3)
	for i := range ids {
		res, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/many"), Retries: qstash.RetryCount(1)})
		must(t, err, "publish")
		ids[i] = res.MessageId
	}
	dlqIDs := assertFailedEventually(t, c, ids...)
	// an empty or null id list in the JSON body deletes nothing
	for _, none := range [][]string{{}, nil} {
		deleted, err := c.Dlq().DeleteMany(none)
		must(t, err, "delete many of no ids")
		if deleted != 0 {
			t.Fatalf("deleting an empty list deleted %d", deleted)
		}
	}
	deleted, err := c.Dlq().DeleteMany(dlqIDs)
	must(t, err, "delete many")
	if deleted != 3 {
		t.Fatalf("deleted %d, want 3", deleted)
	}
	// ids no longer in the DLQ are skipped
	deleted, err = c.Dlq().DeleteMany(dlqIDs)
	must(t, err, "delete many again")
	if deleted != 0 {
		t.Fatalf("deleted %d again", deleted)
	}
}

func TestDlqListFilters(t *testing.T) {
	c := client()
	r := newReceiver(t, func(d delivery) reply {
		if d.Path == "/teapot" {
			return reply{status: 418, body: "teapot"}
		}
		return reply{status: 500, body: "boom"}
	})
	queue := "go-dlq-queue-" + uid()
	defer c.Queues().Delete(queue)
	start := time.Now()
	plain, err := c.Publish(qstash.PublishOptions{Url: r.url("/plain"), Retries: qstash.RetryCount(0)})
	must(t, err, "publish")
	teapot, err := c.Publish(qstash.PublishOptions{Url: r.url("/teapot"), Retries: qstash.RetryCount(0)})
	must(t, err, "publish")
	queued, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{Url: r.url("/queued"), Retries: qstash.RetryCount(0)}})
	must(t, err, "enqueue")
	for _, id := range []string{plain.MessageId, teapot.MessageId, queued.MessageId} {
		waitForDlq(t, c, id)
	}
	only := func(what string, filter qstash.DlqFilter, want ...string) {
		t.Helper()
		list, _, err := c.Dlq().List(qstash.ListDlqOptions{Filter: filter})
		must(t, err, "list by "+what)
		got := map[string]bool{}
		for _, e := range list {
			got[e.MessageId] = true
		}
		for _, id := range want {
			if !got[id] {
				t.Fatalf("%s: %s missing from %d entries", what, id, len(list))
			}
		}
		if len(want) > 0 && len(list) != len(want) {
			t.Fatalf("%s: %d entries, want %d", what, len(list), len(want))
		}
	}
	only("url", qstash.DlqFilter{Url: r.url("/plain")}, plain.MessageId)
	only("queue", qstash.DlqFilter{Queue: queue}, queued.MessageId)
	only("status", qstash.DlqFilter{ResponseStatus: 418, FromDate: start}, teapot.MessageId)
	only("message id", qstash.DlqFilter{MessageId: queued.MessageId}, queued.MessageId)
	only("caller ip and dates", qstash.DlqFilter{CallerIP: "127.0.0.1", Url: r.url("/teapot"), FromDate: start, ToDate: time.Now().Add(time.Second)}, teapot.MessageId)
	list, _, err := c.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{Url: r.url("/plain"), ToDate: start.Add(-time.Hour)}})
	must(t, err, "list before start")
	if len(list) != 0 {
		t.Fatalf("toDate before the entries matched %d", len(list))
	}
	// the Go SDK sends the obsolete `api` filter when it is set
	_, _, err = c.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{Api: "llm"}})
	must(t, err, "list with the api filter")
}

func TestDlqPagination(t *testing.T) {
	c := client()
	r := statusReceiver(t, 500, "boom", nil)
	path := "/page-" + uid()
	want := map[string]bool{}
	for i := 0; i < 5; i++ {
		res, err := c.Publish(qstash.PublishOptions{Url: r.url(path), Body: fmt.Sprint(i), Retries: qstash.RetryCount(0)})
		must(t, err, "publish")
		want[res.MessageId] = true
		waitForDlq(t, c, res.MessageId)
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 1; ; pages++ {
		list, next, err := c.Dlq().List(qstash.ListDlqOptions{Count: 2, Cursor: cursor, Filter: qstash.DlqFilter{Url: r.url(path)}})
		must(t, err, "list a page")
		if len(list) > 2 {
			t.Fatalf("page of %d entries for count 2", len(list))
		}
		for _, e := range list {
			if seen[e.MessageId] {
				t.Fatalf("%s on two pages", e.MessageId)
			}
			seen[e.MessageId] = true
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if len(seen) != len(want) {
		t.Fatalf("pages held %d entries, want %d", len(seen), len(want))
	}
}

func TestDlqIsPerUser(t *testing.T) {
	c := client()
	r := statusReceiver(t, 500, "boom", nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/mine"), Retries: qstash.RetryCount(0)})
	must(t, err, "publish")
	entry := waitForDlq(t, c, res.MessageId)
	other := newClient(shared, user2)
	_, err = other.Dlq().Get(entry.DlqId)
	mustFail(t, err, "user 2 reads user 1's DLQ entry", "not found")
	list, _, err := other.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{MessageId: res.MessageId}})
	must(t, err, "user 2 lists")
	if len(list) != 0 {
		t.Fatalf("user 2 sees %d of user 1's entries", len(list))
	}
	mustFail(t, other.Dlq().Delete(entry.DlqId), "user 2 deletes user 1's entry", "not found")
	_, err = c.Dlq().Get(entry.DlqId)
	must(t, err, "user 1's entry survives")
}
