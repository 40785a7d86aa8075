package multicast

import (
	"context"
	"time"
)

// maxBurst is how far behind schedule the sender may catch up at full speed.
const maxBurst = 20 * time.Millisecond

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
	timer *time.Timer
}

func newPacer(rate int64) *pacer { return &pacer{rate: float64(rate), start: time.Now()} }

// reset restarts the schedule, after a pause.
func (p *pacer) reset() { p.start, p.sent = time.Now(), 0 }

// wait blocks until n more bytes may be sent: until the schedule has room
// for them, so that bytes sent never run ahead of rate × time since start.
func (p *pacer) wait(ctx context.Context, n int) error {
	due := p.start.Add(time.Duration(float64(p.sent+int64(n)) / p.rate * float64(time.Second)))
	if lag := time.Since(due); lag > maxBurst {
		// The sender fell behind (a slow read, the scheduler). It may catch
		// up by maxBurst, no more: a longer burst would run a stretch of
		// the stream above the rate, and overrun slow receivers.
		p.start = p.start.Add(lag - maxBurst)
		due = due.Add(lag - maxBurst)
	}
	p.sent += int64(n)
	if d := time.Until(due); d > 0 {
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
