package sdktests

import (
	"fmt"
	"slices"
	"testing"

	"github.com/upstash/qstash-go"
)

// The SDK's TestBatch: every item carries "queue": "" and its own headers.
func TestBatch(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	const n = 3
	items := make([]qstash.BatchOptions, n)
	for i := range items {
		items[i] = qstash.BatchOptions{
			Body:    fmt.Sprintf("hi %d", i),
			Url:     r.url(fmt.Sprintf("/batch/%d", i)),
			Retries: qstash.RetryCount(0),
			Headers: map[string]string{
				fmt.Sprintf("test-header-%d", i): fmt.Sprintf("test-value-%d", i),
				"Content-Type":                   "text/plain",
			},
		}
	}
	responses, err := c.Batch(items)
	must(t, err, "batch")
	if len(responses) != n {
		t.Fatalf("%d responses", len(responses))
	}
	for i, response := range responses {
		if len(response) != 1 || response[0].MessageId == "" {
			t.Fatalf("response %d: %+v", i, response)
		}
		d := r.waitForMessage(t, response[0].MessageId)
		if d.Path != fmt.Sprintf("/batch/%d", i) || string(d.Body) != fmt.Sprintf("hi %d", i) ||
			d.Header.Get(fmt.Sprintf("Test-Header-%d", i)) != fmt.Sprintf("test-value-%d", i) ||
			d.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("item %d delivered as %s", i, describe(d))
		}
		message, err := c.Messages().Get(response[0].MessageId)
		must(t, err, "get")
		if message.MaxRetries != 0 || message.Queue != "" {
			t.Fatalf("item %d stored as %+v", i, message)
		}
	}
}

// The SDK's TestBatchMixed and TestBatchJSONMixed: URL-group items answer a nested array.
func TestBatchMixesUrlGroupsUrlsAndQueues(t *testing.T) {
	c := client()
	first, second, plain := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	group := "go_url_group_" + uid()
	queue := "go-batch-queue-" + uid()
	must(t, c.UrlGroups().Delete(group), "delete a group that does not exist")
	must(t, c.UrlGroups().UpsertEndpoints(group, []qstash.Endpoint{
		{Url: first.url("/g"), Name: "First endpoint"},
		{Url: second.url("/g"), Name: "Second endpoint"},
	}), "create group")
	defer c.UrlGroups().Delete(group)
	defer c.Queues().Delete(queue)

	responses, err := c.BatchJSON([]qstash.BatchJSONOptions{
		{UrlGroup: group, Body: map[string]any{"hi": 0}, Retries: qstash.RetryCount(0)},
		{Url: plain.url("/plain"), Body: map[string]any{"hi": 1}, Retries: qstash.RetryCount(0)},
		{Url: plain.url("/queued"), Queue: queue, Body: map[string]any{"hi": 2}},
		{UrlGroup: group, Queue: queue, Body: map[string]any{"hi": 3}},
	})
	must(t, err, "batch json")
	if len(responses) != 4 || len(responses[0]) != 2 || len(responses[1]) != 1 || len(responses[2]) != 1 || len(responses[3]) != 2 {
		t.Fatalf("responses %+v", responses)
	}
	for _, i := range []int{0, 3} {
		if responses[i][0].Url != first.url("/g") || responses[i][1].Url != second.url("/g") {
			t.Fatalf("group item %d: %+v", i, responses[i])
		}
	}
	for _, r := range []*receiver{first, second} {
		for _, i := range []int{0, 3} {
			id := responses[i][0].MessageId
			if r == second {
				id = responses[i][1].MessageId
			}
			d := r.waitForMessage(t, id)
			if d.Header.Get("Upstash-Topic-Name") != group || string(d.Body) != fmt.Sprintf(`{"hi":%d}`, i) ||
				d.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("group delivery %s", describe(d))
			}
		}
	}
	plain.waitForMessage(t, responses[1][0].MessageId)
	plain.waitForMessage(t, responses[2][0].MessageId)
	for _, id := range []string{responses[2][0].MessageId, responses[3][0].MessageId, responses[3][1].MessageId} {
		message, err := c.Messages().Get(id)
		must(t, err, "get queued item")
		if message.Queue != queue {
			t.Fatalf("queued item stored as %+v", message)
		}
	}
	queues, err := c.Queues().List()
	must(t, err, "list queues")
	if !slices.ContainsFunc(queues, func(q qstash.QueueWithLag) bool { return q.Name == queue }) {
		t.Fatalf("the batch did not create queue %s: %+v", queue, queues)
	}
}

