package sdktests

// Real HTTP destinations on 127.0.0.1 that record what tern delivers.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// delivery is one request a receiver got.
type delivery struct {
	Method string
	Path   string // the raw request target, query included
	Header http.Header
	Body   []byte
	At     time.Time
}

func (d delivery) messageID() string { return d.Header.Get("Upstash-Message-Id") }

// reply says how a receiver answers; hold keeps the request open (until release, if given).
type reply struct {
	status  int
	body    string
	header  map[string]string
	hold    time.Duration
	release <-chan struct{}
}

type receiver struct {
	server  *httptest.Server
	mu      sync.Mutex
	got     []delivery
	changed chan struct{} // closed and replaced on every request
	answer  func(delivery) reply
	closing chan struct{}
}

// startReceiver starts a receiver; answer may be nil (200 "ok" to everything).
func startReceiver(answer func(delivery) reply) *receiver {
	r := &receiver{changed: make(chan struct{}), answer: answer, closing: make(chan struct{})}
	r.server = httptest.NewServer(http.HandlerFunc(r.handle))
	return r
}

// newReceiver starts a receiver that is closed when the test ends.
func newReceiver(t testing.TB, answer func(delivery) reply) *receiver {
	r := startReceiver(answer)
	t.Cleanup(r.close)
	return r
}

// statusReceiver answers every request with status and body.
func statusReceiver(t testing.TB, status int, body string, header map[string]string) *receiver {
	return newReceiver(t, func(delivery) reply { return reply{status: status, body: body, header: header} })
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	d := delivery{Method: req.Method, Path: req.RequestURI, Header: req.Header.Clone(), Body: body, At: time.Now()}
	r.mu.Lock()
	r.got = append(r.got, d)
	close(r.changed)
	r.changed = make(chan struct{})
	answer := r.answer
	r.mu.Unlock()
	rep := reply{}
	if answer != nil {
		rep = answer(d)
	}
	if rep.hold > 0 {
		timer := time.NewTimer(rep.hold)
		select {
		case <-timer.C:
		case <-rep.release:
		case <-r.closing:
		}
		timer.Stop()
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status == 0 {
		rep.status = http.StatusOK
	}
	if rep.body == "" && rep.status == http.StatusOK {
		rep.body = "ok"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

// url is the receiver's address plus path ("" gives the bare origin, without a slash).
func (r *receiver) url(path string) string { return r.server.URL + path }

func (r *receiver) requests() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// waitFor waits until count requests match and returns the matching ones.
func (r *receiver) waitFor(t testing.TB, what string, count int, match func(delivery) bool) []delivery {
	t.Helper()
	return r.waitForWithin(t, deadline, what, count, match)
}

func (r *receiver) waitForWithin(t testing.TB, limit time.Duration, what string, count int, match func(delivery) bool) []delivery {
	t.Helper()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		var found []delivery
		for _, d := range r.got {
			if match == nil || match(d) {
				found = append(found, d)
			}
		}
		changed := r.changed
		all := make([]string, 0, len(r.got))
		for _, d := range r.got {
			all = append(all, d.Method+" "+d.Path)
		}
		r.mu.Unlock()
		if len(found) >= count {
			return found
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out after %s waiting for %d request(s) (%s) at %s; %d matched; all: %v",
				limit, count, what, r.server.URL, len(found), all)
		}
	}
}

// waitForMessage waits for the first delivery of a message.
func (r *receiver) waitForMessage(t testing.TB, messageID string) delivery {
	t.Helper()
	return r.waitFor(t, "message "+messageID, 1, func(d delivery) bool { return d.messageID() == messageID })[0]
}

func (r *receiver) close() {
	close(r.closing)
	r.server.CloseClientConnections()
	r.server.Close()
}

// gauge holds each request for a while and records how many were in flight at once and the
// order the bodies arrived in. The count drops before the response is written, so a server
// that waits for a response before starting the next delivery never shows more than its limit.
type gauge struct {
	mu     sync.Mutex
	hold   time.Duration
	active int
	peak   int
	bodies []string
}

func (g *gauge) serve(r *receiver) func(delivery) reply {
	return func(d delivery) reply {
		g.mu.Lock()
		g.active++
		if g.active > g.peak {
			g.peak = g.active
		}
		g.bodies = append(g.bodies, string(d.Body))
		g.mu.Unlock()
		timer := time.NewTimer(g.hold)
		select {
		case <-timer.C:
		case <-r.closing:
		}
		g.mu.Lock()
		g.active--
		g.mu.Unlock()
		return reply{}
	}
}

func (g *gauge) result() (peak int, bodies []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak, append([]string(nil), g.bodies...)
}

// newGauge starts a receiver that holds every request for hold.
func newGauge(t testing.TB, hold time.Duration) (*receiver, *gauge) {
	g := &gauge{hold: hold}
	r := newReceiver(t, nil)
	r.mu.Lock()
	r.answer = g.serve(r)
	r.mu.Unlock()
	return r, g
}

func describe(d delivery) string {
	return fmt.Sprintf("%s %s %v %q", d.Method, d.Path, d.Header, d.Body)
}

// holdShort is how long a gauge holds each request: long enough for a server that ignores a
// limit to start the next delivery meanwhile.
const holdShort = 300 * time.Millisecond
