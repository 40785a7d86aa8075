package multicast

import (
	"context"
	"time"
)

// After a stall (a slow read, a loaded machine's scheduler) the sender
// makes up the time it lost: first maxBurst of the stream at full speed,
// then the rest at catchUp times the rate, for a stall of at most maxDebt
// (and maxDebtBytes of the stream, a quarter of a client's socket buffer).
// Before, any stall beyond maxBurst was lost for good: on a 2-core machine
// shared by the server, 8 clients and other work, the server was held up
// often enough that its pass ran at 60% of its Data Rate, and every client
// waited. The average over the pass stays at the rate; the network sees at
// most catchUp times it, for at most twice maxDebt.
const (
	maxBurst     = 20 * time.Millisecond
	maxDebt      = 500 * time.Millisecond
	maxDebtBytes = 8 << 20
	catchUp      = 1.5
)

// Pacing: the sender sends a burst of packets per tick of its clock rather
// than a few packets at a time. Each wake-up of the sender, and each
// wake-up of every client's receive loop, costs CPU; at 25 MB/s bursts of
// 8 packets woke both 2,200 times a second. A burst is what the rate
// allows in burstTick, at most maxBurstPackets: at 25 MB/s that is 34
// packets (49 KB) every 2 ms.
//
// Why these bounds: a burst leaves the sender at its link's speed, and a
// switch queues it only where it goes out to a slower link (a client on
// 100 Mbit/s behind a gigabit sender) or meets other traffic. 128 KiB is
// well within the per-port buffers of common switches, and a client's
// socket buffer (32 MiB asked for) holds hundreds of bursts; the average
// rate over any 2 ms is still the configured one.
const (
	burstTick       = 2 * time.Millisecond
	maxBurstPackets = 90 // 130,320 bytes: two segmentation-offload sends
)

// burstPackets is how many packets the sender sends per tick at rate
// bytes per second: at least one.
func burstPackets(rate int64) int {
	n := int(float64(rate) * burstTick.Seconds() / packetSize)
	return min(max(n, 1), maxBurstPackets)
}

// pacer keeps a sender at rate bytes per second on average and never ahead
// of it: a send of n bytes is due once start + (sent+n)/rate has come, and
// the sender sleeps until then. Senders send a burst at a time, so the
// sleeps stay well above the timer's resolution.
type pacer struct {
	rate  float64
	start time.Time
	sent  int64
	debt  time.Duration // the most lost time made up
	lead  time.Duration // maxBurst at catchUp times the rate
	// peak is the catch-up schedule, at catchUp times the rate: a send is
	// due no earlier than it.
	peak  time.Time
	timer *time.Timer
}

func newPacer(rate int64) *pacer {
	debt := min(maxDebt, time.Duration(float64(maxDebtBytes)/float64(rate)*float64(time.Second)))
	burst := float64(maxBurst)
	return &pacer{rate: float64(rate), start: time.Now(), debt: max(debt, maxBurst), lead: time.Duration(burst / catchUp)}
}

// reset restarts the schedule, after a pause.
func (p *pacer) reset() { p.start, p.sent, p.peak = time.Now(), 0, time.Time{} }

// wait blocks until n more bytes may be sent: until the schedule has room
// for them, so that bytes sent never run ahead of rate × time since start.
func (p *pacer) wait(ctx context.Context, n int) error {
	now := time.Now()
	due := p.start.Add(time.Duration(float64(p.sent+int64(n)) / p.rate * float64(time.Second)))
	if lag := now.Sub(due); lag > p.debt {
		// The sender fell further behind than it makes up: the rest is
		// lost, rather than run a long stretch of the stream above the
		// rate, which would overrun slow receivers.
		p.start = p.start.Add(lag - p.debt)
		due = due.Add(lag - p.debt)
	}
	// Catching up: maxBurst at full speed (the catch-up schedule starts
	// that far back), then catchUp times the rate. In step, the catch-up
	// schedule is behind the rate's and changes nothing.
	if floor := now.Add(-p.lead); p.peak.Before(floor) {
		p.peak = floor
	}
	p.peak = p.peak.Add(time.Duration(float64(n) / (catchUp * p.rate) * float64(time.Second)))
	if p.peak.After(due) {
		due = p.peak
	}
	p.sent += int64(n)
	if d := due.Sub(now); d > 0 {
		// One timer for every wait: hundreds of waits a second.
		if p.timer == nil {
			p.timer = time.NewTimer(d)
		} else {
			p.timer.Reset(d)
		}
		select {
		case <-p.timer.C:
		case <-ctx.Done():
			p.timer.Stop()
			return ctx.Err()
		}
	}
	return nil
}