func TestBatchOfOneItemIsStillAnArray(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	responses, err := c.Batch([]qstash.BatchOptions{{Url: r.url("/one"), Body: "only"}})
	must(t, err, "batch")
	if len(responses) != 1 || len(responses[0]) != 1 {
		t.Fatalf("responses %+v", responses)
	}
	r.waitForMessage(t, responses[0][0].MessageId)
}

func TestBatchItemsOfOneQueueKeepTheirOrder(t *testing.T) {
	c := client()
	r, g := newGauge(t, holdShort)
	queue := "go-batch-fifo-" + uid()
	defer c.Queues().Delete(queue)
	var items []qstash.BatchOptions
	for i := 0; i < 5; i++ {
		items = append(items, qstash.BatchOptions{Url: r.url("/fifo"), Queue: queue, Body: fmt.Sprint(i)})
	}
	_, err := c.Batch(items)
	must(t, err, "batch")
	r.waitFor(t, "five deliveries", 5, nil)
	peak, bodies := g.result()
	if peak != 1 || !slices.Equal(bodies, []string{"0", "1", "2", "3", "4"}) {
		t.Fatalf("peak %d, order %v", peak, bodies)
	}
}

func TestBatchWithOneBadItemStoresNothing(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	_, err := c.Batch([]qstash.BatchOptions{
		{Url: r.url("/good"), Body: "good"},
		{Url: r.url("/bad"), Body: "bad", Delay: "whenever"},
	})
	mustFail(t, err, "batch with a bad delay", "batch item 1: invalid Upstash-Delay")
	probe, err := c.Publish(qstash.PublishOptions{Url: r.url("/probe")})
	must(t, err, "probe")
	r.waitForMessage(t, probe.MessageId)
	if got := r.requests(); len(got) != 1 {
		t.Fatalf("a refused batch delivered %d item(s)", len(got)-1)
	}
}

func TestBatchDeduplicatesPerItem(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	id := "batch-dedup-" + uid()
	responses, err := c.Batch([]qstash.BatchOptions{
		{Url: r.url("/d"), Body: "1", DeduplicationId: id},
		{Url: r.url("/d"), Body: "2", DeduplicationId: id},
		{Url: r.url("/d"), Body: "3"},
	})
	must(t, err, "batch")
	a, b, other := responses[0][0], responses[1][0], responses[2][0]
	if a.Deduplicated || !b.Deduplicated || b.MessageId != a.MessageId || other.Deduplicated {
		t.Fatalf("responses %+v", responses)
	}
}

// As in the SDK's TestBatchJSONMixed: a Content-Type among the headers of a JSON item reaches
// the destination as its one Content-Type (the SDK forwards it next to application/json).
func TestBatchJSONWithAContentTypeHeaderDeliversOneContentType(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	responses, err := c.BatchJSON([]qstash.BatchJSONOptions{{Url: r.url("/ct"), Body: map[string]any{"hi": 0}, Headers: map[string]string{"Content-Type": "text/plain"}}})
	must(t, err, "batch json")
	single, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/ct"), Body: map[string]any{"hi": 1}, Headers: map[string]string{"Content-Type": "text/plain"}})
	must(t, err, "publish json")
	for _, id := range []string{responses[0][0].MessageId, single.MessageId} {
		d := r.waitForMessage(t, id)
		if got := d.Header.Values("Content-Type"); !slices.Equal(got, []string{"text/plain"}) {
			t.Fatalf("Content-Type lines %q", got)
		}
		m, err := c.Messages().Get(id)
		must(t, err, "get")
		if got := m.Header.Values("Content-Type"); !slices.Equal(got, []string{"text/plain"}) {
			t.Fatalf("stored Content-Type %q", got)
		}
	}
}
