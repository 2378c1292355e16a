package sdktests

import (
	"reflect"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// The SDK's TestUrlGroup, as user 3, who has no other group.
func TestUrlGroup(t *testing.T) {
	now := time.Now()
	c := newClient(shared, user3)
	com, net := newReceiver(t, nil), newReceiver(t, nil)
	name := "go_url_group"
	must(t, c.UrlGroups().Delete(name), "delete a group that does not exist")
	first := qstash.Endpoint{Url: com.url(""), Name: "First endpoint"}
	second := qstash.Endpoint{Url: net.url(""), Name: "Second endpoint"}
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{first, second}), "upsert")

	group, err := c.UrlGroups().Get(name)
	must(t, err, "get")
	if group.Name != name || len(group.Endpoints) != 2 || group.CreatedAt <= now.UnixMilli()-1 || group.UpdatedAt <= now.UnixMilli()-1 {
		t.Fatalf("group %+v", group)
	}
	if group.Endpoints[0] != first || group.Endpoints[1] != second {
		t.Fatalf("endpoints %+v", group.Endpoints)
	}
	groups, err := c.UrlGroups().List()
	must(t, err, "list")
	if len(groups) != 1 || groups[0].Name != name {
		t.Fatalf("groups %+v", groups)
	}

	must(t, c.UrlGroups().RemoveEndpoints(name, []qstash.Endpoint{{Url: net.url("")}}), "remove")
	group, err = c.UrlGroups().Get(name)
	must(t, err, "get")
	if len(group.Endpoints) != 1 || group.Endpoints[0] != first {
		t.Fatalf("endpoints after remove %+v", group.Endpoints)
	}
	must(t, c.UrlGroups().Delete(name), "delete")
	groups, err = c.UrlGroups().List()
	must(t, err, "list")
	if len(groups) != 0 {
		t.Fatalf("groups after delete %+v", groups)
	}
}

func TestUpsertRenamesAnExistingEndpointAndAppendsNewOnes(t *testing.T) {
	c := client()
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	name := "go-upsert-" + uid()
	defer c.UrlGroups().Delete(name)
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{{Url: a.url("/a"), Name: "old"}}), "create")
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{{Url: b.url("/b")}, {Url: a.url("/a"), Name: "new"}}), "upsert")
	group, err := c.UrlGroups().Get(name)
	must(t, err, "get")
	want := []qstash.Endpoint{{Url: a.url("/a"), Name: "new"}, {Url: b.url("/b")}}
	if !reflect.DeepEqual(group.Endpoints, want) {
		t.Fatalf("endpoints %+v, want %+v", group.Endpoints, want)
	}
	// removing by name; the last removal deletes the group
	must(t, c.UrlGroups().RemoveEndpoints(name, []qstash.Endpoint{{Name: "new"}}), "remove by name")
	must(t, c.UrlGroups().RemoveEndpoints(name, []qstash.Endpoint{{Url: b.url("/b")}}), "remove the last")
	_, err = c.UrlGroups().Get(name)
	if err == nil {
		t.Fatal("a group without endpoints still exists")
	}
}

func TestInvalidGroupNamesAndEndpointsAreRejected(t *testing.T) {
	c := client()
	if err := c.UrlGroups().UpsertEndpoints("bad name!", []qstash.Endpoint{{Url: "http://127.0.0.1:9/"}}); err == nil {
		t.Fatal("an invalid group name was accepted")
	}
	if err := c.UrlGroups().UpsertEndpoints("go-bad-url-"+uid(), []qstash.Endpoint{{Url: "not a url"}}); err == nil {
		t.Fatal("an invalid endpoint url was accepted")
	}
}

// The SDK's TestPublishToUrlGroup: one message per endpoint, each delivered once.
func TestPublishToUrlGroup(t *testing.T) {
	c := client()
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	name := "go_url_group_" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{{Url: a.url("")}, {Url: b.url("/path?x=1")}}), "create")
	defer c.UrlGroups().Delete(name)
	res, err := c.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: name, Body: "test-body", Headers: map[string]string{"test-header": "test-value"}})
	must(t, err, "publish")
	if len(res) != 2 || res[0].MessageId == "" || res[1].MessageId == "" || res[0].MessageId == res[1].MessageId ||
		res[0].Url != a.url("") || res[1].Url != b.url("/path?x=1") {
		t.Fatalf("responses %+v", res)
	}
	for i, r := range []*receiver{a, b} {
		d := r.waitForMessage(t, res[i].MessageId)
		if string(d.Body) != "test-body" || d.Header.Get("Upstash-Topic-Name") != name || d.Header.Get("Test-Header") != "test-value" {
			t.Fatalf("delivery %s", describe(d))
		}
		assertDeliveredEventually(t, c, res[i].MessageId)
		if n := len(r.requests()); n != 1 {
			t.Fatalf("endpoint %d got %d deliveries", i, n)
		}
	}
	// JSON, deduplicated per endpoint
	dedup := "go-group-dedup-" + uid()
	first, err := c.UrlGroups().PublishJSON(qstash.PublishUrlGroupJSONOptions{UrlGroup: name, Body: map[string]any{"a": 1}, DeduplicationId: dedup})
	must(t, err, "publish json")
	second, err := c.UrlGroups().PublishJSON(qstash.PublishUrlGroupJSONOptions{UrlGroup: name, Body: map[string]any{"a": 1}, DeduplicationId: dedup})
	must(t, err, "publish json again")
	for i := range first {
		if first[i].Deduplicated || !second[i].Deduplicated || second[i].MessageId != first[i].MessageId {
			t.Fatalf("first %+v, second %+v", first, second)
		}
	}
}

func TestEachEndpointMessageFailsOnItsOwn(t *testing.T) {
	c := client()
	ok, failing := newReceiver(t, nil), statusReceiver(t, 500, "no", nil)
	name := "go-partial-" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{{Url: ok.url("/ok")}, {Url: failing.url("/no")}}), "create")
	defer c.UrlGroups().Delete(name)
	res, err := c.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: name, Body: "x", Retries: qstash.RetryCount(0)})
	must(t, err, "publish")
	assertDeliveredEventually(t, c, res[0].MessageId)
	entry := waitForDlq(t, c, res[1].MessageId)
	if entry.UrlGroup != name || entry.ResponseStatus != 500 || entry.Url != failing.url("/no") {
		t.Fatalf("DLQ entry %+v", entry)
	}
	list, _, err := c.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{UrlGroup: name}})
	must(t, err, "list by group")
	if len(list) != 1 || list[0].DlqId != entry.DlqId {
		t.Fatalf("DLQ by group %+v", list)
	}
}

// The SDK's TestUrlGroup_Error.
func TestUrlGroup_Error(t *testing.T) {
	_, err := client().UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: "non_existing_url_group", Body: "test-body"})
	mustFail(t, err, "publish to an unknown group", "topic non_existing_url_group not found")
}

// The SDK's TestUrlGroup_Empty.
func TestUrlGroup_Empty(t *testing.T) {
	_, err := client().UrlGroups().Publish(qstash.PublishUrlGroupOptions{Body: "test-body"})
	mustFail(t, err, "publish to an empty group name", "a non-empty destination must be provided")
}

func TestDeletingAGroupKeepsItsMessages(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	name := "go-keep-" + uid()
	must(t, c.UrlGroups().UpsertEndpoints(name, []qstash.Endpoint{{Url: r.url("/later")}}), "create")
	res, err := c.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: name, Body: "x", Delay: "1s"})
	must(t, err, "publish")
	must(t, c.UrlGroups().Delete(name), "delete")
	r.waitForMessage(t, res[0].MessageId)
}
