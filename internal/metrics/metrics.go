// Package metrics defines Kiln's Prometheus metrics in one place, registered
// on a registry of their own (no global state), served at /metrics.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type Metrics struct {
	Registry           *prometheus.Registry
	WebhookDeliveries  *prometheus.CounterVec   // forge, result
	QueueWait          prometheus.Histogram     // seconds from queued to claimed
	JobDuration        *prometheus.HistogramVec // status; seconds from claim to finish
	JobsFinished       *prometheus.CounterVec   // status
	LeasesExpired      prometheus.Counter
	LogLinesReceived   prometheus.Counter
	StaleWritesRefused prometheus.Counter
	CacheOps           *prometheus.CounterVec // project, kind, op, result
	CacheBytes         *prometheus.CounterVec // project, kind, op

	// ForeignWritesRefused: job writes by an agent token that does not
	// hold the attempt's lease, by write (heartbeat, steps, logs, finish).
	ForeignWritesRefused *prometheus.CounterVec
	// AgentsQuarantined counts agents put into quarantine (kiln_agents
	// has how many are in it now).
	AgentsQuarantined prometheus.Counter

	// GitHub Actions runner pools.
	ActionsQueuedToRunning   prometheus.Histogram   // seconds from a job first seen queued to in_progress
	ActionsJITCalls          *prometheus.CounterVec // result
	ActionsReconcilerRepairs prometheus.Counter
	ActionsUnmatchedJobs     prometheus.Counter
	ActionsWebhooks          *prometheus.CounterVec // action, result

	// Webhook bodies: read (and verified) now, and spooled to disk.
	WebhookBodiesReading prometheus.Gauge
	WebhookBodiesSpooled prometheus.Counter

	// ForgeStatuses: commit statuses sent to forges, by forge and result
	// (delivered, retried, failed, superseded).
	ForgeStatuses *prometheus.CounterVec

	// Leader is 1 on the server holding a leader lease (internal/leader),
	// 0 on the others, by lease.
	Leader *prometheus.GaugeVec
}

// BuildCounter reports builds by status (read from the store at scrape time).
type BuildCounter func(ctx context.Context) (map[string]int, error)

func New(builds BuildCounter) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		WebhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_webhook_deliveries_total", Help: "Webhook deliveries by forge and result.",
		}, []string{"forge", "result"}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_job_queue_wait_seconds", Help: "Time a job waited from queued to claimed by an agent.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 14),
		}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kiln_job_duration_seconds", Help: "Job attempt duration from claim to finish, by final status.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 14),
		}, []string{"status"}),
		JobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_job_attempts_finished_total", Help: "Job attempts finished, by status.",
		}, []string{"status"}),
		LeasesExpired:      prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_leases_expired_total", Help: "Job leases that expired (agent lost)."}),
		LogLinesReceived:   prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_log_lines_received_total", Help: "Log lines received from agents."}),
		StaleWritesRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_stale_writes_refused_total", Help: "Agent writes refused because their attempt no longer held the lease."}),
		ForeignWritesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_agent_writes_refused_total", Help: "Agent job writes refused because another agent token holds the attempt's lease, by write (heartbeat, steps, logs, finish).",
		}, []string{"write"}),
		AgentsQuarantined: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_agent_quarantines_total", Help: "Times an agent was quarantined (or kept in quarantine) because its attempts kept ending in infrastructure errors."}),
		CacheOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_cache_operations_total", Help: "Cache restores and saves of jobs by project, kind (sticky, keyed), op and result (hit, miss, saved, exists, skipped, error). Hit rate: hit / (hit + miss) of op=restore.",
		}, []string{"project", "kind", "op", "result"}),
		CacheBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_cache_bytes_total", Help: "Bytes restored and saved by job caches.",
		}, []string{"project", "kind", "op"}),
		ActionsQueuedToRunning: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_actions_queued_to_running_seconds", Help: "Time from a GitHub Actions job first seen queued (webhook or reconciler) to in_progress.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
		}),
		ActionsJITCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_actions_jit_calls_total", Help: "Calls to GitHub's generate-jitconfig, by result (ok, conflict, rate_limited, server_error, forbidden, not_found, validation, unauthorized, network, error).",
		}, []string{"result"}),
		ActionsReconcilerRepairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_actions_reconciler_repairs_total", Help: "Runner jobs the reconciler started for queued GitHub jobs that no webhook announced, or whose runner was lost."}),
		ActionsUnmatchedJobs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_actions_unmatched_jobs_total", Help: "Queued GitHub Actions jobs whose labels match no pool (ignored)."}),
		ActionsWebhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_actions_webhooks_total", Help: "GitHub Actions webhook deliveries by workflow_job action and result.",
		}, []string{"action", "result"}),
		WebhookBodiesReading: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_webhook_bodies_reading", Help: "Webhook bodies being read and verified now (at most -webhook-concurrency)."}),
		WebhookBodiesSpooled: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_webhook_bodies_spooled_total", Help: "Webhook bodies too large to hold in memory while verified, spooled to a file in the data directory."}),
	}
	m.ForgeStatuses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_forge_statuses_total", Help: "Commit statuses sent to forges, by forge and result: delivered, retried (a 5xx, 429, rate limit or network error: tried again later), failed (given up: another 4xx, or too many attempts), superseded (a newer state of the same commit and context was sent instead).",
	}, []string{"forge", "result"})
	r.MustRegister(m.ForgeStatuses)
	m.Leader = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kiln_leader", Help: "1 on the server that holds the leader lease and runs its background work (the reapers, the GitHub reconciler, warm runners, cache eviction, the forge status sender, log retention), 0 on the others.",
	}, []string{"lease"})
	r.MustRegister(m.Leader)
	r.MustRegister(m.WebhookBodiesReading, m.WebhookBodiesSpooled)
	r.MustRegister(m.ActionsQueuedToRunning, m.ActionsJITCalls, m.ActionsReconcilerRepairs, m.ActionsUnmatchedJobs, m.ActionsWebhooks)
	r.MustRegister(m.WebhookDeliveries, m.QueueWait, m.JobDuration, m.JobsFinished, m.LeasesExpired, m.LogLinesReceived, m.StaleWritesRefused, m.ForeignWritesRefused, m.AgentsQuarantined, m.CacheOps, m.CacheBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if builds != nil {
		r.MustRegister(&buildCollector{count: builds, desc: prometheus.NewDesc("kiln_builds", "Builds by status.", []string{"status"}, nil)})
	}
	return m
}

