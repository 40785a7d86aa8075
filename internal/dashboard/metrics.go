package dashboard

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/asrlinux/asr/internal/multicast"
)

// states are the client states, each always exported (0 included) so
// that a query over them never misses a series.
var states = []string{multicast.StateConnected, multicast.StateJoined, multicast.StateRestoring,
	multicast.StateVerifying, multicast.StateDone, multicast.StateFailed, multicast.StateLost}

// collector reads the server's state at each scrape: nothing is counted
// twice, and nothing is kept between scrapes.
type collector struct {
	d *Dashboard

	clients, listening, pass, passes, bytes, packets, repairChunks, repairBytes *prometheus.Desc
	conns, connsTotal, connsRefused, badControl                                 *prometheus.Desc
	reportedPackets, reportedIgnored, reportedChunks                            *prometheus.Desc
	imageInfo, imageSize, buildInfo                                             *prometheus.Desc
}

func newCollector(d *Dashboard) *collector {
	n := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("asr_server_"+name, help, labels, nil)
	}
	return &collector{d: d,
		clients:         n("clients", "Clients by state, those the table no longer holds included.", "state"),
		listening:       n("clients_listening", "Clients in the multicast group now."),
		pass:            n("pass", "The pass of the image being sent (0 before the first)."),
		passes:          n("passes_total", "Passes of the whole image sent."),
		bytes:           n("sent_bytes_total", "Bytes of multicast data packets sent, headers and parity included."),
		packets:         n("sent_packets_total", "Multicast data packets sent."),
		repairChunks:    n("repair_chunks_total", "Chunks sent to clients by unicast repair."),
		repairBytes:     n("repair_bytes_total", "Stored bytes of the chunks sent by repair."),
		conns:           n("control_connections", "Control connections open."),
		connsTotal:      n("control_connections_total", "Control connections accepted."),
		connsRefused:    n("control_connections_refused_total", "Control connections refused over the limits."),
		badControl:      n("control_malformed_total", "Control connections dropped for breaking the protocol (no valid hello, a bad frame)."),
		reportedPackets: n("client_packets_total", "Data packets the clients reported receiving."),
		reportedIgnored: n("client_ignored_packets_total", "Data packets the clients reported ignoring, by reason: foreign (another stream), malformed.", "reason"),
		reportedChunks:  n("client_chunks_total", "Chunks the clients reported, by outcome: failed_check (digest mismatch, dropped), rebuilt (from parity), repaired (by unicast).", "outcome"),
		imageInfo:       n("image_info", "The image being served.", "name", "digest", "signed"),
		imageSize:       n("image_size_bytes", "Logical size of the image: the disk it restores."),
		buildInfo:       prometheus.NewDesc("asr_build_info", "The asr build serving.", []string{"version", "goversion"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	srv, im := c.d.opts.Server, c.d.opts.Image
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	by := srv.Forgotten()
	for _, cl := range srv.Clients() {
		by[cl.State]++
	}
	for _, s := range states {
		gauge(c.clients, float64(by[s]), s)
	}
	st := srv.Stats()
	gauge(c.listening, float64(st.Listening))
	gauge(c.pass, float64(st.Pass))
	counter(c.passes, st.PassesDone)
	counter(c.bytes, st.BytesSent)
	counter(c.packets, st.PacketsSent)
	counter(c.repairChunks, st.RepairChunks)
	counter(c.repairBytes, st.RepairBytes)
	gauge(c.conns, float64(st.Conns))
	counter(c.connsTotal, st.ConnsTotal)
	counter(c.connsRefused, st.ConnsRefused)
	counter(c.badControl, st.BadControl)
	r := st.Reported
	counter(c.reportedPackets, r.Packets)
	counter(c.reportedIgnored, r.Foreign, "foreign")
	counter(c.reportedIgnored, r.Malformed, "malformed")
	counter(c.reportedChunks, r.Failed, "failed_check")
	counter(c.reportedChunks, r.Rebuilt, "rebuilt")
	counter(c.reportedChunks, r.Repaired, "repaired")
	signed := "false"
	if len(im.Signers) > 0 {
		signed = "true"
	}
	gauge(c.imageInfo, 1, im.Name, im.Digest, signed)
	gauge(c.imageSize, float64(im.Size))
	gauge(c.buildInfo, 1, c.d.opts.Version, runtime.Version())
}

// metricsHandler serves the server's metrics and the Go runtime's and the
// process's (memory: a server's must not grow with clients or viewers),
// from a registry of its own.
func (d *Dashboard) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(d), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
		ErrorHandling:       promhttp.ContinueOnError,
	})
}
