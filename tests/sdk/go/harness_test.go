// Test harness for driving a real `tern` binary with the official Go SDK.
//
//   - TestMain starts one `tern dev --port <free port> --data-dir <fresh temp dir>` for the
//     whole run (startTern; the key-rotation test starts a private one), waits for the
//     `running` banner and for `GET /v2/keys` to answer 200, and kills its process group at
//     the end.
//   - newReceiver is a real HTTP server on 127.0.0.1 that records every request (method, raw
//     path, headers, body) and answers with a chosen reply.
//   - waitUntil retries a check until it passes or a deadline runs out; nothing waits for a
//     fixed time.
//
// Only 127.0.0.1 is ever contacted.
package sdktests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/upstash/qstash-go"
)

// devUser is one of the four predefined dev users (spec §21).
type devUser struct {
	token, current, next string
}

var (
	user1 = devUser{
		token:   "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
		current: "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
		next:    "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
	}
	// user2 checks isolation and runs the cancel-all test, so that it cannot cancel another
	// test's messages.
	user2 = devUser{
		token:   "eyJVc2VySUQiOiJ0ZXN0VXNlcjEiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
		current: "sig_7GVPjvuwsfqF65iC8fSrs1dfYruM",
		next:    "sig_5NoELc3EFnZn4DVS5bDs2Nk4b7Ua",
	}
	// user3 owns nothing but the queues and URL groups of the tests that list them exactly,
	// as the SDK's own tests do against a fresh account.
	user3 = devUser{
		token:   "eyJVc2VySUQiOiJ0ZXN0VXNlcjIiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
		current: "sig_6jWGaWRxHsw4vMSPJprXadyvrybF",
		next:    "sig_7qHbvhmahe5GwfePDiS5Lg3pi6Qx",
	}
	// user4 owns nothing but the messages of TestEvents, which counts every log entry since
	// its start.
	user4 = devUser{
		token:   "eyJVc2VySUQiOiJ0ZXN0VXNlcjMiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
		current: "sig_5T8FcSsynBjn9mMLBsXhpacRovJf",
		next:    "sig_7GFR4YaDshFcqsxWRZpRB161jguD",
	}
)

var (
	deadline        = envSeconds("TERN_TEST_DEADLINE", 20)
	startupDeadline = envSeconds("TERN_STARTUP_DEADLINE", 30)
	// shared is the server every test uses unless it needs a private one.
	shared *ternServer
)

func envSeconds(name string, fallback float64) time.Duration {
	if raw := os.Getenv(name); raw != "" {
		if v, err := strconv.ParseFloat(raw, 64); err == nil && v > 0 {
			fallback = v
		}
	}
	return time.Duration(fallback * float64(time.Second))
}

func TestMain(m *testing.M) {
	// The SDK reads QSTASH_URL over the base URL it is given; the signing-key variables would
	// make a test pass for the wrong reason.
	for _, name := range []string{"QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"} {
		os.Unsetenv(name)
	}
	server, err := startTern()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdk tests:", err)
		os.Exit(1)
	}
	shared = server
	probe, err := startTickProbe(server)
	if err != nil {
		server.stop()
		fmt.Fprintln(os.Stderr, "sdk tests:", err)
		os.Exit(1)
	}
	tickProbe = probe
	code := m.Run()
	probe.receiver.close()
	server.stop()
	os.Exit(code)
}

// ---------------------------------------------------------------------------------------
// the tern process

type ternServer struct {
	url     string
	cmd     *exec.Cmd
	dataDir string
	exited  chan struct{}
	mu      sync.Mutex
	output  strings.Builder
	running bool
}

