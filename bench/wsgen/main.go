// wsgen: a compiled WebSocket fan-out load generator for bench/ws_fanout.py.
//
// Standard library only. It reads one JSON job on stdin (sockets to open, with their
// bearer tokens and source addresses; senders, messages, pacing), opens the sockets,
// prints "opened" on stdout and waits for a "start" line on stdin (so the caller can
// start measuring the server), sends, prints "sent" when every expected delivery has
// arrived (or the drain timeout passed), then prints one JSON object with its figures.
//
// Pacing: rate 0 means ack-paced (a sender sends its next message when its own
// previous one comes back on its socket); rate R > 0 means each sender sends one
// message every 1/R seconds whatever the acks (open loop, for latency at a fixed load).
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type job struct {
	Host            string   `json:"host"`
	Port            int      `json:"port"`
	Tokens          []string `json:"tokens"`
	SourceIPs       []string `json:"source_ips"`
	ChannelID       string   `json:"channel_id"`
	Senders         int      `json:"senders"`
	Messages        int      `json:"messages"`
	Rate            float64  `json:"rate"`
	BodyBytes       int      `json:"body_bytes"`
	OpenConcurrency int      `json:"open_concurrency"`
	DrainTimeout    float64  `json:"drain_timeout"`
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var (
	epoch       = time.Now()
	typeNew     = []byte(`"type":"channel.message.new"`)
	typeError   = []byte(`"type":"error"`)
	bodyField   = []byte(`"body":"`)
	received    atomic.Int64
	errorEvents atomic.Int64
	expected    int64
	allArrived  = make(chan struct{})
	arrivedOnce sync.Once
)

type conn struct {
	index   int
	c       net.Conn
	r       *bufio.Reader
	wmu     sync.Mutex
	lat     []int64 // nanoseconds, send to receipt
	acks    chan int
	sender  int // this socket's sender index, or -1
	closeCd int
}

func dial(j *job, index int) (*conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if len(j.SourceIPs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(j.SourceIPs[index%len(j.SourceIPs)])}
	}
	addr := net.JoinHostPort(j.Host, strconv.Itoa(j.Port))
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	key := base64.StdEncoding.EncodeToString(raw)
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + j.Tokens[index%len(j.Tokens)] + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64*1024)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != 101 {
		c.Close()
		return nil, fmt.Errorf("handshake: %d", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		c.Close()
		return nil, errors.New("handshake: bad Sec-WebSocket-Accept")
	}
	return &conn{index: index, c: c, r: r, sender: -1}, nil
}

