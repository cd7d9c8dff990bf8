// Package kafkatest provides Kafka brokers for emopipe's tests:
//
//   - Broker: a real Apache Kafka broker (KRaft, started by scripts/kafka/kafka.sh)
//     or an externally provided one; the test is skipped when neither is asked for.
//   - Fake: an in-process kfake cluster for fast unit tests. kfake accepts request
//     versions that Apache Kafka 4 removed (KIP-896), so a green test against Fake
//     says nothing about Kafka 4: keep integration tests on Broker.
//
// Environment:
//
//	EMOPIPE_KAFKA_BROKERS=host:port[,host:port]  use this broker (never restarted)
//	EMOPIPE_KAFKA=1                              start a broker per test via kafka.sh
//	KAFKA_VERSION=3.9.2                          run another Kafka (default 4.4.0)
package kafkatest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

const (
	// EnvBrokers names an already running broker list (comma separated).
	EnvBrokers = "EMOPIPE_KAFKA_BROKERS"
	// EnvKafka=1 makes Broker start a real broker with scripts/kafka/kafka.sh.
	EnvKafka = "EMOPIPE_KAFKA"

	skipMsg = "set EMOPIPE_KAFKA=1 (needs Java 17+ and Maven; first run resolves Kafka from " +
		"Maven Central) or EMOPIPE_KAFKA_BROKERS=host:port to run against a real Apache Kafka broker"
)

// Instance is a broker started by kafka.sh. Its data dir and ports survive
// Stop/Start, so tests can restart or crash the broker mid-stream.
type Instance struct {
	Dir            string // data dir (server.properties, broker.log, data/)
	Port           int
	ControllerPort int
	// SASLPort, when set, is a SASL_PLAINTEXT listener (SCRAM-SHA-256,
	// SCRAM-SHA-512 and PLAIN) for SASLUser and SASLPassword (StartSASL).
	SASLPort     int
	SASLUser     string
	SASLPassword string
	// SSLPort, when set, is an SSL (TLS) listener whose certificate
	// kafka.sh made, signed by the CA in CAFile (StartTLS).
	SSLPort int
	// Settings are extra server.properties lines (StartWith).
	Settings []string
	script   string

	mu      sync.Mutex
	running bool
}

var (
	regMu    sync.Mutex
	registry = map[string]*Instance{} // "127.0.0.1:port" -> instance
)

// Available reports whether Broker would return a broker rather than skip.
func Available() bool {
	return os.Getenv(EnvBrokers) != "" || os.Getenv(EnvKafka) == "1"
}

// Broker returns the bootstrap addresses of a real Apache Kafka broker, or skips t.
// With EMOPIPE_KAFKA_BROKERS set it returns that list. With EMOPIPE_KAFKA=1 it
// starts a fresh single-node KRaft broker in t.TempDir() on free ports, waits
// until it answers Metadata, and stops it when t ends.
func Broker(t testing.TB) []string {
	t.Helper()
	if s := os.Getenv(EnvBrokers); s != "" {
		brokers := splitBrokers(s)
		if err := WarmGroupCoordinator(context.Background(), brokers, time.Minute); err != nil {
			t.Fatalf("kafkatest: %s: %v", EnvBrokers, err)
		}
		return brokers
	}
	if os.Getenv(EnvKafka) != "1" {
		t.Skip(skipMsg)
	}
	return Start(t).Brokers()
}

var (
	sharedOnce sync.Once
	shared     *Instance
	sharedErr  error
)

// Shared is Broker with one broker for the whole test binary instead of one per
// test (startup costs 5-15 s on 2 cores). It is started on first use and stopped
// (data dir removed) by kafka.sh's watchdog within seconds of the test process
// exiting. Tests must not restart it and should use unique topic/group names.
func Shared(t testing.TB) []string {
	t.Helper()
	if s := os.Getenv(EnvBrokers); s != "" || os.Getenv(EnvKafka) != "1" {
		return Broker(t) // external list, or skip
	}
	sharedOnce.Do(func() {
		script, err := Script()
		if err != nil {
			sharedErr = err
			return
		}
		ports, err := FreePorts(2)
		if err != nil {
			sharedErr = err
			return
		}
		dir, err := os.MkdirTemp("", "emopipe-kafka-shared-")
		if err != nil {
			sharedErr = err
			return
		}
		// kafka.sh removes dirs carrying this marker when it stops the broker.
		if err := os.WriteFile(filepath.Join(dir, ".created-by-kafka-sh"), nil, 0o644); err != nil {
			sharedErr = err
			return
		}
		in := &Instance{Dir: dir, Port: ports[0], ControllerPort: ports[1], script: script}
		out, err := in.start()
		t.Logf("kafkatest: shared broker: %s", strings.TrimSpace(out))
		if err != nil {
			sharedErr = err
			return
		}
		shared = in
	})
	if sharedErr != nil {
		t.Fatalf("kafkatest: shared broker: %v", sharedErr)
	}
	return shared.Brokers()
}