func ternBinary() (string, error) {
	bin := os.Getenv("TERN_BIN")
	if bin == "" {
		bin = "target/debug/tern"
	}
	if !filepath.IsAbs(bin) {
		// relative to the repository root, three levels above this directory
		root, err := filepath.Abs(filepath.Join("..", "..", ".."))
		if err != nil {
			return "", err
		}
		bin = filepath.Join(root, bin)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("tern binary not found at %s; build it with `cargo build -p tern-server --bin tern` or set TERN_BIN", bin)
	}
	return bin, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startTern starts `tern dev` on a free port with a fresh data directory and waits until it
// answers.
func startTern() (*ternServer, error) {
	bin, err := ternBinary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp("", "tern-sdk-go-")
	if err != nil {
		return nil, err
	}
	s := &ternServer{url: fmt.Sprintf("http://127.0.0.1:%d", port), dataDir: dataDir, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "dev", "--port", strconv.Itoa(port), "--data-dir", dataDir)
	s.cmd.Env = loopbackEnv()
	// its own process group, so that stop() ends anything it started too
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, err
	}
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			line := scanner.Text()
			s.mu.Lock()
			s.output.WriteString(line + "\n")
			if strings.Contains(strings.ToLower(line), "running") {
				s.running = true
			}
			s.mu.Unlock()
		}
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *ternServer) waitReady() error {
	limit := time.Now().Add(startupDeadline)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	last := "no answer"
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("tern exited early:\n%s", s.Output())
		default:
		}
		s.mu.Lock()
		running := s.running
		s.mu.Unlock()
		if running {
			req, _ := http.NewRequest(http.MethodGet, s.url+"/v2/keys", nil)
			req.Header.Set("Authorization", "Bearer "+user1.token)
			res, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return nil
				}
				last = "status " + res.Status
			} else {
				last = err.Error()
			}
		}
		if time.Now().After(limit) {
			return fmt.Errorf("tern did not start within %s (%s):\n%s", startupDeadline, last, s.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Output is everything tern printed so far.
func (s *ternServer) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

func (s *ternServer) stop() {
	select {
	case <-s.exited:
	default:
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	os.RemoveAll(s.dataDir)
}

func loopbackEnv() []string {
	env := os.Environ()
	for _, key := range []string{"NO_PROXY", "no_proxy"} {
		parts := strings.FieldsFunc(os.Getenv(key), func(r rune) bool { return r == ',' })
		env = append(env, key+"="+strings.Join(append(parts, "127.0.0.1", "localhost", "::1"), ","))
	}
	return env
}

// newClient is an unmodified SDK client for server; its HTTP client never uses a proxy.
func newClient(server *ternServer, user devUser) *qstash.Client {
	return qstash.NewClientWith(qstash.Options{
		Url:    server.url,
		Token:  user.token,
		Client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}},
	})
}

// client is user 1's client for the shared server.
func client() *qstash.Client { return newClient(shared, user1) }

// ---------------------------------------------------------------------------------------
// waiting and checking

// waitUntil calls check until it returns nil, failing the test at the deadline with the last
// error.
func waitUntil(t testing.TB, what string, check func() error) {
	t.Helper()
	waitUntilFor(t, deadline, what, check)
}

func waitUntilFor(t testing.TB, limit time.Duration, what string, check func() error) {
	t.Helper()
	end := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s: %v", limit, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func must(t testing.TB, err error, doing string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", doing, err)
	}
}

func mustFail(t testing.TB, err error, doing, wantText string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: expected an error containing %q, got none", doing, wantText)
	}
	if !strings.Contains(err.Error(), wantText) {
		t.Fatalf("%s: expected an error containing %q, got %q", doing, wantText, err.Error())
	}
}

func uid() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36)
}

// ---------------------------------------------------------------------------------------
// log and DLQ helpers

func events(c *qstash.Client, filter qstash.EventFilter) ([]qstash.Event, error) {
	list, _, err := c.Events().List(qstash.ListEventsOptions{Filter: filter})
	return list, err
}

func states(list []qstash.Event) []string {
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = string(e.State)
	}
	return out
}

func hasState(list []qstash.Event, state qstash.EventState) bool {
	for _, e := range list {
		if e.State == state {
			return true
		}
	}
	return false
}

// waitForState waits until the message has a log entry in state and returns its entries.
func waitForState(t testing.TB, c *qstash.Client, messageID string, state qstash.EventState) []qstash.Event {
	t.Helper()
	var list []qstash.Event
	waitUntil(t, fmt.Sprintf("%s log entry of %s", state, messageID), func() error {
		var err error
		list, err = events(c, qstash.EventFilter{MessageId: messageID})
		if err != nil {
			return err
		}
		if !hasState(list, state) {
			return fmt.Errorf("states so far: %v", states(list))
		}
		return nil
	})
	return list
}

// assertDeliveredEventually is the SDK's own helper: exactly one DELIVERED entry.
func assertDeliveredEventually(t testing.TB, c *qstash.Client, messageID string) {
	t.Helper()
	waitUntil(t, "DELIVERED entry of "+messageID, func() error {
		list, err := events(c, qstash.EventFilter{MessageId: messageID, State: qstash.Delivered})
		if err != nil {
			return err
		}
		if len(list) != 1 {
			return fmt.Errorf("%d DELIVERED entries", len(list))
		}
		return nil
	})
}

// waitForDlq waits until the message has a DLQ entry and returns it (from the list).
func waitForDlq(t testing.TB, c *qstash.Client, messageID string) qstash.DlqMessage {
	t.Helper()
	var entry qstash.DlqMessage
	waitUntil(t, "DLQ entry of "+messageID, func() error {
		list, _, err := c.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{MessageId: messageID}})
		if err != nil {
			return err
		}
		if len(list) != 1 {
			return fmt.Errorf("%d entries", len(list))
		}
		entry = list[0]
		return nil
	})
	return entry
}
