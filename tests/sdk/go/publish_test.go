package sdktests

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

func TestPublishDeliversBodyAndStandardHeaders(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	url := r.url("/publish?a=1&b=two%20words")
	res, err := c.Publish(qstash.PublishOptions{
		Url:         url,
		Body:        "test-body",
		ContentType: "text/plain",
		Headers:     map[string]string{"test-header": "test-value"},
		Retries:     qstash.RetryCount(0),
	})
	must(t, err, "publish")
	if res.MessageId == "" || res.Deduplicated || res.Url != "" {
		t.Fatalf("publish response %+v: want a message id only", res)
	}
	d := r.waitForMessage(t, res.MessageId)
	if d.Method != http.MethodPost || d.Path != "/publish?a=1&b=two%20words" || string(d.Body) != "test-body" {
		t.Fatalf("delivery %s", describe(d))
	}
	want := map[string]string{
		"Content-Type":    "text/plain",
		"Test-Header":     "test-value",
		"User-Agent":      "Upstash-QStash",
		"Upstash-Retried": "0",
	}
	for name, value := range want {
		if got := d.Header.Get(name); got != value {
			t.Errorf("header %s = %q, want %q", name, got, value)
		}
	}
	if d.Header.Get("Upstash-Signature") == "" || d.Header.Get("Upstash-Forward-Test-Header") != "" {
		t.Errorf("delivery headers %v", d.Header)
	}
	assertDeliveredEventually(t, c, res.MessageId)
}

// The SDK's TestPublishToUrlWithDelay: the stored message is exactly what was published.
func TestPublishToUrlWithDelay(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{
		Body:    "test-body",
		Url:     r.url(""),
		Headers: map[string]string{"test-header": "test-value"},
		Retries: qstash.RetryCount(0),
		Delay:   "10s",
	})
	must(t, err, "publish")
	message, err := c.Messages().Get(res.MessageId)
	must(t, err, "get")
	if message.Body != "test-body" || message.Url != r.url("") || message.MessageId != res.MessageId {
		t.Fatalf("message %+v", message)
	}
	if want := (http.Header{"Test-Header": []string{"test-value"}}); !reflect.DeepEqual(message.Header, want) {
		t.Fatalf("header %v, want %v", message.Header, want)
	}
	if message.Method != http.MethodPost || message.MaxRetries != 0 || message.CallerIP != "127.0.0.1" {
		t.Fatalf("message %+v", message)
	}
	if gap := message.NotBefore - message.CreatedAt; gap < 9_000 || gap > 11_000 {
		t.Fatalf("notBefore %d is %d ms after createdAt %d, want 10 s", message.NotBefore, gap, message.CreatedAt)
	}
	must(t, c.Messages().Cancel(res.MessageId), "cancel")
	waitForState(t, c, res.MessageId, qstash.Canceled)
}

func TestPublishJSONSendsAJSONBody(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	res, err := c.PublishJSON(qstash.PublishJSONOptions{
		Url:     r.url("/json"),
		Body:    map[string]any{"ex_key": "ex_value", "n": 1},
		Headers: map[string]string{"test-header": "test-value"},
	})
	must(t, err, "publish json")
	d := r.waitForMessage(t, res.MessageId)
	var got map[string]any
	must(t, json.Unmarshal(d.Body, &got), "decode body")
	if got["ex_key"] != "ex_value" || got["n"] != float64(1) || d.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("delivery %s", describe(d))
	}
	assertDeliveredEventually(t, c, res.MessageId)
}

func TestPublishWithMethod(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	for _, method := range []string{"PUT", "PATCH", "DELETE", "GET"} {
		res, err := c.Publish(qstash.PublishOptions{Url: r.url("/m/" + method), Method: method, Body: "b-" + method})
		must(t, err, "publish "+method)
		d := r.waitForMessage(t, res.MessageId)
		if d.Method != method || string(d.Body) != "b-"+method {
			t.Fatalf("%s: delivery %s", method, describe(d))
		}
		message, err := c.Messages().Get(res.MessageId)
		must(t, err, "get")
		if message.Method != method {
			t.Fatalf("stored method %q, want %q", message.Method, method)
		}
	}
}

func TestPublishNonUTF8BodyIsDeliveredAndStoredAsBase64(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	body := "\xff\xfe\x00binary"
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/bin"), Body: body, ContentType: "application/octet-stream", Delay: "1s"})
	must(t, err, "publish")
	message, err := c.Messages().Get(res.MessageId)
	must(t, err, "get")
	if message.Body != "" || message.BodyBase64 != "//4AYmluYXJ5" {
		t.Fatalf("body %q, bodyBase64 %q", message.Body, message.BodyBase64)
	}
	d := r.waitForMessage(t, res.MessageId)
	if string(d.Body) != body {
		t.Fatalf("delivered %q", d.Body)
	}
}