// Start starts a dedicated broker for t (regardless of EMOPIPE_KAFKA_BROKERS) and
// stops it when t ends. It fails t if the broker cannot be started.
func Start(t testing.TB) *Instance { t.Helper(); return StartWith(t) }

// StartWith is Start with extra server.properties lines ("key=value").
func StartWith(t testing.TB, settings ...string) *Instance {
	t.Helper()
	return launch(t, 0, func(in *Instance, _ []int) { in.Settings = settings })
}

// StartSASL is Start with a second listener, SASL_PLAINTEXT on SASLAddr,
// where user authenticates with password by SCRAM-SHA-256, SCRAM-SHA-512
// or PLAIN (the SCRAM credentials are made when the storage is formatted).
func StartSASL(t testing.TB, user, password string) *Instance {
	t.Helper()
	return launch(t, 1, func(in *Instance, ports []int) {
		in.SASLPort, in.SASLUser, in.SASLPassword = ports[0], user, password
	})
}

// StartTLS is Start with a second listener, SSL on TLSAddr, whose
// certificate (for 127.0.0.1) is signed by the CA in CAFile.
func StartTLS(t testing.TB) *Instance {
	t.Helper()
	return launch(t, 1, func(in *Instance, ports []int) { in.SSLPort = ports[0] })
}

// launch starts a dedicated broker on free ports (its own two, and extra
// more that set gives to further listeners), registered for Lookup and
// stopped when t ends.
func launch(t testing.TB, extra int, set func(in *Instance, ports []int)) *Instance {
	t.Helper()
	script, err := Script()
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	ports, err := FreePorts(2 + extra)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	in := &Instance{Dir: t.TempDir(), Port: ports[0], ControllerPort: ports[1], script: script}
	set(in, ports[2:])
	t.Cleanup(func() { in.stop(t, false) })
	in.Start(t)
	regMu.Lock()
	registry[in.Addr()] = in
	regMu.Unlock()
	t.Cleanup(func() {
		regMu.Lock()
		delete(registry, in.Addr())
		regMu.Unlock()
	})
	return in
}

// TLSAddr is the SSL bootstrap address (StartTLS).
func (in *Instance) TLSAddr() string { return "127.0.0.1:" + strconv.Itoa(in.SSLPort) }

// CAFile is the PEM file of the CA that signed the SSL listener's
// certificate (StartTLS).
func (in *Instance) CAFile() string { return filepath.Join(in.Dir, "tls", "ca.pem") }

// SASLAddr is the SASL_PLAINTEXT bootstrap address (StartSASL).
func (in *Instance) SASLAddr() string { return "127.0.0.1:" + strconv.Itoa(in.SASLPort) }

// Lookup returns the Instance behind brokers (as returned by Broker), or nil
// for an external broker.
func Lookup(brokers []string) *Instance {
	regMu.Lock()
	defer regMu.Unlock()
	for _, b := range brokers {
		if in := registry[b]; in != nil {
			return in
		}
	}
	return nil
}

// Restart stops the broker behind brokers gracefully (SIGTERM) and starts it
// again with the same data dir and ports. It skips t for an external broker.
func Restart(t testing.TB, brokers []string) {
	t.Helper()
	in := Lookup(brokers)
	if in == nil {
		if shared != nil && len(brokers) > 0 && brokers[0] == shared.Addr() {
			t.Fatalf("kafkatest.Restart: the Shared broker cannot be restarted; use kafkatest.Start(t) or Broker(t)")
		}
		t.Skip("kafkatest.Restart: broker was not started by kafkatest (external broker)")
	}
	in.Restart(t)
}

