package store

import (
	"context"
	"fmt"
)

// migrations are applied in order, once each; the applied count is kept in
// schema_version. Append only: never edit a migration that has shipped.
var migrations = []string{
	`CREATE TABLE projects (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL UNIQUE,
		clone_url TEXT NOT NULL,
		default_branch TEXT NOT NULL,
		webhook_secret BLOB,
		cancel_superseded INTEGER NOT NULL DEFAULT 0,
		next_build_number INTEGER NOT NULL DEFAULT 1,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE secrets (
		project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		name TEXT NOT NULL,
		value BLOB NOT NULL,
		PRIMARY KEY (project_id, name)
	);
	CREATE TABLE builds (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		number INTEGER NOT NULL,
		status TEXT NOT NULL,
		trigger TEXT NOT NULL,
		forge TEXT NOT NULL DEFAULT '',
		delivery_id TEXT NOT NULL DEFAULT '',
		ref TEXT NOT NULL DEFAULT '',
		branch TEXT NOT NULL DEFAULT '',
		commit_sha TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		author TEXT NOT NULL DEFAULT '',
		error TEXT NOT NULL DEFAULT '',
		cancel_requested INTEGER NOT NULL DEFAULT 0,
		planned INTEGER NOT NULL DEFAULT 0,
		plan_attempts INTEGER NOT NULL DEFAULT 0,
		plan_lease INTEGER,
		created_at INTEGER NOT NULL,
		started_at INTEGER,
		finished_at INTEGER,
		UNIQUE (project_id, number)
	);
	CREATE INDEX builds_status ON builds(status);
	CREATE INDEX builds_project_branch ON builds(project_id, branch);
	CREATE TABLE jobs (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
		name TEXT NOT NULL,
		status TEXT NOT NULL,
		spec BLOB NOT NULL,
		labels TEXT NOT NULL DEFAULT '[]',
		timeout_seconds INTEGER NOT NULL,
		attempt INTEGER NOT NULL DEFAULT 0,
		max_attempts INTEGER NOT NULL,
		agent_id TEXT NOT NULL DEFAULT '',
		lease_expires INTEGER,
		cancel_requested INTEGER NOT NULL DEFAULT 0,
		exit_code INTEGER,
		error TEXT NOT NULL DEFAULT '',
		queued_at INTEGER NOT NULL,
		not_before INTEGER,
		started_at INTEGER,
		finished_at INTEGER
	);
	CREATE INDEX jobs_status ON jobs(status, id);
	CREATE INDEX jobs_build ON jobs(build_id);
	CREATE TABLE job_attempts (
		job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
		attempt INTEGER NOT NULL,
		agent_id TEXT NOT NULL,
		status TEXT NOT NULL,
		error TEXT NOT NULL DEFAULT '',
		started_at INTEGER NOT NULL,
		finished_at INTEGER,
		PRIMARY KEY (job_id, attempt)
	);
	CREATE TABLE steps (
		job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
		attempt INTEGER NOT NULL,
		idx INTEGER NOT NULL,
		name TEXT NOT NULL,
		status TEXT NOT NULL,
		exit_code INTEGER,
		started_at INTEGER,
		finished_at INTEGER,
		PRIMARY KEY (job_id, attempt, idx)
	);
	CREATE TABLE log_lines (
		job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
		attempt INTEGER NOT NULL,
		seq INTEGER NOT NULL,
		step INTEGER NOT NULL,
		ts INTEGER NOT NULL,
		text TEXT NOT NULL,
		PRIMARY KEY (job_id, attempt, seq)
	);
	CREATE TABLE agents (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL,
		labels TEXT NOT NULL DEFAULT '[]',
		capacity INTEGER NOT NULL,
		version TEXT NOT NULL DEFAULT '',
		first_seen INTEGER NOT NULL,
		last_seen INTEGER NOT NULL
	);
	CREATE TABLE tokens (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL,
		kind TEXT NOT NULL,
		hash TEXT NOT NULL UNIQUE,
		revoked INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL,
		last_used INTEGER
	);
	CREATE TABLE deliveries (
		id TEXT NOT NULL,
		forge TEXT NOT NULL,
		project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		event TEXT NOT NULL,
		result TEXT NOT NULL,
		build_id INTEGER,
		received_at INTEGER NOT NULL,
		PRIMARY KEY (forge, project_id, id)
	);`,
	// 2: sticky-cache affinity. Agents report the projects whose sticky
	// volumes they hold; jobs with sticky caches prefer those agents.
	`ALTER TABLE jobs ADD COLUMN sticky INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE agent_warm (
		agent_id TEXT NOT NULL,
		project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		PRIMARY KEY (agent_id, project_id)
	);`,
	// 3: GitHub Actions. Pools of ephemeral runners; the workflow jobs
	// Kiln knows (their state only moves forward); one record per runner
	// job (a Kiln job whose step runs a JIT-configured runner); the
	// repositories webhooks named, for the reconciler; Actions webhook
	// deliveries, for de-duplication. jobs.pool marks a runner job and
	// bounds a pool's concurrency at claim time.
	`ALTER TABLE jobs ADD COLUMN pool TEXT NOT NULL DEFAULT '';
	CREATE INDEX jobs_pool_status ON jobs(pool, status);
	CREATE TABLE pools (
		name TEXT PRIMARY KEY,
		labels TEXT NOT NULL,
		image TEXT NOT NULL,
		cpus REAL NOT NULL DEFAULT 0,
		memory_bytes INTEGER NOT NULL DEFAULT 0,
		pids INTEGER NOT NULL DEFAULT 0,
		max_runners INTEGER NOT NULL,
		warm INTEGER NOT NULL DEFAULT 0,
		owner TEXT NOT NULL,
		repo TEXT NOT NULL DEFAULT '',
		runner_group_id INTEGER NOT NULL DEFAULT 1,
		installation_id INTEGER NOT NULL DEFAULT 0,
		command TEXT NOT NULL,
		agent_labels TEXT NOT NULL DEFAULT '[]',
		timeout_seconds INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE actions_jobs (
		gh_job_id INTEGER PRIMARY KEY,
		run_id INTEGER NOT NULL,
		run_attempt INTEGER NOT NULL DEFAULT 0,
		owner TEXT NOT NULL,
		repo TEXT NOT NULL,
		name TEXT NOT NULL DEFAULT '',
		workflow TEXT NOT NULL DEFAULT '',
		labels TEXT NOT NULL DEFAULT '[]',
		status TEXT NOT NULL,
		conclusion TEXT NOT NULL DEFAULT '',
		pool TEXT NOT NULL DEFAULT '',
		installation_id INTEGER NOT NULL DEFAULT 0,
		html_url TEXT NOT NULL DEFAULT '',
		head_branch TEXT NOT NULL DEFAULT '',
		head_sha TEXT NOT NULL DEFAULT '',
		runner_name TEXT NOT NULL DEFAULT '',
		job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
		launches INTEGER NOT NULL DEFAULT 0,
		first_seen INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		source TEXT NOT NULL
	);
	CREATE INDEX actions_jobs_status ON actions_jobs(status, owner, repo);
	CREATE UNIQUE INDEX actions_jobs_runner_job ON actions_jobs(job_id) WHERE job_id IS NOT NULL;
	CREATE TABLE actions_runners (
		job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
		pool TEXT NOT NULL,
		gh_job_id INTEGER NOT NULL,
		name TEXT NOT NULL UNIQUE,
		owner TEXT NOT NULL,
		repo TEXT NOT NULL DEFAULT '',
		installation_id INTEGER NOT NULL DEFAULT 0,
		runner_id INTEGER NOT NULL DEFAULT 0,
		gh_status TEXT NOT NULL DEFAULT '',
		online_at INTEGER,
		idle_since INTEGER,
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL
	);
	CREATE INDEX actions_runners_gh_job ON actions_runners(gh_job_id);
	CREATE TABLE actions_repos (
		owner TEXT NOT NULL,
		repo TEXT NOT NULL,
		installation_id INTEGER NOT NULL DEFAULT 0,
		last_seen INTEGER NOT NULL,
		PRIMARY KEY (owner, repo)
	);
	CREATE TABLE actions_deliveries (
		id TEXT PRIMARY KEY,
		action TEXT NOT NULL,
		gh_job_id INTEGER NOT NULL,
		result TEXT NOT NULL,
		received_at INTEGER NOT NULL
	);`,
	// 4: GitHub Actions warm runners. A warm runner job has gh_job_id 0
	// until GitHub hands its runner a job; actions_jobs.warm_until marks a
	// queued job expected to be taken by a warm runner: no dedicated runner
	// job is made for it before then.
	`ALTER TABLE actions_jobs ADD COLUMN warm_until INTEGER;
	CREATE INDEX actions_runners_pool ON actions_runners(pool, gh_job_id);`,
	// 5: disk full and log retention. health holds the row /healthz
	// rewrites to prove the store can write; a build records when its logs
	// were pruned and (once finished) their size; a project may override
	// the server's log retention (NULL: the server's default; 0: no limit).
	`CREATE TABLE health (id INTEGER PRIMARY KEY, checked_at INTEGER NOT NULL);
	ALTER TABLE builds ADD COLUMN logs_pruned_at INTEGER;
	ALTER TABLE builds ADD COLUMN log_bytes INTEGER;
	CREATE INDEX builds_logs_kept ON builds(project_id, finished_at) WHERE logs_pruned_at IS NULL;
	CREATE TABLE project_log_retention (
		project_id INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
		days INTEGER,
		max_bytes INTEGER
	);`,
	// 6: fenced agent writes and broken agents. A job records the agent
	// token that claimed its attempt (only it may write the attempt); an
	// agent records the token that registered it, and its streak of
	// attempts ended in error (what the streak means is the scheduler's).
	`ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN token_id INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN error_streak INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN last_error_at INTEGER;
	ALTER TABLE agents ADD COLUMN last_ok_at INTEGER;`,
	// 7: pull and merge requests. A build records the event that made it
	// and, for a request, its number, title, head and base, and whether
	// it comes from a fork; a fork's build may wait for an admin's
	// approval. A project says what to do with forks' and drafts'
	// requests.
	`ALTER TABLE builds ADD COLUMN event TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN pr_number INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE builds ADD COLUMN pr_title TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN head_branch TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN base_branch TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN fork INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE builds ADD COLUMN approval TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN approved_by TEXT NOT NULL DEFAULT '';
	ALTER TABLE builds ADD COLUMN forge_action TEXT NOT NULL DEFAULT '';
	CREATE INDEX builds_pull_request ON builds (project_id, pr_number) WHERE pr_number > 0;
	ALTER TABLE projects ADD COLUMN fork_pull_requests TEXT NOT NULL DEFAULT 'approve';
	ALTER TABLE projects ADD COLUMN draft_pull_requests TEXT NOT NULL DEFAULT 'build';`,
	// 8: agents report their limits (the most a job's sandbox may have), as
	// JSON: the planner checks pipelines against them.
	`ALTER TABLE agents ADD COLUMN max_resources TEXT NOT NULL DEFAULT '';`,
	// 9: forge statuses. A project's forge connection (its API token
	// sealed); the outbox of commit statuses, written in the transaction of
	// the change each reports and sent by internal/forgestatus. state is
	// Kiln's word; outcome: '' (to send), delivered, superseded (a newer
	// state of the same commit and context came first) or failed (given up).
	`CREATE TABLE project_forges (
		project_id INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
		forge TEXT NOT NULL,
		repo TEXT NOT NULL,
		api_url TEXT NOT NULL,
		token BLOB
	);
	CREATE TABLE forge_statuses (
		id INTEGER PRIMARY KEY,
		build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
		job_id INTEGER NOT NULL DEFAULT 0,
		project_id INTEGER NOT NULL,
		commit_sha TEXT NOT NULL,
		context TEXT NOT NULL,
		state TEXT NOT NULL,
		description TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		outcome TEXT NOT NULL DEFAULT '',
		attempts INTEGER NOT NULL DEFAULT 0,
		next_attempt_at INTEGER NOT NULL DEFAULT 0,
		last_error TEXT NOT NULL DEFAULT '',
		delivered_at INTEGER
	);
	CREATE INDEX forge_statuses_pending ON forge_statuses (project_id, commit_sha, context, id) WHERE outcome = '';
	CREATE INDEX forge_statuses_build ON forge_statuses (build_id, context);`,
	// 10: fair scheduling across projects. A job carries its project (set
	// by a trigger from its build on insert, so every insert path gets it)
	// and is indexed by (project, status, id): a claim finds each
	// project's oldest queued job and counts its running jobs without
	// scanning the queue, and (project, started_at) its last claim;
	// (build, status, attempt) lets a build's status be counted from the
	// index alone. project_scheduling holds a
	// project's own cap on running jobs (NULL: the server's default; 0:
	// none) and its weight.
	`ALTER TABLE jobs ADD COLUMN project_id INTEGER NOT NULL DEFAULT 0;
	UPDATE jobs SET project_id = COALESCE((SELECT b.project_id FROM builds b WHERE b.id = jobs.build_id), 0);
	CREATE TRIGGER jobs_project_id AFTER INSERT ON jobs FOR EACH ROW WHEN NEW.project_id = 0 BEGIN
		UPDATE jobs SET project_id = COALESCE((SELECT b.project_id FROM builds b WHERE b.id = NEW.build_id), 0) WHERE id = NEW.id;
	END;
	CREATE INDEX jobs_project_status ON jobs(project_id, status, id);
	CREATE INDEX jobs_build_status ON jobs(build_id, status, attempt);
	CREATE INDEX jobs_project_started ON jobs(project_id, started_at);
	CREATE TABLE project_scheduling (
		project_id INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
		max_running INTEGER,
		weight INTEGER NOT NULL DEFAULT 1
	);`,
	// 11: a project connected to GitHub through the GitHub App (its
	// installation) rather than a token.
	`ALTER TABLE project_forges ADD COLUMN installation_id INTEGER NOT NULL DEFAULT 0;`,
	// 12: GitHub check runs. The check run a (project, commit, context)
	// was last given on GitHub, and the build it was for, so a state
	// change updates it rather than creating another.
	`CREATE TABLE check_runs (
		project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		commit_sha TEXT NOT NULL,
		context TEXT NOT NULL,
		build_id INTEGER NOT NULL,
		check_run_id INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		PRIMARY KEY (project_id, commit_sha, context)
	);`,
	// 13: the cache service's entries, which it made itself before (IF NOT
	// EXISTS: a database of then has them).
	cacheEntries("INTEGER PRIMARY KEY AUTOINCREMENT"),
	// 14: leader leases. The replica that holds a lease (internal/leader)
	// runs the background work it names; token is bumped for each new
	// holder (fencing). Times are Unix milliseconds.
	leaderLeases,
	// 15: the audit log (audit.go): append only, never updated or
	// deleted through Kiln.
	auditEvents("INTEGER PRIMARY KEY AUTOINCREMENT"),
	// 16: when a finished build's log lines moved out of log_lines into the
	// log archive (logarchive.go); its logs are then read from there.
	`ALTER TABLE builds ADD COLUMN logs_archived_at INTEGER;`,
	// 17: the agent protocol version each agent registered with, for
	// `kiln agents` during a rolling upgrade.
	agentsProtocol,
	// 18: build artifacts (artifacts.go): one archive per job, the last
	// attempt's, its bytes in the server's blob store under blob.
	artifactsTable("INTEGER PRIMARY KEY AUTOINCREMENT"),
	// 19: single sign-on (users.go): the users who signed in, their
	// sessions and one-time CLI codes (hashed, as tokens are), and the
	// roles an admin bound to a user or group on one project (or on all:
	// project_id NULL).
	signOn("INTEGER PRIMARY KEY AUTOINCREMENT"),
	// 20: the dashboard's sign-in with an API token (tokensessions.go):
	// a browser's session of the token, ended by sign-out or revocation.
	tokenSessions("INTEGER PRIMARY KEY AUTOINCREMENT"),
	// 21: insights and status badges (insights.go).
	insightsColumns,
	// 22: how often each keyed cache entry was restored (the dashboard's
	// caches page), counted by the cache service's lookup.
	cacheEntryHits,
	// 23: a project's registry credentials (the password sealed, as
	// secrets are) and the digest of the image each job ran in.
	registries("BLOB"),
}

