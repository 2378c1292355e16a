package sdktests

import (
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// The SDK's TestSchedule.
func TestSchedule(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	before := time.Now().UnixMilli()
	scheduleID, err := c.Schedules().CreateJSON(qstash.ScheduleJSONOptions{
		Cron:        "1 1 1 1 1",
		Destination: r.url(""),
		Body:        map[string]any{"ex_key": "ex_value"},
	})
	must(t, err, "create")
	if scheduleID == "" {
		t.Fatal("no schedule id")
	}
	schedule, err := c.Schedules().Get(scheduleID)
	must(t, err, "get")
	if schedule.Id != scheduleID || schedule.Cron != "1 1 1 1 1" || schedule.Destination != r.url("") {
		t.Fatalf("schedule %+v", schedule)
	}
	if schedule.Method != http.MethodPost || schedule.Retries != 3 || schedule.Body != `{"ex_key":"ex_value"}` ||
		schedule.CreatedAt < before || schedule.NextScheduleTime <= time.Now().UnixMilli() || schedule.IsPaused {
		t.Fatalf("schedule defaults %+v", schedule)
	}
	if want := (map[string][]string{"Content-Type": {"application/json"}}); !reflect.DeepEqual(schedule.Header, want) {
		t.Fatalf("header %v, want %v", schedule.Header, want)
	}
	if !slices.Contains(scheduleIDs(t, c), scheduleID) {
		t.Fatal("the list misses the new schedule")
	}
	must(t, c.Schedules().Delete(scheduleID), "delete")
	if slices.Contains(scheduleIDs(t, c), scheduleID) {
		t.Fatal("the list still has the deleted schedule")
	}
	// deleting is idempotent; reading a deleted schedule is an error with QStash's text
	must(t, c.Schedules().Delete(scheduleID), "delete again")
	_, err = c.Schedules().Get(scheduleID)
	mustFail(t, err, "get deleted", "Schedule not found")
}

func scheduleIDs(t *testing.T, c *qstash.Client) []string {
	t.Helper()
	list, err := c.Schedules().List()
	must(t, err, "list schedules")
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.Id
	}
	return ids
}

func TestScheduleCreateWithEveryOption(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	id, err := c.Schedules().Create(qstash.ScheduleOptions{
		Cron:            "*/10 * * * *",
		Destination:     r.url("/every?x=1"),
		Body:            "plain body",
		ContentType:     "text/plain",
		Method:          http.MethodPatch,
		Headers:         map[string]string{"test-header": "test-value", "Upstash-Forward-Other": "o"},
		Retries:         qstash.RetryCount(2),
		Callback:        r.url("/cb"),
		FailureCallback: r.url("/fcb"),
		Delay:           "30s",
		Timeout:         "10s",
	})
	must(t, err, "create")
	defer c.Schedules().Delete(id)
	s, err := c.Schedules().Get(id)
	must(t, err, "get")
	if s.Destination != r.url("/every?x=1") || s.Cron != "*/10 * * * *" || s.Method != http.MethodPatch ||
		s.Body != "plain body" || s.Retries != 2 || s.Delay != 30 || s.Callback != r.url("/cb") ||
		s.FailureCallback != r.url("/fcb") || s.CallerIP != "127.0.0.1" || s.IsPaused {
		t.Fatalf("schedule %+v", s)
	}
	want := map[string][]string{"Content-Type": {"text/plain"}, "Test-Header": {"test-value"}, "Other": {"o"}}
	if !reflect.DeepEqual(s.Header, want) {
		t.Fatalf("header %v, want %v", s.Header, want)
	}
	minute := time.Now().Truncate(time.Minute)
	if next := time.UnixMilli(s.NextScheduleTime); !next.After(minute) || next.Minute()%10 != 0 || next.Second() != 0 {
		t.Fatalf("nextScheduleTime %s", next)
	}
}

// The SDK's TestSchedulePauseAndResume.
func TestSchedulePauseAndResume(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	id, err := c.Schedules().CreateJSON(qstash.ScheduleJSONOptions{Cron: "1 1 1 1 1", Destination: r.url(""), Body: map[string]any{"ex_key": "ex_value"}})
	must(t, err, "create")
	defer c.Schedules().Delete(id)
	for _, step := range []struct {
		action func(string) error
		paused bool
	}{{nil, false}, {c.Schedules().Pause, true}, {c.Schedules().Pause, true}, {c.Schedules().Resume, false}, {c.Schedules().Resume, false}} {
		if step.action != nil {
			must(t, step.action(id), "pause/resume")
		}
		s, err := c.Schedules().Get(id)
		must(t, err, "get")
		if s.Id != id || s.IsPaused != step.paused {
			t.Fatalf("isPaused %v, want %v", s.IsPaused, step.paused)
		}
		if step.paused && s.NextScheduleTime != 0 {
			t.Fatalf("a paused schedule shows nextScheduleTime %d", s.NextScheduleTime)
		}
	}
	mustFail(t, c.Schedules().Pause("scd_unknown"+uid()), "pause unknown", "not found")
}

func TestScheduleToAUrlGroupAndABinaryBody(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	group := "sched-group-" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(group, []qstash.Endpoint{{Url: r.url("/a")}}), "create group")
	defer c.UrlGroups().Delete(group)
	id, err := c.Schedules().Create(qstash.ScheduleOptions{Cron: "0 0 * * *", Destination: group, Body: "\x00\xffbin"})
	must(t, err, "create")
	defer c.Schedules().Delete(id)
	s, err := c.Schedules().Get(id)
	must(t, err, "get")
	if s.Destination != group || s.Body != "" || s.BodyBase64 != "AP9iaW4=" {
		t.Fatalf("schedule %+v", s)
	}
}

func TestInvalidSchedulesAreRejected(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	before := len(scheduleIDs(t, c))
	_, err := c.Schedules().Create(qstash.ScheduleOptions{Cron: "not a cron", Destination: r.url("/x")})
	mustFail(t, err, "create with a bad cron", "cron")
	_, err = c.Schedules().Create(qstash.ScheduleOptions{Cron: "* * * * *", Destination: r.url("/x"), Delay: "later"})
	mustFail(t, err, "create with a bad delay", "delay")
	_, err = c.Schedules().Create(qstash.ScheduleOptions{Cron: "* * * * *", Destination: "no-such-group-" + uid()})
	if err == nil {
		t.Fatal("a schedule to an unknown URL group was accepted")
	}
	if after := len(scheduleIDs(t, c)); after != before {
		t.Fatalf("%d schedules before, %d after the refused creates", before, after)
	}
	_, err = c.Schedules().Get("scd_unknown" + uid())
	mustFail(t, err, "get unknown", "Schedule not found")
}

func TestSchedulesBelongToTheirUser(t *testing.T) {
	c := client()
	other := newClient(shared, user2)
	r := newReceiver(t, nil)
	id, err := c.Schedules().Create(qstash.ScheduleOptions{Cron: "0 0 1 1 *", Destination: r.url("/mine")})
	must(t, err, "create")
	defer c.Schedules().Delete(id)
	_, err = other.Schedules().Get(id)
	mustFail(t, err, "user 2 reads user 1's schedule", "Schedule not found")
	list, err := other.Schedules().List()
	must(t, err, "user 2 lists")
	for _, s := range list {
		if s.Id == id {
			t.Fatal("user 2 lists user 1's schedule")
		}
	}
	_ = other.Schedules().Delete(id)
	_, err = c.Schedules().Get(id)
	must(t, err, "user 1's schedule survives user 2's delete")
}
