package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Pool is a named set of GitHub Actions runner labels served by ephemeral
// runners: a workflow job whose runs-on labels are all among Labels starts
// one runner job that runs Command in Image. Validation is the caller's
// (internal/actions): the store keeps what it is given.
type Pool struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
	Image  string   `json:"image"`
	// CPUs, MemoryBytes, Pids limit the sandbox; zero means the agent's default.
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
	// MaxRunners bounds the runner jobs of the pool running at once.
	MaxRunners int `json:"max_runners"`
	// Warm is the number of idle runners to keep ready (see docs/actions.md).
	Warm int `json:"warm,omitempty"`
	// Owner and Repo are the runners' scope: a repository, or the
	// organization Owner when Repo is "".
	Owner          string `json:"owner"`
	Repo           string `json:"repo,omitempty"`
	RunnerGroupID  int64  `json:"runner_group_id"`
	InstallationID int64  `json:"installation_id,omitempty"`
	// Command is the step that starts the runner in the image.
	Command string `json:"command"`
	// AgentLabels are the Kiln agent labels a runner job needs (runs-on
	// for Kiln's agents, not GitHub's labels).
	AgentLabels    []string  `json:"agent_labels,omitempty"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	CreatedAt      time.Time `json:"created_at"`
}

const poolCols = `name, labels, image, cpus, memory_bytes, pids, max_runners, warm, owner, repo, runner_group_id, installation_id, command, agent_labels, timeout_seconds, created_at`

func scanPool(row interface{ Scan(...any) error }) (*Pool, error) {
	var p Pool
	var labels, agentLabels string
	var created int64
	err := row.Scan(&p.Name, &labels, &p.Image, &p.CPUs, &p.MemoryBytes, &p.Pids, &p.MaxRunners, &p.Warm, &p.Owner, &p.Repo,
		&p.RunnerGroupID, &p.InstallationID, &p.Command, &agentLabels, &p.TimeoutSeconds, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("pool: %w", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(labels), &p.Labels)
	_ = json.Unmarshal([]byte(agentLabels), &p.AgentLabels)
	p.CreatedAt = fromMS(created)
	return &p, nil
}

// CreatePool stores a new pool; a pool of that name is ErrConflict.
func (s *Store) CreatePool(ctx context.Context, p *Pool) error {
	p.CreatedAt = fromMS(s.nowMS())
	_, err := s.db.ExecContext(ctx, `INSERT INTO pools (`+poolCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.Name, marshalLabels(p.Labels), p.Image, p.CPUs, p.MemoryBytes, p.Pids, p.MaxRunners, p.Warm, p.Owner, p.Repo,
		p.RunnerGroupID, p.InstallationID, p.Command, marshalLabels(p.AgentLabels), p.TimeoutSeconds, ms(p.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("pool %q: %w", p.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create pool: %w", err)
	}
	return nil
}

// Pool returns the pool named name.
func (s *Store) Pool(ctx context.Context, name string) (*Pool, error) {
	return scanPool(s.db.QueryRowContext(ctx, `SELECT `+poolCols+` FROM pools WHERE name = ?`, name))
}

// ListPools returns every pool, by name.
func (s *Store) ListPools(ctx context.Context) ([]*Pool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+poolCols+` FROM pools ORDER BY name`)
	return collect(rows, err, scanPool)
}

// DeletePool removes a pool and cancels its runner jobs that have not
// finished (queued ones at once, running ones through their agent's next
// heartbeat, which destroys the sandbox). It returns the canceled builds.
func (s *Store) DeletePool(ctx context.Context, name string) ([]int64, error) {
	return s.deletePool(ctx, name, nil)
}

func (s *Store) deletePool(ctx context.Context, name string, audit func() *AuditEvent) ([]int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM pools WHERE name = ?`, name)
	if err := mustAffect(res, err, "pool"); err != nil {
		return nil, err
	}
	ids, err := queryIDs(ctx, tx, `SELECT DISTINCT build_id FROM jobs WHERE pool = ? AND status IN ('queued', 'running')`, name)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := s.cancelBuildTx(ctx, tx, id, fmt.Sprintf("pool %s was deleted", name)); err != nil {
			return nil, err
		}
	}
	if err := s.auditTx(ctx, tx, audit); err != nil {
		return nil, err
	}
	return ids, tx.Commit()
}

func queryIDs(ctx context.Context, q querier, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	return collect(rows, err, func(row interface{ Scan(...any) error }) (int64, error) {
		var id int64
		return id, row.Scan(&id)
	})
}