// CountRunners registers the kiln_actions_runners gauge: runner jobs by
// state, read with count at scrape time.
func (m *Metrics) CountRunners(count func(ctx context.Context) (map[string]int, error)) {
	m.Registry.MustRegister(&buildCollector{count: count, desc: prometheus.NewDesc("kiln_actions_runners", "GitHub Actions runner jobs by state (queued, starting, online, busy).", []string{"state"}, nil)})
}

// CountAgents registers the kiln_agents gauge: registered agents by state
// (ok, quarantined, probing; see the scheduler's agent policy), read with
// count at scrape time.
func (m *Metrics) CountAgents(count func(ctx context.Context) (map[string]int, error)) {
	m.Registry.MustRegister(&buildCollector{count: count, desc: prometheus.NewDesc("kiln_agents", "Registered agents by state: ok, quarantined (its attempts kept ending in infrastructure errors: it gets no jobs until its backoff passes), probing (it may take one job to show it recovered).", []string{"state"}, nil)})
}

// CountForgeStatuses registers the kiln_forge_statuses_pending gauge and
// kiln_forge_statuses_oldest_pending_seconds, read with pending at scrape
// time (how many rows of the outbox are still to send, and when the
// oldest was written).
func (m *Metrics) CountForgeStatuses(pending func(ctx context.Context) (int, time.Time, error)) {
	m.Registry.MustRegister(&outboxCollector{pending: pending,
		n:   prometheus.NewDesc("kiln_forge_statuses_pending", "Commit statuses in the outbox still to send to their forge.", nil, nil),
		age: prometheus.NewDesc("kiln_forge_statuses_oldest_pending_seconds", "Age of the oldest commit status still to send (0: none).", nil, nil)})
}

type outboxCollector struct {
	pending func(ctx context.Context) (int, time.Time, error)
	n, age  *prometheus.Desc
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.n; ch <- c.age }

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, oldest, err := c.pending(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.n, err)
		return
	}
	var age float64
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.n, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
}

func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// buildCollector reports counts by one label, read at scrape time.
type buildCollector struct {
	count BuildCounter
	desc  *prometheus.Desc
}

func (c *buildCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *buildCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.count(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