// Addr is the PLAINTEXT bootstrap address.
func (in *Instance) Addr() string { return "127.0.0.1:" + strconv.Itoa(in.Port) }

// Brokers is []string{Addr()}.
func (in *Instance) Brokers() []string { return []string{in.Addr()} }

// LogFile is the broker's log (all starts appended).
func (in *Instance) LogFile() string { return filepath.Join(in.Dir, "broker.log") }

// Start (re)starts the broker on its data dir; formatting happens only the first time.
func (in *Instance) Start(t testing.TB) {
	t.Helper()
	t0 := time.Now()
	out, err := in.start()
	if out != "" {
		t.Logf("kafkatest: %s", strings.TrimSpace(out))
	}
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Logf("kafkatest: broker %s up in %v (dir %s)", in.Addr(), time.Since(t0).Round(time.Millisecond), in.Dir)
}

// start runs kafka.sh start and waits until Metadata and FindCoordinator answer.
func (in *Instance) start() (string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.running {
		return "", nil
	}
	args := []string{"start",
		"--dir", in.Dir,
		"--port", strconv.Itoa(in.Port),
		"--controller-port", strconv.Itoa(in.ControllerPort),
		"--watch-pid", strconv.Itoa(os.Getpid())}
	if in.SSLPort != 0 {
		args = append(args, "--ssl-port", strconv.Itoa(in.SSLPort))
	}
	for _, kv := range in.Settings {
		args = append(args, "--set", kv)
	}
	if in.SASLPort != 0 {
		args = append(args, "--sasl-port", strconv.Itoa(in.SASLPort), "--sasl-user", in.SASLUser+":"+in.SASLPassword)
	}
	out, err := in.run(4*time.Minute, args...)
	if err != nil {
		return out, fmt.Errorf("kafka.sh start: %w", err)
	}
	if !strings.Contains(out, "KAFKA_BROKERS="+in.Addr()) {
		return out, fmt.Errorf("kafka.sh start printed no KAFKA_BROKERS=%s", in.Addr())
	}
	in.running = true
	if err := WaitReady(context.Background(), in.Brokers(), time.Minute); err != nil {
		return out, fmt.Errorf("broker %s not answering Metadata: %w\n%s", in.Addr(), err, tailFile(in.LogFile(), 40))
	}
	if err := WarmGroupCoordinator(context.Background(), in.Brokers(), time.Minute); err != nil {
		return out, fmt.Errorf("broker %s: %w\n%s", in.Addr(), err, tailFile(in.LogFile(), 40))
	}
	return out, nil
}

// Stop stops the broker gracefully (SIGTERM, controlled shutdown), keeping its data.
func (in *Instance) Stop(t testing.TB) { t.Helper(); in.stop(t, false) }

// Kill SIGKILLs the broker (crash), keeping its data; Start recovers it.
func (in *Instance) Kill(t testing.TB) { t.Helper(); in.stop(t, true) }

// Freeze stops the broker's process (SIGSTOP) without closing its
// connections: a broker that no longer answers, as in a long GC pause or a
// network partition, rather than one that is gone. Thaw resumes it.
func (in *Instance) Freeze(t testing.TB) { t.Helper(); in.signal(t, syscall.SIGSTOP) }

// Thaw resumes a frozen broker (SIGCONT).
func (in *Instance) Thaw(t testing.TB) { t.Helper(); in.signal(t, syscall.SIGCONT) }

func (in *Instance) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(in.Dir, "kafka.pid"))
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil {
		err = syscall.Kill(pid, sig)
	}
	if err != nil {
		t.Fatalf("kafkatest: %v to broker pid %q: %v", sig, b, err)
	}
}

// Restart is Stop followed by Start.
func (in *Instance) Restart(t testing.TB) {
	t.Helper()
	in.Stop(t)
	in.Start(t)
}

func (in *Instance) stop(t testing.TB, kill bool) {
	t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.running {
		return
	}
	args := []string{"stop", "--dir", in.Dir, "--keep"}
	if kill {
		args = append(args, "--kill")
	}
	if out, err := in.run(time.Minute, args...); err != nil {
		t.Errorf("kafkatest: kafka.sh stop: %v\n%s", err, out)
	}
	in.running = false
}

func (in *Instance) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{in.script}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return buf.String(), err
}