func TestDelayAndNotBeforePostponeDelivery(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	delayed, err := c.Publish(qstash.PublishOptions{Url: r.url("/delay"), Delay: "2s"})
	must(t, err, "publish delayed")
	at := time.Now().Add(2 * time.Second).Unix()
	notBefore, err := c.Publish(qstash.PublishOptions{Url: r.url("/not-before"), NotBefore: strconv.FormatInt(at, 10)})
	must(t, err, "publish not-before")
	// not-before wins over delay
	both, err := c.Publish(qstash.PublishOptions{Url: r.url("/both"), NotBefore: strconv.FormatInt(at, 10), Delay: "1h"})
	must(t, err, "publish both")

	for _, id := range []string{delayed.MessageId, notBefore.MessageId, both.MessageId} {
		message, err := c.Messages().Get(id)
		must(t, err, "get")
		d := r.waitForMessage(t, id)
		if d.At.UnixMilli() < message.NotBefore {
			t.Fatalf("%s delivered at %d, before notBefore %d", message.Url, d.At.UnixMilli(), message.NotBefore)
		}
		if id != delayed.MessageId && message.NotBefore != at*1000 {
			t.Fatalf("%s: notBefore %d, want %d", message.Url, message.NotBefore, at*1000)
		}
	}
}

func TestRetriesThenSuccess(t *testing.T) {
	c := client()
	// The Go SDK cannot set Upstash-Retry-Delay; the response's Retry-After steers the retry.
	r := newReceiver(t, func(d delivery) reply {
		if d.Header.Get("Upstash-Retried") != "2" {
			return reply{status: 500, body: "not yet", header: map[string]string{"Retry-After": "0"}}
		}
		return reply{}
	})
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/retry"), Body: "x", Retries: qstash.RetryCount(2)})
	must(t, err, "publish")
	got := r.waitFor(t, "three attempts", 3, nil)
	for i, d := range got {
		if d.Header.Get("Upstash-Retried") != strconv.Itoa(i) || d.messageID() != res.MessageId {
			t.Fatalf("attempt %d: %s", i, describe(d))
		}
	}
	list := waitForState(t, c, res.MessageId, qstash.Delivered)
	errors := 0
	for _, e := range list {
		if e.State == qstash.Error {
			errors++
		}
	}
	if errors != 2 {
		t.Fatalf("%d ERROR entries, want 2: %v", errors, states(list))
	}
}

func TestTimeout(t *testing.T) {
	c := client()
	// the SDK's TestTimeout: a fast destination is delivered within the timeout
	fast := newReceiver(t, nil)
	res, err := c.PublishJSON(qstash.PublishJSONOptions{Body: map[string]any{"ex_key": "ex_value"}, Url: fast.url("/fast"), Timeout: "1s"})
	must(t, err, "publish")
	assertDeliveredEventually(t, c, res.MessageId)

	// a slow one fails the attempt and, with no retries left, lands in the DLQ without a status
	slow := newReceiver(t, func(delivery) reply { return reply{hold: time.Minute} })
	res, err = c.Publish(qstash.PublishOptions{Url: slow.url("/slow"), Body: "slow", Timeout: "1s", Retries: qstash.RetryCount(0)})
	must(t, err, "publish slow")
	message, err := c.Messages().Get(res.MessageId)
	must(t, err, "get")
	if message.MessageId != res.MessageId {
		t.Fatalf("message %+v", message)
	}
	entry := waitForDlq(t, c, res.MessageId)
	if entry.ResponseStatus != 0 {
		t.Fatalf("DLQ entry of a timed-out attempt has responseStatus %d", entry.ResponseStatus)
	}
	waitForState(t, c, res.MessageId, qstash.Failed)
}

func TestCallbackAndFailureCallback(t *testing.T) {
	c := client()
	dest := statusReceiver(t, 404, "404 Not Found", nil)
	callbacks := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{
		Url:             dest.url("/fails"),
		Body:            "source-body",
		Retries:         qstash.RetryCount(0),
		Callback:        callbacks.url("/cb"),
		FailureCallback: callbacks.url("/failure"),
	})
	must(t, err, "publish")
	cb := callbacks.waitFor(t, "callback", 1, func(d delivery) bool { return d.Path == "/cb" })[0]
	fcb := callbacks.waitFor(t, "failure callback", 1, func(d delivery) bool { return d.Path == "/failure" })[0]
	receiver := qstash.NewReceiver(user1.current, user1.next)
	for _, d := range []delivery{cb, fcb} {
		var body map[string]any
		must(t, json.Unmarshal(d.Body, &body), "decode callback body "+d.Path)
		if body["status"] != float64(404) || body["sourceMessageId"] != res.MessageId || body["sourceBody"] != "c291cmNlLWJvZHk=" {
			t.Fatalf("%s body %v", d.Path, body)
		}
		err := receiver.Verify(qstash.VerifyOptions{Signature: d.Header.Get("Upstash-Signature"), Body: string(d.Body), Url: callbacks.url(d.Path)})
		must(t, err, "verify the signature of "+d.Path)
		if d.Path == "/failure" {
			entry := waitForDlq(t, c, res.MessageId)
			if body["dlqId"] != entry.DlqId {
				t.Fatalf("failure callback dlqId %v, DLQ entry %s", body["dlqId"], entry.DlqId)
			}
		}
	}

	// a callback after a successful delivery
	ok := newReceiver(t, nil)
	res, err = c.Publish(qstash.PublishOptions{Url: ok.url("/ok"), Body: "fine", Callback: callbacks.url("/cb-ok")})
	must(t, err, "publish")
	d := callbacks.waitFor(t, "success callback", 1, func(d delivery) bool { return d.Path == "/cb-ok" })[0]
	var body map[string]any
	must(t, json.Unmarshal(d.Body, &body), "decode")
	if body["status"] != float64(200) || body["sourceMessageId"] != res.MessageId {
		t.Fatalf("callback body %v", body)
	}
}