// writeFrame sends one masked client frame (RFC 6455 section 5.3).
func (w *conn) writeFrame(opcode byte, payload []byte) error {
	var head [14]byte
	head[0] = 0x80 | opcode
	n := 2
	size := len(payload)
	switch {
	case size < 126:
		head[1] = 0x80 | byte(size)
	case size < 1<<16:
		head[1] = 0x80 | 126
		binary.BigEndian.PutUint16(head[2:], uint16(size))
		n = 4
	default:
		head[1] = 0x80 | 127
		binary.BigEndian.PutUint64(head[2:], uint64(size))
		n = 10
	}
	var mask [4]byte
	if _, err := rand.Read(mask[:]); err != nil {
		return err
	}
	copy(head[n:], mask[:])
	n += 4
	frame := make([]byte, n+size)
	copy(frame, head[:n])
	for i, b := range payload {
		frame[n+i] = b ^ mask[i&3]
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.c.Write(frame)
	return err
}

// readLoop reads server frames (unmasked; fragments are joined) until the socket closes.
func (w *conn) readLoop(done *sync.WaitGroup) {
	defer done.Done()
	var head [8]byte
	var message []byte
	for {
		if _, err := io.ReadFull(w.r, head[:2]); err != nil {
			return
		}
		fin := head[0]&0x80 != 0
		opcode := head[0] & 0x0F
		size := uint64(head[1] & 0x7F)
		switch size {
		case 126:
			if _, err := io.ReadFull(w.r, head[:2]); err != nil {
				return
			}
			size = uint64(binary.BigEndian.Uint16(head[:2]))
		case 127:
			if _, err := io.ReadFull(w.r, head[:8]); err != nil {
				return
			}
			size = binary.BigEndian.Uint64(head[:8])
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(w.r, payload); err != nil {
			return
		}
		switch opcode {
		case 0x9:
			_ = w.writeFrame(0xA, payload)
			continue
		case 0xA:
			continue
		case 0x8:
			w.closeCd = 1005
			if len(payload) >= 2 {
				w.closeCd = int(binary.BigEndian.Uint16(payload[:2]))
			}
			_ = w.writeFrame(0x8, payload[:min(2, len(payload))])
			w.c.Close()
			return
		case 0x0:
			message = append(message, payload...)
		default:
			message = payload
		}
		if !fin {
			continue
		}
		w.onText(message)
		message = nil
	}
}

func (w *conn) onText(data []byte) {
	now := time.Since(epoch).Nanoseconds()
	if !bytes.Contains(data, typeNew) {
		if bytes.Contains(data, typeError) {
			errorEvents.Add(1)
		}
		return
	}
	at := bytes.Index(data, bodyField)
	if at < 0 {
		return
	}
	body := data[at+len(bodyField):]
	bar := bytes.IndexByte(body, '|')
	if bar < 0 {
		return
	}
	sent, err := strconv.ParseInt(string(body[:bar]), 10, 64)
	if err != nil {
		return
	}
	w.lat = append(w.lat, now-sent)
	if w.acks != nil {
		rest := body[bar+1:]
		colon := bytes.IndexByte(rest, ':')
		if colon > 0 {
			if who, err := strconv.Atoi(string(rest[:colon])); err == nil && who == w.sender {
				w.acks <- 1
			}
		}
	}
	if received.Add(1) == expected {
		arrivedOnce.Do(func() { close(allArrived) })
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func percentile(sorted []int64, pct float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	rank := int(pct/100*float64(len(sorted)) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return round2(float64(sorted[rank-1]) / 1e6)
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wsgen:", err)
	os.Exit(1)
}

func main() {
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fail(err)
	}
	var j job
	if err := json.Unmarshal(line, &j); err != nil {
		fail(err)
	}
	if j.OpenConcurrency <= 0 {
		j.OpenConcurrency = 50
	}
	if j.DrainTimeout <= 0 {
		j.DrainTimeout = 60
	}
	count := len(j.Tokens)
	expected = int64(count * j.Senders * j.Messages)

	// Open every socket, OpenConcurrency handshakes at a time.
	conns := make([]*conn, count)
	cpu0 := cpuSeconds()
	t0 := time.Now()
	slots := make(chan struct{}, j.OpenConcurrency)
	var opening sync.WaitGroup
	var openErr atomic.Value
	for i := 0; i < count; i++ {
		opening.Add(1)
		slots <- struct{}{}
		go func(i int) {
			defer opening.Done()
			defer func() { <-slots }()
			c, err := dial(&j, i)
			if err != nil {
				openErr.Store(err)
				return
			}
			conns[i] = c
		}(i)
	}
	opening.Wait()
	if err, ok := openErr.Load().(error); ok {
		fail(err)
	}
	openSeconds := time.Since(t0).Seconds()
	openCPU := cpuSeconds() - cpu0
	var readers sync.WaitGroup
	for i, c := range conns {
		if i < j.Senders {
			c.sender = i
			if j.Rate == 0 {
				c.acks = make(chan int, 1)
			}
		}
		readers.Add(1)
		go c.readLoop(&readers)
	}
	fmt.Println("opened")
	if _, err := in.ReadBytes('\n'); err != nil {
		fail(err)
	}

	pad := bytes.Repeat([]byte("x"), max(0, j.BodyBytes-40))
	cpu0 = cpuSeconds()
	t0 = time.Now()
	var sending sync.WaitGroup
	var sent atomic.Int64
	for s := 0; s < j.Senders; s++ {
		sending.Add(1)
		go func(s int) {
			defer sending.Done()
			c := conns[s]
			var next time.Time
			interval := time.Duration(0)
			if j.Rate > 0 {
				interval = time.Duration(float64(time.Second) / j.Rate)
				// Spread the senders' ticks over one interval.
				next = time.Now().Add(interval * time.Duration(s) / time.Duration(j.Senders))
			}
			for i := 0; i < j.Messages; i++ {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				body := fmt.Sprintf("%d|%d:%d|%s", time.Since(epoch).Nanoseconds(), s, i, pad)
				frame, _ := json.Marshal(map[string]string{
					"type":            "channel.message.send",
					"channel_id":      j.ChannelID,
					"body":            body,
					"sender_name_enc": "bmFtZQ==",
				})
				if err := c.writeFrame(0x1, frame); err != nil {
					fail(err)
				}
				sent.Add(1)
				if c.acks != nil {
					select {
					case <-c.acks:
					case <-time.After(30 * time.Second):
						fail(fmt.Errorf("sender %d: no echo of message %d within 30 s", s, i))
					}
				}
			}
		}(s)
	}
	sending.Wait()
	sendDone := time.Since(t0).Seconds()
	select {
	case <-allArrived:
	case <-time.After(time.Duration(j.DrainTimeout * float64(time.Second))):
		fmt.Fprintln(os.Stderr, "wsgen: not every delivery arrived")
	}
	elapsed := time.Since(t0).Seconds()
	sendCPU := cpuSeconds() - cpu0
	fmt.Println("sent")
	got := received.Load()
	for _, c := range conns {
		c.c.Close()
	}
	readers.Wait()

	var all []int64
	closed := map[string]int{}
	for _, c := range conns {
		all = append(all, c.lat...)
		if c.closeCd != 0 {
			closed[strconv.Itoa(c.closeCd)]++
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	maxMs := -1.0
	if len(all) > 0 {
		maxMs = round2(float64(all[len(all)-1]) / 1e6)
	}
	out := map[string]any{
		"generator":                "wsgen (Go)",
		"deliveries_expected":      expected,
		"deliveries_received":      got,
		"deliveries_lost":          expected - got,
		"deliveries_per_s":         round2(float64(got) / elapsed),
		"messages_sent":            sent.Load(),
		"send_rate_per_s":          round2(float64(sent.Load()) / sendDone),
		"send_phase_s":             round2(elapsed),
		"p50_ms":                   percentile(all, 50),
		"p90_ms":                   percentile(all, 90),
		"p99_ms":                   percentile(all, 99),
		"max_ms":                   maxMs,
		"open_s":                   round2(openSeconds),
		"open_generator_cpu_s":     round2(openCPU),
		"generator_cpu_s":          round2(sendCPU),
		"generator_cpu_pct":        round2(100 * sendCPU / elapsed),
		"error_events":             errorEvents.Load(),
		"sockets_closed_by_server": closed,
	}
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}