func topicsOf(md *kafka.MetadataResponse) []kafka.Topic {
	if md == nil {
		return nil
	}
	return md.Topics
}

// WaitReady polls Metadata until the cluster lists at least one broker
// and every partition of every topic has a leader.
func WaitReady(ctx context.Context, brokers []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	var last error
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) == 0 {
			err = errors.New("metadata lists no brokers")
		}
		// After a restart the broker answers before it leads its
		// partitions again; a producer then fails with "no leader".
		for _, tp := range topicsOf(md) {
			for _, p := range tp.Partitions {
				if err == nil && (p.Error != nil || p.Leader.ID < 0 || p.Leader.Host == "") {
					err = fmt.Errorf("topic %s partition %d has no leader yet (%v)", tp.Name, p.ID, p.Error)
				}
			}
		}
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WarmGroupCoordinator polls FindCoordinator until the group coordinator answers.
// On a fresh cluster the first FindCoordinator creates __consumer_offsets and
// answers COORDINATOR_NOT_AVAILABLE meanwhile; kafka-go's Reader/ConsumerGroup
// then back off for JoinGroupBackoff (default 5 s) before retrying, so the
// first group join of a test would take 5 s longer without this warm-up.
func WarmGroupCoordinator(ctx context.Context, brokers []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	var last error
	for {
		resp, err := c.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{
			Key: "kafkatest-warmup", KeyType: kafka.CoordinatorKeyTypeConsumer})
		if err == nil && resp.Error == nil {
			return nil
		}
		if err == nil {
			err = resp.Error
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("group coordinator not available: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CreateTopic creates topic with the given partition count (replication factor 1)
// through kafka.Client.CreateTopics (routed to the controller; Conn.CreateTopics
// fails on non-controller brokers) and waits until every partition has a leader.
// configs are topic settings ("cleanup.policy=compact"). An existing topic is
// an error.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int, configs ...string) {
	t.Helper()
	if err := CreateTopicErr(context.Background(), brokers, topic, partitions, configs...); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

// CreateTopicErr is CreateTopic returning its error.
func CreateTopicErr(ctx context.Context, brokers []string, topic string, partitions int, configs ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var entries []kafka.ConfigEntry
	for _, kv := range configs {
		k, v, _ := strings.Cut(kv, "=")
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: entries,
	}}})
	if err != nil {
		return fmt.Errorf("CreateTopics %q: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil {
		return fmt.Errorf("CreateTopics %q: %w", topic, err)
	}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil &&
			len(md.Topics[0].Partitions) == partitions && allLed(md.Topics[0].Partitions) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %q: partitions without leader after create: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(ps []kafka.Partition) bool {
	for _, p := range ps {
		if p.Error != nil || p.Leader.Host == "" {
			return false
		}
	}
	return true
}

// Fake starts an in-process kfake cluster (one broker on 127.0.0.1) for unit tests
// and closes it when t ends. Auto-created topics get `partitions` partitions; the
// named topics are created up front with that many partitions.
func Fake(t testing.TB, partitions int, topics ...string) []string {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation()}
	if partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(partitions))
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(partitions), topics...))
	}
	return FakeCluster(t, opts...).ListenAddrs()
}

// FakeCluster is Fake with full control over the kfake options (kfake.NumBrokers
// and friends); the cluster is closed when t ends.
func FakeCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kafkatest: kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Script returns the path of scripts/kafka/kafka.sh (EMOPIPE_KAFKA_SCRIPT overrides).
func Script() (string, error) {
	if s := os.Getenv("EMOPIPE_KAFKA_SCRIPT"); s != "" {
		return s, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	s := filepath.Join(root, "scripts", "kafka", "kafka.sh")
	if _, err := os.Stat(s); err != nil {
		return "", err
	}
	return s, nil
}

// RepoRoot walks up from the working directory, then from this source file,
// to the directory whose go.mod declares module github.com/emopipe/emopipe.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; {
			if isRoot(filepath.Join(d, "go.mod")) {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", fmt.Errorf("repo root (go.mod of github.com/emopipe/emopipe) not found above %v", starts)
}

func isRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == "github.com/emopipe/emopipe"
		}
	}
	return false
}

// FreePorts returns n loopback ports that were free a moment ago (the
// listeners are closed on return, so another process may yet take one).
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