// registries is migration 23 (PostgreSQL's 13), with the dialect's
// binary type.
func registries(blob string) string {
	return `CREATE TABLE registries (
		project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		host TEXT NOT NULL,
		username TEXT NOT NULL,
		password ` + blob + ` NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (project_id, host)
	);
	ALTER TABLE jobs ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';`
}

// cacheEntryHits is migration 22 (PostgreSQL's 12), the same in both.
const cacheEntryHits = `ALTER TABLE cache_entries ADD COLUMN hits BIGINT NOT NULL DEFAULT 0;`

// tokenSessions is migration 20's table, with the dialect's id column.
// Times are Unix milliseconds.
func tokenSessions(id string) string {
	return `CREATE TABLE token_sessions (
		id ` + id + `,
		hash TEXT NOT NULL UNIQUE,
		token_id BIGINT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
		csrf TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);
	CREATE INDEX token_sessions_expiry ON token_sessions (expires_at);`
}

// insightsColumns is migration 21 (PostgreSQL's 11), the same in both
// dialects. A job records when its first attempt was claimed (its queue
// time ends there; started_at is the last attempt's), filled in from
// job_attempts for jobs of before; and what its attempt's cache restores
// gave it (the agent's cache reports: restores tried, hits, the bytes the
// hits gave). A project says whether its status badge is shown to anyone
// (public) or only to those who may view the project (private, the
// default). The indexes serve insights' windows (jobs and builds by when
// they finished, overall and per project; covering: a job's row holds
// its spec, kilobytes that reading a window's jobs from their rows would
// page through) and its flaky jobs (a project's builds of one commit).
const insightsColumns = `ALTER TABLE jobs ADD COLUMN first_started_at BIGINT;
	UPDATE jobs SET first_started_at = (SELECT a.started_at FROM job_attempts a WHERE a.job_id = jobs.id AND a.attempt = 1);
	ALTER TABLE jobs ADD COLUMN cache_restores BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE jobs ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE jobs ADD COLUMN cache_bytes_restored BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE projects ADD COLUMN badge TEXT NOT NULL DEFAULT 'private';
	CREATE INDEX jobs_finished ON jobs (finished_at, project_id, build_id, name, status, attempt, queued_at, first_started_at, started_at, cache_restores, cache_hits, cache_bytes_restored);
	CREATE INDEX jobs_project_finished ON jobs (project_id, finished_at, build_id, name, status, attempt, queued_at, first_started_at, started_at, cache_restores, cache_hits, cache_bytes_restored);
	CREATE INDEX builds_finished ON builds (finished_at, project_id, status);
	CREATE INDEX builds_project_finished ON builds (project_id, finished_at, status);
	CREATE INDEX builds_commit ON builds (project_id, commit_sha, id);`

