package sdktests

// This file is named to sort last: `go test` runs a package's tests file by file in name
// order, so the wait for the tick below overlaps with every other test.

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// The one test that waits for a real cron tick. Its schedule is created in TestMain, before
// every other test, so that the wait (up to a minute) overlaps with the rest of the suite; the
// receiver deletes the schedule as soon as the first tick arrives, so there is exactly one.
type tickProbeState struct {
	receiver   *receiver
	scheduleID string
	createdAt  time.Time
	deleteErr  chan error // the result of deleting the schedule after the first tick
}

var tickProbe *tickProbeState

func startTickProbe(server *ternServer) (*tickProbeState, error) {
	p := &tickProbeState{createdAt: time.Now(), deleteErr: make(chan error, 1)}
	idReady := make(chan struct{})
	var once sync.Once
	c := newClient(server, user1)
	p.receiver = startReceiver(func(delivery) reply {
		once.Do(func() {
			go func() {
				<-idReady
				p.deleteErr <- c.Schedules().Delete(p.scheduleID)
			}()
		})
		return reply{}
	})
	id, err := c.Schedules().Create(qstash.ScheduleOptions{
		Cron:        "* * * * *",
		Destination: p.receiver.url("/tick?from=schedule"),
		Body:        "tick-body",
		ContentType: "text/plain",
		Method:      http.MethodPut,
		Headers:     map[string]string{"tick-header": "tick-value"},
		Retries:     qstash.RetryCount(0),
	})
	if err != nil {
		p.receiver.close()
		return nil, fmt.Errorf("creating the tick probe's schedule: %w", err)
	}
	p.scheduleID = id
	close(idReady)
	return p, nil
}

func TestScheduleTickDeliversTheStoredRequestOnce(t *testing.T) {
	c := client()
	p := tickProbe
	limit := time.Until(p.createdAt.Add(time.Minute + deadline))
	d := p.receiver.waitForWithin(t, limit, "the first tick", 1, nil)[0]
	select {
	case err := <-p.deleteErr:
		must(t, err, "delete the schedule after its first tick")
	case <-time.After(deadline):
		t.Fatal("the schedule was not deleted after its first tick")
	}
	if got := p.receiver.requests(); len(got) != 1 {
		t.Fatalf("%d deliveries for one tick", len(got))
	}
	if d.Method != http.MethodPut || d.Path != "/tick?from=schedule" || string(d.Body) != "tick-body" ||
		d.Header.Get("Tick-Header") != "tick-value" || d.Header.Get("Content-Type") != "text/plain" ||
		d.Header.Get("Upstash-Schedule-Id") != p.scheduleID {
		t.Fatalf("tick delivery %s", describe(d))
	}
	err := qstash.NewReceiver(user1.current, user1.next).Verify(qstash.VerifyOptions{
		Signature: d.Header.Get("Upstash-Signature"), Body: string(d.Body), Url: p.receiver.url("/tick?from=schedule"),
	})
	must(t, err, "verify the tick's signature")
	message, err := c.Messages().Get(d.messageID())
	must(t, err, "get the tick's message")
	if message.ScheduleId != p.scheduleID || message.Method != http.MethodPut || message.MaxRetries != 0 {
		t.Fatalf("tick message %+v", message)
	}
	list := waitForState(t, c, d.messageID(), qstash.Delivered)
	for _, e := range list {
		if e.ScheduleId != p.scheduleID {
			t.Fatalf("log entry %+v lacks the schedule id", e)
		}
	}
	byID, err := events(c, qstash.EventFilter{ScheduleId: p.scheduleID})
	must(t, err, "list events by schedule id")
	if len(byID) < len(list) {
		t.Fatalf("scheduleId filter found %d entries, the message has %d", len(byID), len(list))
	}
	_, err = c.Schedules().Get(p.scheduleID)
	mustFail(t, err, "get the deleted schedule", "Schedule not found")
}
