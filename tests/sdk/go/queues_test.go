package sdktests

import (
	"fmt"
	"slices"
	"testing"

	"github.com/upstash/qstash-go"
)

// The SDK's TestQueue, as user 3, who has no other queue.
func TestQueue(t *testing.T) {
	c := newClient(shared, user3)
	name := "test-queue"
	must(t, c.Queues().Upsert(qstash.Queue{Name: name, Parallelism: 1}), "upsert")
	queue, err := c.Queues().Get(name)
	must(t, err, "get")
	if queue.Name != name || queue.Parallelism != 1 || queue.IsPaused || queue.Lag != 0 || queue.CreatedAt == 0 || queue.UpdatedAt < queue.CreatedAt {
		t.Fatalf("queue %+v", queue)
	}
	// reconfigure the parallelism
	must(t, c.Queues().Upsert(qstash.Queue{Name: name, Parallelism: 2}), "upsert again")
	queues, err := c.Queues().List()
	must(t, err, "list")
	if len(queues) != 1 || queues[0].Name != name || queues[0].Parallelism != 2 {
		t.Fatalf("queues %+v", queues)
	}
	must(t, c.Queues().Delete(name), "delete")
	queues, err = c.Queues().List()
	must(t, err, "list")
	if len(queues) != 0 {
		t.Fatalf("queues after delete %+v", queues)
	}
	must(t, c.Queues().Delete(name), "delete again")
	_, err = c.Queues().Get(name)
	mustFail(t, err, "get deleted", "not found")
}

// The SDK's TestQueuePauseAndResume.
func TestQueuePauseAndResume(t *testing.T) {
	c := newClient(shared, user3)
	name := "test-queue-pause"
	defer c.Queues().Delete(name)
	must(t, c.Queues().Upsert(qstash.Queue{Name: name, Parallelism: 1}), "upsert")
	steps := []struct {
		what   string
		action func() error
		paused bool
	}{
		{"created", func() error { return nil }, false},
		{"pause", func() error { return c.Queues().Pause(name) }, true},
		{"pause again", func() error { return c.Queues().Pause(name) }, true},
		{"resume", func() error { return c.Queues().Resume(name) }, false},
		{"resume again", func() error { return c.Queues().Resume(name) }, false},
		{"pause by upsert", func() error { return c.Queues().Upsert(qstash.Queue{Name: name, Parallelism: 1, IsPaused: true}) }, true},
		{"resume by upsert", func() error { return c.Queues().Upsert(qstash.Queue{Name: name, Parallelism: 1}) }, false},
	}
	for _, step := range steps {
		must(t, step.action(), step.what)
		queue, err := c.Queues().Get(name)
		must(t, err, "get")
		if queue.IsPaused != step.paused {
			t.Fatalf("after %s: paused %v", step.what, queue.IsPaused)
		}
	}
}

// The Go SDK always sends `parallelism`, 0 when the caller leaves it out; tern refuses 0.
func TestQueueUpsertValidation(t *testing.T) {
	c := client()
	err := c.Queues().Upsert(qstash.Queue{Name: "go-zero-" + uid()})
	mustFail(t, err, "upsert without parallelism", "parallelism")
	err = c.Queues().Upsert(qstash.Queue{Name: "bad name!", Parallelism: 1})
	if err == nil {
		t.Fatal("an invalid queue name was accepted")
	}
	_, err = c.Enqueue(qstash.EnqueueOptions{Queue: "bad name!", PublishOptions: qstash.PublishOptions{Url: "http://127.0.0.1:9/x"}})
	if err == nil {
		t.Fatal("enqueue to an invalid queue name was accepted")
	}
}

// The SDK's TestEnqueue and TestEnqueueJSON: the queue is created on the fly.
func TestEnqueueCreatesTheQueueAndDelivers(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	queue := "go-enqueue-" + uid()
	defer c.Queues().Delete(queue)
	res, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{
		Body: "test-body", Url: r.url("/q"), Headers: map[string]string{"test-header": "test-value"},
	}})
	must(t, err, "enqueue")
	d := r.waitForMessage(t, res.MessageId)
	if string(d.Body) != "test-body" || d.Header.Get("Test-Header") != "test-value" {
		t.Fatalf("delivery %s", describe(d))
	}
	jsonRes, err := c.EnqueueJSON(qstash.EnqueueJSONOptions{Queue: queue, PublishJSONOptions: qstash.PublishJSONOptions{
		Body: map[string]any{"test": "body"}, Url: r.url("/q"), DeduplicationId: "go-q-" + queue,
	}})
	must(t, err, "enqueue json")
	again, err := c.EnqueueJSON(qstash.EnqueueJSONOptions{Queue: queue, PublishJSONOptions: qstash.PublishJSONOptions{
		Body: map[string]any{"test": "body"}, Url: r.url("/q"), DeduplicationId: "go-q-" + queue,
	}})
	must(t, err, "enqueue json again")
	if !again.Deduplicated || again.MessageId != jsonRes.MessageId {
		t.Fatalf("second enqueue %+v", again)
	}
	d = r.waitForMessage(t, jsonRes.MessageId)
	if string(d.Body) != `{"test":"body"}` || d.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("delivery %s", describe(d))
	}
	queueInfo, err := c.Queues().Get(queue)
	must(t, err, "get queue")
	if queueInfo.Parallelism != 1 || queueInfo.IsPaused {
		t.Fatalf("auto-created queue %+v", queueInfo)
	}
	m, err := c.Messages().Get(res.MessageId)
	must(t, err, "get message")
	if m.Queue != queue {
		t.Fatalf("message %+v", m)
	}
}