// signOn is migration 19's tables, with the dialect's id column. Times
// are Unix milliseconds; user_groups is a JSON array.
func signOn(id string) string {
	return `CREATE TABLE users (
		id ` + id + `,
		subject TEXT NOT NULL UNIQUE,
		email TEXT NOT NULL DEFAULT '',
		name TEXT NOT NULL DEFAULT '',
		user_groups TEXT NOT NULL DEFAULT '[]',
		created_at BIGINT NOT NULL,
		last_login BIGINT NOT NULL
	);
	CREATE TABLE sessions (
		id ` + id + `,
		hash TEXT NOT NULL UNIQUE,
		user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		csrf TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);
	CREATE INDEX sessions_expiry ON sessions (expires_at);
	CREATE TABLE login_codes (
		hash TEXT PRIMARY KEY,
		user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		expires_at BIGINT NOT NULL
	);
	CREATE TABLE role_bindings (
		id ` + id + `,
		project_id BIGINT REFERENCES projects(id) ON DELETE CASCADE,
		kind TEXT NOT NULL,
		subject TEXT NOT NULL,
		role TEXT NOT NULL,
		created_at BIGINT NOT NULL
	);
	CREATE INDEX role_bindings_project ON role_bindings (project_id);`
}

// artifactsTable is the artifacts' table, with the dialect's id column.
// Times are Unix milliseconds.
func artifactsTable(id string) string {
	return `CREATE TABLE artifacts (
		id ` + id + `,
		build_id BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
		job_id BIGINT NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE CASCADE,
		attempt BIGINT NOT NULL,
		blob TEXT NOT NULL,
		size BIGINT NOT NULL,
		sha256 TEXT NOT NULL,
		files BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);
	CREATE INDEX artifacts_build ON artifacts (build_id);
	CREATE INDEX artifacts_expires ON artifacts (expires_at);`
}

