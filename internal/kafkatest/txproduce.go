package kafkatest

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TxProducer drives scripts/kafka/TxProduce.java: Kafka's own Java
// producer, writing records in transactions that it commits or aborts as
// told (kafka-go cannot produce transactionally). It needs the broker jars
// that kafka.sh installs, so it goes with a real broker.
type TxProducer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	log strings.Builder
}

// NewTxProducer starts the producer for topic on brokers; it is stopped
// when t ends.
func NewTxProducer(t testing.TB, brokers []string, topic string) *TxProducer {
	t.Helper()
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(script, "install").Output()
	if err != nil {
		t.Fatalf("kafkatest: kafka.sh install: %v", err)
	}
	libs := ""
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "KAFKA_LIBS="); ok {
			libs = strings.TrimSpace(v)
		}
	}
	if libs == "" {
		t.Fatalf("kafkatest: kafka.sh install named no KAFKA_LIBS: %s", out)
	}
	p := &TxProducer{}
	p.cmd = exec.Command("java", "-cp", filepath.Join(libs, "*"), filepath.Join(filepath.Dir(script), "TxProduce.java"),
		strings.Join(brokers, ","), topic)
	p.cmd.Stderr = &p.log
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("kafkatest: start TxProduce.java: %v", err)
	}
	t.Cleanup(func() {
		p.in.Close()
		if err := p.cmd.Wait(); err != nil {
			t.Logf("kafkatest: TxProduce.java: %v\n%s", err, p.log.String())
		}
	})
	return p
}

// Do runs TxProduce.java's commands (begin P, send P PART PREFIX N,
// commit P, abort P, close P), one after the other, each done when it
// returns.
func (p *TxProducer) Do(t testing.TB, commands ...string) {
	t.Helper()
	for _, c := range commands {
		if _, err := fmt.Fprintln(p.in, c); err != nil {
			t.Fatalf("kafkatest: TxProduce.java %q: %v\n%s", c, err, p.log.String())
		}
		if !p.out.Scan() || p.out.Text() != "ok" {
			t.Fatalf("kafkatest: TxProduce.java %q failed: %q\n%s", c, p.out.Text(), p.log.String())
		}
	}
}