func TestDeduplication(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	id := "dedup-" + uid()
	first, err := c.Publish(qstash.PublishOptions{Url: r.url("/dedup"), Body: "a", DeduplicationId: id})
	must(t, err, "publish")
	second, err := c.Publish(qstash.PublishOptions{Url: r.url("/dedup"), Body: "b", DeduplicationId: id})
	must(t, err, "publish again")
	if first.Deduplicated || !second.Deduplicated || second.MessageId != first.MessageId {
		t.Fatalf("first %+v, second %+v", first, second)
	}

	body := map[string]any{"content": uid()}
	a, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/content"), Body: body, ContentBasedDeduplication: true})
	must(t, err, "publish json")
	b, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/content"), Body: body, ContentBasedDeduplication: true})
	must(t, err, "publish json again")
	other, err := c.PublishJSON(qstash.PublishJSONOptions{Url: r.url("/content"), Body: map[string]any{"content": "other " + uid()}, ContentBasedDeduplication: true})
	must(t, err, "publish other json")
	if a.Deduplicated || !b.Deduplicated || b.MessageId != a.MessageId || other.Deduplicated || other.MessageId == a.MessageId {
		t.Fatalf("a %+v, b %+v, other %+v", a, b, other)
	}
	for _, id := range []string{first.MessageId, a.MessageId, other.MessageId} {
		assertDeliveredEventually(t, c, id)
	}
	if n := len(r.requests()); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
}

// The SDK's LLM tests publish to `api/llm`; tern has no LLM upstream and says so.
func TestApiDestinationsAreRefused(t *testing.T) {
	c := client()
	_, err := c.PublishJSON(qstash.PublishJSONOptions{Api: "llm", Body: map[string]any{"model": "m"}})
	mustFail(t, err, "publish to api/llm", "api destinations are not supported")
	_, err = c.BatchJSON([]qstash.BatchJSONOptions{{Api: "llm", Body: map[string]any{"model": "m"}}})
	mustFail(t, err, "batch to api/llm", "api destinations are not supported")
	_, err = c.EnqueueJSON(qstash.EnqueueJSONOptions{Queue: "go-llm-" + uid(), PublishJSONOptions: qstash.PublishJSONOptions{Api: "llm", Body: map[string]any{"model": "m"}}})
	mustFail(t, err, "enqueue to api/llm", "api destinations are not supported")
}

// The SDK's TestDisallowMultipleDestinations (checked by the SDK before any request).
func TestDisallowMultipleDestinations(t *testing.T) {
	_, err := client().Publish(qstash.PublishOptions{Url: "http://127.0.0.1:9/", Api: "llm"})
	mustFail(t, err, "publish", "multiple destinations found")
}

func TestInvalidPublishOptionsAreRejectedWithAMessage(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	cases := []struct {
		name    string
		options qstash.PublishOptions
		want    string
	}{
		{"delay", qstash.PublishOptions{Url: r.url("/x"), Delay: "soon"}, "delay"},
		{"timeout", qstash.PublishOptions{Url: r.url("/x"), Timeout: "-1"}, "timeout"},
		{"method", qstash.PublishOptions{Url: r.url("/x"), Method: "BREW"}, "method"},
		{"url", qstash.PublishOptions{Url: "ftp://127.0.0.1/x"}, ""},
	}
	for _, tc := range cases {
		_, err := c.Publish(tc.options)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		// the SDK turns tern's {"error": ...} into the error text; a body it cannot parse
		// would surface as a JSON error instead
		if _, isJSON := err.(*json.SyntaxError); isJSON || err.Error() == "" {
			t.Fatalf("%s: error %T %v", tc.name, err, err)
		}
		if tc.want != "" && !strings.Contains(strings.ToLower(err.Error()), tc.want) {
			t.Fatalf("%s: error %q does not mention %q", tc.name, err, tc.want)
		}
	}
	probe, err := c.Publish(qstash.PublishOptions{Url: r.url("/probe")})
	must(t, err, "publish probe")
	r.waitForMessage(t, probe.MessageId)
	if got := r.requests(); len(got) != 1 {
		t.Fatalf("refused publishes were delivered: %v", got)
	}
}