// agentsProtocol is the same in both dialects.
const agentsProtocol = `ALTER TABLE agents ADD COLUMN protocol TEXT NOT NULL DEFAULT '';`

// auditEvents is the audit log's table, with the dialect's id column.
// Times are Unix milliseconds; detail is JSON.
func auditEvents(id string) string {
	return `CREATE TABLE audit_events (
		id ` + id + `,
		at BIGINT NOT NULL,
		actor_kind TEXT NOT NULL,
		actor_id TEXT NOT NULL,
		actor_name TEXT NOT NULL,
		action TEXT NOT NULL,
		target TEXT NOT NULL,
		detail TEXT NOT NULL DEFAULT '{}',
		remote_addr TEXT NOT NULL DEFAULT '',
		user_agent TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX audit_events_target ON audit_events (target, id);
	CREATE INDEX audit_events_at ON audit_events (at);`
}

// leaderLeases is the leader_leases table, the same in both dialects.
const leaderLeases = `CREATE TABLE leader_leases (
		name TEXT PRIMARY KEY,
		holder TEXT NOT NULL,
		token BIGINT NOT NULL,
		expires_at BIGINT NOT NULL
	);`

// cacheEntries is the cache service's table (internal/cache), with the
// dialect's id column. Times are Unix nanoseconds.
func cacheEntries(id string) string {
	return `CREATE TABLE IF NOT EXISTS cache_entries (
		id ` + id + `,
		project TEXT NOT NULL,
		scope TEXT NOT NULL,
		cache_key TEXT NOT NULL,
		version TEXT NOT NULL,
		state TEXT NOT NULL,
		size BIGINT NOT NULL DEFAULT 0,
		declared_size BIGINT NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		finalized_at BIGINT NOT NULL DEFAULT 0,
		last_used BIGINT NOT NULL
	);
	CREATE UNIQUE INDEX IF NOT EXISTS cache_entries_identity ON cache_entries (project, scope, cache_key, version);
	CREATE INDEX IF NOT EXISTS cache_entries_lru ON cache_entries (state, last_used);`
}

