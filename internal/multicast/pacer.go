package multicast

import (
	"context"
	"time"
)

// maxBurst is how far behind schedule the sender may catch up at full speed.
const maxBurst = 20 * time.Millisecond

// pacer keeps a sender at rate bytes per second on average and never ahead
// of it: a send of n bytes is due once start + (sent+n)/rate has come, and
// the sender sleeps until then. Senders send a batch at a time, so the
// sleeps stay well above the timer's resolution.
type pacer struct {
	rate  float64
	start time.Time
	sent  int64
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
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