func TestQueueParallelismLimitsDeliveriesInFlight(t *testing.T) {
	for _, parallelism := range []int{1, 2} {
		t.Run(fmt.Sprint(parallelism), func(t *testing.T) {
			c := client()
			r, g := newGauge(t, holdShort)
			queue := fmt.Sprintf("go-parallel-%d-%s", parallelism, uid())
			defer c.Queues().Delete(queue)
			must(t, c.Queues().Upsert(qstash.Queue{Name: queue, Parallelism: parallelism}), "upsert")
			var want []string
			for i := 0; i < 6; i++ {
				want = append(want, fmt.Sprint(i))
				_, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{Url: r.url("/p"), Body: fmt.Sprint(i)}})
				must(t, err, "enqueue")
			}
			r.waitFor(t, "six deliveries", 6, nil)
			peak, bodies := g.result()
			if peak != parallelism {
				t.Fatalf("peak %d in flight, want %d", peak, parallelism)
			}
			if parallelism == 1 && !slices.Equal(bodies, want) {
				t.Fatalf("order %v", bodies)
			}
		})
	}
}

func TestPausedQueueDeliversNothingUntilResumed(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	queue := "go-paused-" + uid()
	defer c.Queues().Delete(queue)
	must(t, c.Queues().Upsert(qstash.Queue{Name: queue, Parallelism: 1, IsPaused: true}), "upsert paused")
	held, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{Url: r.url("/held"), Body: "held"}})
	must(t, err, "enqueue")
	// a probe through another queue to the same receiver arrives; the held message does not
	probe, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue + "-probe", PublishOptions: qstash.PublishOptions{Url: r.url("/probe")}})
	must(t, err, "enqueue probe")
	defer c.Queues().Delete(queue + "-probe")
	r.waitForMessage(t, probe.MessageId)
	if got := r.requests(); len(got) != 1 {
		t.Fatalf("a paused queue delivered: %v", got)
	}
	info, err := c.Queues().Get(queue)
	must(t, err, "get")
	if info.Lag != 1 || !info.IsPaused {
		t.Fatalf("paused queue %+v", info)
	}
	must(t, c.Queues().Resume(queue), "resume")
	r.waitForMessage(t, held.MessageId)
}

func TestDeletingAQueueCancelsItsWaitingMessages(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	queue := "go-delete-" + uid()
	must(t, c.Queues().Upsert(qstash.Queue{Name: queue, Parallelism: 1, IsPaused: true}), "upsert paused")
	res, err := c.Enqueue(qstash.EnqueueOptions{Queue: queue, PublishOptions: qstash.PublishOptions{Url: r.url("/gone")}})
	must(t, err, "enqueue")
	must(t, c.Queues().Delete(queue), "delete")
	waitForState(t, c, res.MessageId, qstash.Canceled)
}

// The SDK's TestEnqueueToUrlGroup.
func TestEnqueueToUrlGroup(t *testing.T) {
	c := client()
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	group := "go_url_group_q_" + uid()
	queue := "go-group-queue-" + uid()
	must(t, c.UrlGroups().Delete(group), "delete a group that does not exist")
	must(t, c.UrlGroups().UpsertEndpoints(group, []qstash.Endpoint{{Url: a.url("/a")}, {Url: b.url("/b")}}), "create group")
	defer c.UrlGroups().Delete(group)
	defer c.Queues().Delete(queue)
	res, err := c.UrlGroups().EnqueueJSON(qstash.EnqueueUrlGroupJSONOptions{
		Queue: queue,
		PublishUrlGroupJSONOptions: qstash.PublishUrlGroupJSONOptions{
			UrlGroup: group,
			Body:     map[string]any{"test": "body"},
			Headers:  map[string]string{"test-header": "test-value"},
		},
	})
	must(t, err, "enqueue to the group")
	if len(res) != 2 || res[0].MessageId == "" || res[1].MessageId == "" || res[0].Url != a.url("/a") || res[1].Url != b.url("/b") {
		t.Fatalf("responses %+v", res)
	}
	for i, r := range []*receiver{a, b} {
		d := r.waitForMessage(t, res[i].MessageId)
		if d.Header.Get("Test-Header") != "test-value" || d.Header.Get("Upstash-Topic-Name") != group {
			t.Fatalf("delivery %s", describe(d))
		}
		m, err := c.Messages().Get(res[i].MessageId)
		must(t, err, "get")
		if m.Queue != queue {
			t.Fatalf("message %+v", m)
		}
	}
	// the plain-body variant
	plain, err := c.UrlGroups().Enqueue(qstash.EnqueueUrlGroupOptions{Queue: queue, PublishUrlGroupOptions: qstash.PublishUrlGroupOptions{UrlGroup: group, Body: "plain"}})
	must(t, err, "enqueue plain")
	if len(plain) != 2 {
		t.Fatalf("responses %+v", plain)
	}
	a.waitForMessage(t, plain[0].MessageId)
}