// pgMigrations are PostgreSQL's, versioned as SQLite's are (append only).
// PostgreSQL came with SQLite's migration 11: its first migration is the
// schema SQLite had then, in PostgreSQL's types (BIGINT for every integer,
// the Unix-millisecond times included; BYTEA for blobs; identity columns
// for ids). A job's project is set by its INSERT, not by SQLite's trigger.
// Every later change is one migration in each list.
var pgMigrations = []string{
	// 1: SQLite's 1 to 11.
	`
	CREATE TABLE projects (
			id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
			name TEXT NOT NULL UNIQUE,
			clone_url TEXT NOT NULL,
			default_branch TEXT NOT NULL,
			webhook_secret BYTEA,
			cancel_superseded BIGINT NOT NULL DEFAULT 0,
			next_build_number BIGINT NOT NULL DEFAULT 1,
			created_at BIGINT NOT NULL,
			fork_pull_requests TEXT NOT NULL DEFAULT 'approve',
			draft_pull_requests TEXT NOT NULL DEFAULT 'build');
	CREATE TABLE secrets (
			project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
			name TEXT NOT NULL,
			value BYTEA NOT NULL,
			PRIMARY KEY (project_id, name)
		);
	CREATE TABLE builds (
			id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
			project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
			number BIGINT NOT NULL,
			status TEXT NOT NULL,
			trigger TEXT NOT NULL,
			forge TEXT NOT NULL DEFAULT '',
			delivery_id TEXT NOT NULL DEFAULT '',
			ref TEXT NOT NULL DEFAULT '',
			branch TEXT NOT NULL DEFAULT '',
			commit_sha TEXT NOT NULL DEFAULT '',
			message TEXT NOT NULL DEFAULT '',
			author TEXT NOT NULL DEFAULT '',
			error TEXT NOT NULL DEFAULT '',
			cancel_requested BIGINT NOT NULL DEFAULT 0,
			planned BIGINT NOT NULL DEFAULT 0,
			plan_attempts BIGINT NOT NULL DEFAULT 0,
			plan_lease BIGINT,
			created_at BIGINT NOT NULL,
			started_at BIGINT,
			finished_at BIGINT,
			logs_pruned_at BIGINT,
			log_bytes BIGINT,
			event TEXT NOT NULL DEFAULT '',
			pr_number BIGINT NOT NULL DEFAULT 0,
			pr_title TEXT NOT NULL DEFAULT '',
			head_branch TEXT NOT NULL DEFAULT '',
			base_branch TEXT NOT NULL DEFAULT '',
			fork BIGINT NOT NULL DEFAULT 0,
			approval TEXT NOT NULL DEFAULT '',
			approved_by TEXT NOT NULL DEFAULT '',
			forge_action TEXT NOT NULL DEFAULT '',
			UNIQUE (project_id, number)
		);
	CREATE INDEX builds_status ON builds(status);
	CREATE INDEX builds_project_branch ON builds(project_id, branch);
	CREATE TABLE jobs (
			id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
			build_id BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
			name TEXT NOT NULL,
			status TEXT NOT NULL,
			spec BYTEA NOT NULL,
			labels TEXT NOT NULL DEFAULT '[]',
			timeout_seconds BIGINT NOT NULL,
			attempt BIGINT NOT NULL DEFAULT 0,
			max_attempts BIGINT NOT NULL,
			agent_id TEXT NOT NULL DEFAULT '',
			lease_expires BIGINT,
			cancel_requested BIGINT NOT NULL DEFAULT 0,
			exit_code BIGINT,
			error TEXT NOT NULL DEFAULT '',
			queued_at BIGINT NOT NULL,
			not_before BIGINT,
			started_at BIGINT,
			finished_at BIGINT,
			sticky BIGINT NOT NULL DEFAULT 0,
			pool TEXT NOT NULL DEFAULT '',
			lease_token BIGINT NOT NULL DEFAULT 0,
			project_id BIGINT NOT NULL DEFAULT 0);
	CREATE INDEX jobs_status ON jobs(status, id);
	CREATE INDEX jobs_build ON jobs(build_id);
	CREATE TABLE job_attempts (
			job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
			attempt BIGINT NOT NULL,
			agent_id TEXT NOT NULL,
			status TEXT NOT NULL,
			error TEXT NOT NULL DEFAULT '',
			started_at BIGINT NOT NULL,
			finished_at BIGINT,
			PRIMARY KEY (job_id, attempt)
		);
	CREATE TABLE steps (
			job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
			attempt BIGINT NOT NULL,
			idx BIGINT NOT NULL,
			name TEXT NOT NULL,
			status TEXT NOT NULL,
			exit_code BIGINT,
			started_at BIGINT,
			finished_at BIGINT,
			PRIMARY KEY (job_id, attempt, idx)
		);
	CREATE TABLE log_lines (
			job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
			attempt BIGINT NOT NULL,
			seq BIGINT NOT NULL,
			step BIGINT NOT NULL,
			ts BIGINT NOT NULL,
			text TEXT NOT NULL,
			PRIMARY KEY (job_id, attempt, seq)
		);
	CREATE TABLE agents (
			id TEXT PRIMARY KEY,
			name TEXT NOT NULL,
			labels TEXT NOT NULL DEFAULT '[]',
			capacity BIGINT NOT NULL,
			version TEXT NOT NULL DEFAULT '',
			first_seen BIGINT NOT NULL,
			last_seen BIGINT NOT NULL,
			token_id BIGINT NOT NULL DEFAULT 0,
			error_streak BIGINT NOT NULL DEFAULT 0,
			last_error_at BIGINT,
			last_ok_at BIGINT,
			max_resources TEXT NOT NULL DEFAULT '');
	CREATE TABLE tokens (
			id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
			name TEXT NOT NULL,
			kind TEXT NOT NULL,
			hash TEXT NOT NULL UNIQUE,
			revoked BIGINT NOT NULL DEFAULT 0,
			created_at BIGINT NOT NULL,
			last_used BIGINT
		);
	CREATE TABLE deliveries (
			id TEXT NOT NULL,
			forge TEXT NOT NULL,
			project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
			event TEXT NOT NULL,
			result TEXT NOT NULL,
			build_id BIGINT,
			received_at BIGINT NOT NULL,
			PRIMARY KEY (forge, project_id, id)
		);
	CREATE TABLE agent_warm (
			agent_id TEXT NOT NULL,
			project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
			PRIMARY KEY (agent_id, project_id)
		);
	CREATE INDEX jobs_pool_status ON jobs(pool, status);
	CREATE TABLE pools (
			name TEXT PRIMARY KEY,
			labels TEXT NOT NULL,
			image TEXT NOT NULL,
			cpus DOUBLE PRECISION NOT NULL DEFAULT 0,
			memory_bytes BIGINT NOT NULL DEFAULT 0,
			pids BIGINT NOT NULL DEFAULT 0,
			max_runners BIGINT NOT NULL,
			warm BIGINT NOT NULL DEFAULT 0,
			owner TEXT NOT NULL,
			repo TEXT NOT NULL DEFAULT '',
			runner_group_id BIGINT NOT NULL DEFAULT 1,
			installation_id BIGINT NOT NULL DEFAULT 0,
			command TEXT NOT NULL,
			agent_labels TEXT NOT NULL DEFAULT '[]',
			timeout_seconds BIGINT NOT NULL,
			created_at BIGINT NOT NULL
		);
	CREATE TABLE actions_jobs (
			gh_job_id BIGINT PRIMARY KEY,
			run_id BIGINT NOT NULL,
			run_attempt BIGINT NOT NULL DEFAULT 0,
			owner TEXT NOT NULL,
			repo TEXT NOT NULL,
			name TEXT NOT NULL DEFAULT '',
			workflow TEXT NOT NULL DEFAULT '',
			labels TEXT NOT NULL DEFAULT '[]',
			status TEXT NOT NULL,
			conclusion TEXT NOT NULL DEFAULT '',
			pool TEXT NOT NULL DEFAULT '',
			installation_id BIGINT NOT NULL DEFAULT 0,
			html_url TEXT NOT NULL DEFAULT '',
			head_branch TEXT NOT NULL DEFAULT '',
			head_sha TEXT NOT NULL DEFAULT '',
			runner_name TEXT NOT NULL DEFAULT '',
			job_id BIGINT REFERENCES jobs(id) ON DELETE SET NULL,
			launches BIGINT NOT NULL DEFAULT 0,
			first_seen BIGINT NOT NULL,
			updated_at BIGINT NOT NULL,
			source TEXT NOT NULL,
			warm_until BIGINT);
	CREATE INDEX actions_jobs_status ON actions_jobs(status, owner, repo);
	CREATE UNIQUE INDEX actions_jobs_runner_job ON actions_jobs(job_id) WHERE job_id IS NOT NULL;
	CREATE TABLE actions_runners (
			job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
			pool TEXT NOT NULL,
			gh_job_id BIGINT NOT NULL,
			name TEXT NOT NULL UNIQUE,
			owner TEXT NOT NULL,
			repo TEXT NOT NULL DEFAULT '',
			installation_id BIGINT NOT NULL DEFAULT 0,
			runner_id BIGINT NOT NULL DEFAULT 0,
			gh_status TEXT NOT NULL DEFAULT '',
			online_at BIGINT,
			idle_since BIGINT,
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL
		);
	CREATE INDEX actions_runners_gh_job ON actions_runners(gh_job_id);
	CREATE TABLE actions_repos (
			owner TEXT NOT NULL,
			repo TEXT NOT NULL,
			installation_id BIGINT NOT NULL DEFAULT 0,
			last_seen BIGINT NOT NULL,
			PRIMARY KEY (owner, repo)
		);
	CREATE TABLE actions_deliveries (
			id TEXT PRIMARY KEY,
			action TEXT NOT NULL,
			gh_job_id BIGINT NOT NULL,
			result TEXT NOT NULL,
			received_at BIGINT NOT NULL
		);
	CREATE INDEX actions_runners_pool ON actions_runners(pool, gh_job_id);
	CREATE TABLE health (id BIGINT PRIMARY KEY, checked_at BIGINT NOT NULL);
	CREATE INDEX builds_logs_kept ON builds(project_id, finished_at) WHERE logs_pruned_at IS NULL;
	CREATE TABLE project_log_retention (
			project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
			days BIGINT,
			max_bytes BIGINT
		);
	CREATE INDEX builds_pull_request ON builds (project_id, pr_number) WHERE pr_number > 0;
	CREATE TABLE project_forges (
			project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
			forge TEXT NOT NULL,
			repo TEXT NOT NULL,
			api_url TEXT NOT NULL,
			token BYTEA,
			installation_id BIGINT NOT NULL DEFAULT 0);
	CREATE TABLE forge_statuses (
			id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
			build_id BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
			job_id BIGINT NOT NULL DEFAULT 0,
			project_id BIGINT NOT NULL,
			commit_sha TEXT NOT NULL,
			context TEXT NOT NULL,
			state TEXT NOT NULL,
			description TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			outcome TEXT NOT NULL DEFAULT '',
			attempts BIGINT NOT NULL DEFAULT 0,
			next_attempt_at BIGINT NOT NULL DEFAULT 0,
			last_error TEXT NOT NULL DEFAULT '',
			delivered_at BIGINT
		);
	CREATE INDEX forge_statuses_pending ON forge_statuses (project_id, commit_sha, context, id) WHERE outcome = '';
	CREATE INDEX forge_statuses_build ON forge_statuses (build_id, context);
	CREATE INDEX jobs_project_status ON jobs(project_id, status, id);
	CREATE INDEX jobs_build_status ON jobs(build_id, status, attempt);
	CREATE INDEX jobs_project_started ON jobs(project_id, started_at);
	CREATE TABLE project_scheduling (
			project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
			max_running BIGINT,
			weight BIGINT NOT NULL DEFAULT 1
		);
	`,
	// 2: SQLite's 12.
	`CREATE TABLE check_runs (
		project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
		commit_sha TEXT NOT NULL,
		context TEXT NOT NULL,
		build_id BIGINT NOT NULL,
		check_run_id BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (project_id, commit_sha, context)
	);`,
	// 3: SQLite's 13.
	cacheEntries("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
	// 4: SQLite's 14.
	leaderLeases,
	// 5: SQLite's 15.
	auditEvents("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
	// 6: SQLite's 16.
	`ALTER TABLE builds ADD COLUMN logs_archived_at BIGINT;`,
	// 7: SQLite's 17.
	agentsProtocol,
	// 8: SQLite's 18.
	artifactsTable("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
	// 9: SQLite's 19.
	signOn("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
	// 10: SQLite's 20.
	tokenSessions("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
	// 11: SQLite's 21.
	insightsColumns,
	// 12: SQLite's 22.
	cacheEntryHits,
	// 13: SQLite's 23.
	registries("BYTEA"),
}

// migrations is the dialect's list.
func (d dialect) migrations() []string {
	if d == dialectPostgres {
		return pgMigrations
	}
	return migrations
}

func (s *Store) migrate(ctx context.Context) error {
	// In the transaction (on PostgreSQL, under the write lock): replicas
	// starting together migrate one after the other.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version); err != nil {
		return fmt.Errorf("migrate: read version: %w", err)
	}
	list := s.db.d.migrations()
	if version > len(list) {
		return fmt.Errorf("migrate: %s database schema version %d is newer than this kiln (%d): upgrade kiln", s.db.d, version, len(list))
	}
	for i := version; i < len(list); i++ {
		if _, err := tx.ExecContext(ctx, list[i]); err != nil {
			return fmt.Errorf("migrate: migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, i+1); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	return tx.Commit()
}
