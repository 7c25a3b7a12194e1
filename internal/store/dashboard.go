package store

import (
	"context"
)

// WarmProjects maps each agent's id to the projects whose sticky cache
// volumes it holds (as its last claim reported them), by name.
func (s *Store) WarmProjects(ctx context.Context) (map[string][]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT w.agent_id, p.name FROM agent_warm w JOIN projects p ON p.id = w.project_id ORDER BY w.agent_id, p.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var agent, project string
		if err := rows.Scan(&agent, &project); err != nil {
			return nil, err
		}
		out[agent] = append(out[agent], project)
	}
	return out, rows.Err()
}
